"""TLS as KumoMTA does it, through the live driver on loopback: docs/KUMOMTA.md
rows 7a-7d and the TLS keys of row 11 (the engine side: tests/test_kumomta_tls.py).

Real peers only: aiosmtpd sinks (their STARTTLS verb replaced where a test
needs a server whose TLS is broken), trustme certificates, the dnslib test
server with the AD flag per name.  Each test cites the KumoMTA source it
follows (KumoCorp/kumomta, ``crates/``).
"""

from __future__ import annotations

import asyncio
import pathlib
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trustme

from engine.live.dane import tlsa_association
from tests.support.certs import issue, self_signed
from tests.support.dns_server import DnsServer
from tests.support.live_harness import Live, path_policy, zone_for
from tests.support.smtp_servers import SinkServer, TlsMaterial

pytestmark = pytest.mark.timeout(30)
DOMAIN, HOST = "example.com", "mx1.example.com"
# A TLS record: alert, TLS 1.2, length 2, fatal (2) handshake_failure (40)
ALERT = b"\x15\x03\x03\x00\x02\x02\x28"

StartTls = Callable[[Any, str], Awaitable[None]]


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(zone_for(DOMAIN, HOST)) as server:
        yield server


class BrokenTlsSink(SinkServer):
    """A sink whose STARTTLS is replaced by `starttls(smtp, arg)`; counts the calls."""

    def __init__(self, starttls: StartTls, **kw: Any) -> None:
        kw.setdefault("hostname", HOST)
        kw.setdefault("tls", "self-signed")  # so STARTTLS is advertised
        super().__init__(**kw)
        self.starttls = starttls
        self.starttls_calls = 0

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> Any:
        smtp = super()._protocol(loop)

        async def verb(arg: str) -> None:
            self.starttls_calls += 1
            await self.starttls(smtp, arg)

        smtp._smtp_methods["STARTTLS"] = verb
        return smtp


async def alert_and_stay_clear(smtp: Any, arg: str) -> None:
    """220, read the ClientHello, answer a fatal alert, carry on in clear SMTP: a
    server whose TLS is broken but whose connection is not."""
    await smtp.push("220 2.0.0 Ready to start TLS")
    header = await smtp._reader.readexactly(5)
    await smtp._reader.readexactly(int.from_bytes(header[3:5], "big"))
    smtp.transport.write(ALERT)


async def alert_and_close(smtp: Any, arg: str) -> None:
    """220, read the ClientHello, answer a fatal alert and hang up."""
    await alert_and_stay_clear(smtp, arg)
    smtp.transport.close()


async def refuse_454(smtp: Any, arg: str) -> None:
    await smtp.push("454 4.7.0 TLS not available due to temporary reason")


async def accept_then_stall(smtp: Any, arg: str) -> None:
    await smtp.push("220 2.0.0 Ready to start TLS")
    await asyncio.sleep(20)


async def run(live_keys: dict[str, Any], sink: SinkServer, dns: DnsServer, *,
              messages: int = 1, cafile: str | None = None,
              until: Callable[[Live], bool] | None = None) -> Live:
    """Submit `messages` one after another (each once the previous has an outcome)."""
    async with Live(path_policy(sink.port, **live_keys), dns.port, tls_cafile=cafile) as live:
        for n in range(1, messages + 1):
            live.submit((f"a{n}@{DOMAIN}",))
            await live.wait_for(
                lambda n=n: len([r for r in live.records if r["type"] != "Reception"]) >= n,
                what=f"outcome {n}")
        if until is not None:
            await live.wait_for(lambda: until(live), what="the condition")
        return live


def outcomes(live: Live) -> list[dict[str, Any]]:
    return [r for r in live.records if r["type"] != "Reception"]


# -- 7a --------------------------------------------------------------------------------


def test_failed_opportunistic_insecure_handshake_goes_on_in_clear_on_the_same_socket(
    dns: DnsServer,
) -> None:
    """crates/rfc5321/src/client.rs ``starttls`` hands the clear stream back on a
    failed handshake; crates/kumod/src/smtp_dispatcher.rs re-EHLOs and sends in
    clear.  One connection, the message in clear."""
    async def scenario() -> None:
        async with BrokenTlsSink(alert_and_stay_clear) as sink:
            live = await run({"enable_tls": "OpportunisticInsecure"}, sink, dns)
            (rec,) = outcomes(live)
            assert rec["type"] == "Delivery", rec["response"]
            assert "tls_cipher" not in rec
            assert sink.connections == 1 and sink.starttls_calls == 1
            assert [m.tls for m in sink.messages] == [False]

    asyncio.run(scenario())


def test_with_the_reconnect_flag_the_failed_handshake_reconnects_in_clear(
    dns: DnsServer,
) -> None:
    """smtp_dispatcher.rs: opportunistic_tls_reconnect_on_failed_handshake pushes
    the address back; the new connection skips STARTTLS (broken TLS, 15 min)."""
    async def scenario() -> None:
        async with BrokenTlsSink(alert_and_stay_clear) as sink:
            live = await run({"enable_tls": "OpportunisticInsecure",
                              "opportunistic_tls_reconnect_on_failed_handshake": True},
                             sink, dns)
            assert outcomes(live)[0]["type"] == "Delivery"
            assert sink.connections == 2 and sink.starttls_calls == 1
            assert [m.tls for m in sink.messages] == [False]

    asyncio.run(scenario())


def test_a_peer_that_hangs_up_after_the_failed_handshake_fails_the_host_at_once(
    dns: DnsServer,
) -> None:
    """No socket left for the clear EHLO KumoMTA would send: the host fails (and
    nothing waits for an EHLO reply that cannot come)."""
    async def scenario() -> None:
        async with BrokenTlsSink(alert_and_close) as sink:
            live = await run({"enable_tls": "OpportunisticInsecure"}, sink, dns)
            (rec,) = outcomes(live)
            assert rec["type"] == "TransientFailure"
            assert "mx1.example.com" in rec["response"]["content"]
            assert sink.connections == 1 and sink.messages == []

    asyncio.run(scenario())


# -- 7b --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["Opportunistic", "OpportunisticInsecure"])
def test_starttls_refused_fails_the_host_in_opportunistic_modes(dns: DnsServer,
                                                                 mode: str) -> None:
    """rfc5321/src/client.rs: a reply other than 220 is ``ClientError::Rejected``
    and the connection attempt fails: nothing is sent in clear."""
    async def scenario() -> None:
        async with BrokenTlsSink(refuse_454) as sink:
            live = await run({"enable_tls": mode}, sink, dns)
            (rec,) = outcomes(live)
            assert rec["type"] == "TransientFailure"
            assert "refused STARTTLS: 454 4.7.0" in rec["response"]["content"]
            assert sink.messages == [] and b"MAIL FROM" not in sink.plaintext

    asyncio.run(scenario())


# -- 7c --------------------------------------------------------------------------------


def test_a_stalled_handshake_times_out_on_its_own_starttls_timeout(dns: DnsServer) -> None:
    """rfc5321/src/client.rs: ``timeout(starttls_timeout, handshake)`` after the
    220 was read under its own starttls_timeout; elapsed fails the host even in
    OpportunisticInsecure (no clear fallback mid-handshake)."""
    async def scenario() -> None:
        async with BrokenTlsSink(accept_then_stall) as sink:
            live = await run({"enable_tls": "OpportunisticInsecure", "starttls_timeout": "1s"},
                             sink, dns)
            (rec,) = outcomes(live)
            assert rec["type"] == "TransientFailure"
            assert "TLS handshake with mx1.example.com" in rec["response"]["content"]
            assert "timed out after 1s" in rec["response"]["content"]
            assert sink.messages == [] and sink.connections == 1

    asyncio.run(scenario())


# -- remember_broken_tls ---------------------------------------------------------------


def test_remember_broken_tls_skips_starttls_on_the_next_connection(dns: DnsServer) -> None:
    """smtp_dispatcher.rs ``remember_broken_tls``: an Opportunistic handshake
    fails (a self-signed certificate: the host fails), the site is remembered
    broken, and the next message's connection skips STARTTLS."""
    async def scenario() -> None:
        async with SinkServer(hostname=HOST, tls="self-signed") as sink:
            live = await run({"enable_tls": "Opportunistic", "remember_broken_tls": "1h",
                              "max_deliveries_per_connection": 1}, sink, dns, messages=2)
            first, second = outcomes(live)
            assert first["type"] == "TransientFailure"
            assert "certificate verification failed" in first["response"]["content"]
            assert second["type"] == "Delivery" and "tls_cipher" not in second
            assert [m.tls for m in sink.messages] == [False]
            assert sink.plaintext.count(b"STARTTLS") == 1

    asyncio.run(scenario())


# -- tls_certificate / tls_private_key ---------------------------------------------------


@pytest.mark.parametrize("present", [True, False])
def test_client_certificate_is_presented(dns: DnsServer, ca: trustme.CA, cafile: str,
                                         tmp_path: pathlib.Path, present: bool) -> None:
    """kumod/src/smtp_dispatcher.rs resolves tls_certificate/tls_private_key
    (keysources) into TlsOptions; kumo-tls-helper/src/lib.rs presents them.  The
    sink requires a client certificate from the test CA: it delivers with one,
    the handshake fails without."""
    server = issue(ca, tmp_path, HOST).server_context()
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    client = ca.issue_cert("client.example.org")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    keys: dict[str, Any] = {"enable_tls": "Required"}
    if present:
        keys["tls_certificate"] = str(tmp_path / "client.pem")
        keys["tls_private_key"] = {"key_data": client.private_key_pem.bytes().decode()}

    async def scenario() -> None:
        async with SinkServer(hostname=HOST, tls=TlsMaterial(server, ca)) as sink:
            live = await run(keys, sink, dns, cafile=cafile)
            (rec,) = outcomes(live)
            if present:
                assert rec["type"] == "Delivery", rec["response"]
                assert [m.tls for m in sink.messages] == [True]
            else:
                # TLS 1.3: the server checks the client's certificate after the client
                # finished, so the refusal shows as the close during the next EHLO
                assert rec["type"] == "TransientFailure"
                assert "STARTTLS" in rec["response"]["content"]
                assert sink.messages == []

    asyncio.run(scenario())


# -- 7d --------------------------------------------------------------------------------


def _tlsa_name(port: int) -> str:
    return f"_{port}._tcp.{HOST}"


def test_tlsa_servfail_defers_instead_of_downgrading(dns: DnsServer, ca: trustme.CA,
                                                     cafile: str,
                                                     tmp_path: pathlib.Path) -> None:
    """smtp_dispatcher.rs ``DaneStatus::TempFail`` bails ("Defer instead"): the
    sink's PKIX-valid certificate would have delivered had egress downgraded."""
    async def scenario() -> None:
        tls = TlsMaterial(issue(ca, tmp_path, HOST).server_context(), ca)
        async with SinkServer(hostname=HOST, tls=tls) as sink:
            dns.secure.update({DOMAIN, HOST})
            dns.faults[(_tlsa_name(sink.port), "TLSA")] = "SERVFAIL"
            live = await run({"enable_tls": "Opportunistic", "enable_dane": True},
                             sink, dns, cafile=cafile)
            (rec,) = outcomes(live)
            assert rec["type"] == "TransientFailure"
            assert (f"DANE TLSA lookup for {HOST} could not be securely resolved: SERVFAIL"
                    in rec["response"]["content"])
            assert sink.messages == [] and b"STARTTLS" not in sink.plaintext

    asyncio.run(scenario())


@pytest.mark.parametrize("starttls", [True, False])
def test_unusable_tlsa_requires_unauthenticated_starttls(dns: DnsServer,
                                                         tmp_path: pathlib.Path,
                                                         starttls: bool) -> None:
    """smtp_dispatcher.rs ``DaneStatus::Unusable`` -> RequiredInsecure: a
    self-signed certificate delivers over TLS (plain Opportunistic would refuse
    it), and a host without STARTTLS fails."""
    cert = self_signed(tmp_path, HOST)

    async def scenario() -> None:
        tls = TlsMaterial(cert.server_context()) if starttls else None
        async with SinkServer(hostname=HOST, tls=tls) as sink:
            pkix_ee = (1, 1, 1, tlsa_association(cert.chain_der[0], 1, 1))
            dns.zone[_tlsa_name(sink.port)] = {"TLSA": [pkix_ee]}
            dns.secure.add("*")
            live = await run({"enable_tls": "Opportunistic", "enable_dane": True}, sink, dns)
            (rec,) = outcomes(live)
            if starttls:
                assert rec["type"] == "Delivery", rec["response"]
                assert [m.tls for m in sink.messages] == [True]
            else:
                assert rec["type"] == "TransientFailure"
                assert ("enable_tls is RequiredInsecure but mx1.example.com"
                        in rec["response"]["content"])

    asyncio.run(scenario())


def test_dane_needs_dnssec_on_the_mx_and_address_answers(dns: DnsServer,
                                                         tmp_path: pathlib.Path) -> None:
    """smtp_dispatcher.rs ``dane_eligible``: MX and address answers secure, else
    "insecure_chain": no TLSA lookup, normal TLS rules (Opportunistic refuses
    the self-signed certificate the TLSA record would have authenticated)."""
    cert = self_signed(tmp_path, HOST)

    async def scenario() -> None:
        async with SinkServer(hostname=HOST, tls=TlsMaterial(cert.server_context())) as sink:
            ee = (3, 1, 1, tlsa_association(cert.chain_der[0], 1, 1))
            dns.zone[_tlsa_name(sink.port)] = {"TLSA": [ee]}
            dns.secure.update({HOST, _tlsa_name(sink.port)})  # the MX answer lacks AD
            live = await run({"enable_tls": "Opportunistic", "enable_dane": True}, sink, dns)
            (rec,) = outcomes(live)
            assert rec["type"] == "TransientFailure"
            assert "certificate verification failed" in rec["response"]["content"]
        assert dns.count(rtype="TLSA") == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(("cert", "key", "why"), [
    ("mine", "other", "tls_private_key does not match tls_certificate"),
    ("missing", "mine", "client certificate: keysource file"),
    ("garbage", "mine", "tls_certificate holds no PEM certificate"),
    ("mine", "garbage", "tls_private_key holds no PEM private key"),
])
def test_a_bad_client_certificate_is_a_handshake_error_naming_the_key(
    ca: trustme.CA, tmp_path: pathlib.Path, cert: str, key: str, why: str
) -> None:
    from OpenSSL import SSL

    from engine.keysource import KeySource
    from engine.live.client_cert import use_client_certificate
    from engine.live.tls_info import TlsHandshakeError

    mine, other = ca.issue_cert("a.example.org"), ca.issue_cert("b.example.org")
    (tmp_path / "garbage.pem").write_text("not PEM\n")
    mine.cert_chain_pems[0].write_to_path(str(tmp_path / "mine.pem"))
    mine.private_key_pem.write_to_path(str(tmp_path / "mine.key"))
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    files = {"mine": "mine", "other": "other", "garbage": "garbage", "missing": "missing"}

    def source(stem: str, ext: str) -> KeySource:
        name = f"{files[stem]}.{ext}" if stem not in ("garbage",) else "garbage.pem"
        return KeySource.coerce(str(tmp_path / name), key="k")

    with pytest.raises(TlsHandshakeError, match=why) as err:
        use_client_certificate(SSL.Context(SSL.TLS_CLIENT_METHOD), source(cert, "pem"),
                               source(key, "key"))
    assert "PRIVATE KEY" not in str(err.value)
