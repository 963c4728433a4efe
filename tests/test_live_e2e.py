"""TLS and AUTH end to end: Engine + LiveDriver against aiosmtpd sinks on loopback.

The five enable_tls modes against a sink with a trustme certificate (its CA
given to the driver), a self-signed one, and one that offers no STARTTLS,
as the reference page describes them; the OpenSSL stack once; AUTH PLAIN
with a keysource password over TLS, refused in clear text unless
allow_smtp_auth_plain_without_tls, with proof from the sink's raw bytes that
the credential never reached a plaintext server.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from tests.support.dns_server import DnsServer
from tests.support.live_harness import Live, path_policy, zone_for
from tests.support.smtp_servers import SinkServer

pytestmark = pytest.mark.timeout(30)
HOST = "mx1.example.com"

OK, FAIL = "Delivery", "TransientFailure"
# (server certificate, enable_tls) -> (record type, TLS used)
MATRIX = {
    ("trustme", "Opportunistic"): (OK, True),
    ("trustme", "OpportunisticInsecure"): (OK, True),
    ("trustme", "Required"): (OK, True),
    ("trustme", "RequiredInsecure"): (OK, True),
    ("trustme", "Disabled"): (OK, False),
    ("self-signed", "Opportunistic"): (FAIL, False),  # no fallback to clear on that host
    ("self-signed", "OpportunisticInsecure"): (OK, True),
    ("self-signed", "Required"): (FAIL, False),
    ("self-signed", "RequiredInsecure"): (OK, True),
    ("self-signed", "Disabled"): (OK, False),
    ("none", "Opportunistic"): (OK, False),
    ("none", "OpportunisticInsecure"): (OK, False),
    ("none", "Required"): (FAIL, False),
    ("none", "RequiredInsecure"): (FAIL, False),
    ("none", "Disabled"): (OK, False),
}


@pytest.fixture
def dns() -> Any:
    with DnsServer(zone_for(host=HOST)) as server:
        yield server


def _cafile(sink: SinkServer, tmp: pathlib.Path) -> str | None:
    if sink.tls is None or sink.tls.ca is None:
        return None
    path = tmp / "ca.pem"
    sink.tls.ca.cert_pem.write_to_path(str(path))
    return str(path)


async def _deliver(dns_port: int, sink: SinkServer, tmp: pathlib.Path,
                   **keys: Any) -> dict[str, Any]:
    async with Live(path_policy(sink.port, **keys), dns_port,
                    tls_cafile=_cafile(sink, tmp)) as live:
        live.submit(("a@example.com",))
        await live.wait_for(lambda: len(live.records) >= 2, what="an outcome")
        return live.records[1]


@pytest.mark.parametrize(("cert", "mode"), list(MATRIX), ids=lambda v: str(v))
def test_enable_tls_modes(dns: DnsServer, tmp_path: pathlib.Path, cert: str, mode: str) -> None:
    kind, tls = MATRIX[(cert, mode)]

    async def scenario() -> None:
        server_tls: Any = None if cert == "none" else cert
        async with SinkServer(hostname=HOST, tls=server_tls) as sink:
            rec = await _deliver(dns.port, sink, tmp_path, enable_tls=mode)
            assert rec["type"] == kind, rec["response"]
            if kind == OK:
                (got,) = sink.messages
                assert got.tls is tls
                assert rec["response"]["code"] == 250
            else:
                assert sink.messages == []
                assert rec["response"]["code"] == 400  # every host failed (KumoMTA's internal)
            if tls:
                assert rec["tls_protocol_version"] in ("TLSv1.2", "TLSv1.3")
                assert rec["tls_cipher"]
                assert f"CN={HOST}" in rec["tls_peer_subject_name"] or cert == "trustme"
            else:
                assert "tls_cipher" not in rec
            if (cert, kind) == ("self-signed", FAIL):
                assert "certificate verification failed" in rec["response"]["content"]
            if (cert, kind) == ("none", FAIL):
                assert "did not advertise STARTTLS" in rec["response"]["content"]

    asyncio.run(scenario())


def test_openssl_stack_applies_cipher_suites(dns: DnsServer, tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        async with SinkServer(hostname=HOST, tls="trustme") as sink:
            rec = await _deliver(dns.port, sink, tmp_path, enable_tls="Required",
                                 tls_prefer_openssl=True,
                                 openssl_cipher_suites="TLS_CHACHA20_POLY1305_SHA256")
            assert rec["type"] == OK
            assert rec["tls_protocol_version"] == "TLSv1.3"
            assert rec["tls_cipher"] == "TLS_CHACHA20_POLY1305_SHA256"
            assert sink.messages[0].tls is True

    asyncio.run(scenario())


def _auth_keys(tmp: pathlib.Path, **more: Any) -> dict[str, Any]:
    secret = tmp / "password"
    secret.write_text("s3cret-pw\n")
    return {"smtp_auth_plain_username": "egress",
            "smtp_auth_plain_password": str(secret), **more}


def test_auth_plain_over_tls_with_a_keysource_password(dns: DnsServer,
                                                        tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        async with SinkServer(hostname=HOST, tls="trustme",
                              auth=("egress", "s3cret-pw")) as sink:
            rec = await _deliver(dns.port, sink, tmp_path,
                                 **_auth_keys(tmp_path, enable_tls="Required"))
            assert rec["type"] == OK, rec["response"]
            assert sink.auth_attempts == [("egress", True)]
            assert sink.messages[0].login == "egress"
            assert sink.messages[0].tls is True
            assert sink.auth_seen_in_plaintext is False

    asyncio.run(scenario())


def test_auth_refused_without_tls_and_the_credential_never_sent(dns: DnsServer,
                                                                tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        async with SinkServer(hostname=HOST, auth=("egress", "s3cret-pw"),
                              auth_require_tls=False) as sink:
            rec = await _deliver(dns.port, sink, tmp_path,
                                 **_auth_keys(tmp_path, enable_tls="Opportunistic"))
            assert rec["type"] == FAIL
            assert "allow_smtp_auth_plain_without_tls is false" in rec["response"]["content"]
            assert sink.messages == []
            assert sink.auth_attempts == []
            assert sink.plaintext.startswith(b"EHLO ")  # it did see our clear-text bytes
            assert b"AUTH" not in sink.plaintext
            assert b"s3cret-pw" not in sink.plaintext
            assert sink.auth_seen_in_plaintext is False

    asyncio.run(scenario())


def test_auth_in_clear_when_allowed(dns: DnsServer, tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        async with SinkServer(hostname=HOST, auth=("egress", "s3cret-pw"),
                              auth_require_tls=False) as sink:
            rec = await _deliver(dns.port, sink, tmp_path, **_auth_keys(
                tmp_path, enable_tls="Disabled", allow_smtp_auth_plain_without_tls=True))
            assert rec["type"] == OK, rec["response"]
            assert sink.auth_attempts == [("egress", True)]
            assert sink.auth_seen_in_plaintext is True  # the check above can see it

    asyncio.run(scenario())
