"""MTA-STS and DANE end to end through the live `Service`, real peers on loopback.

The dnslib test server answers MX, A, ``_mta-sts`` TXT and TLSA (with or
without the AD flag); a local HTTPS server with a trustme certificate serves
the MTA-STS policy; aiosmtpd sinks present a trustme certificate, a
self-signed one, or no STARTTLS at all.  The service builds its own
`MtaStsFetcher` on the same resolver and CA file (only the policy port is
moved off 443), so these tests cover the wiring as `egress deliver` runs it.

Each test checks the record the engine wrote and what the sink saw, and, where
a mode must be the reason for the outcome, sets things up so that only that
mode explains it (e.g. a self-signed certificate delivers only because DANE
authenticated it).
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from engine.live.dane import tlsa_association
from engine.live.dns import LiveResolver
from engine.live.service import Service
from tests.support.certs import ServerCert, issue, self_signed
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message, path_policy
from tests.support.policy_server import PolicyServer, policy_text
from tests.support.smtp_servers import SinkServer, TlsMaterial

pytestmark = pytest.mark.timeout(30)

DOMAIN = "example.com"
MX1, MX2 = "mx1.example.com", "mx2.example.com"


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    zone: dict[str, dict[str, Any]] = {
        DOMAIN: {"MX": [(10, MX1)]},
        MX1: {"A": ["127.0.0.1"]},
        MX2: {"A": ["127.0.0.1"]},
        f"_mta-sts.{DOMAIN}": {"TXT": ["v=STSv1; id=20260101"]},
        f"mta-sts.{DOMAIN}": {"A": ["127.0.0.1"]},
    }
    with DnsServer(zone) as server:
        yield server


def material(cert: ServerCert) -> TlsMaterial:
    return TlsMaterial(cert.server_context())


def tlsa(cert_der: bytes, usage: int = 3, selector: int = 1, mtype: int = 1
         ) -> tuple[int, int, int, bytes]:
    """A TLSA rdata tuple for the test DNS server."""
    return (usage, selector, mtype, tlsa_association(cert_der, selector, mtype))


class Run:
    """One message through a `Service`; what the engine logged and the sinks saw."""

    def __init__(self, records: list[dict[str, Any]], https: PolicyServer) -> None:
        self.records = records
        self.https = https

    @property
    def outcome(self) -> dict[str, Any]:
        (rec,) = [r for r in self.records if r["type"] != "Reception"][:1]
        return rec


async def deliver_one(
    dns: DnsServer, port: int, tmp: pathlib.Path, ca: trustme.CA, cafile: str | None, *,
    sts: str = policy_text("enforce", MX1), **keys: Any,
) -> Run:
    """Run a Service delivering one message to `DOMAIN` on smtp_port `port`, with an
    MTA-STS policy server serving `sts`; return once the message has an outcome."""
    keys.setdefault("enable_tls", "Opportunistic")
    keys.setdefault("enable_mta_sts", True)
    https_cert = issue(ca, tmp, f"mta-sts.{DOMAIN}", stem="mta-sts")
    async with PolicyServer(https_cert.server_context(), sts) as https:
        svc = Service(path_policy(port, **keys), tmp / "spool", listen=None,
                      resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0),
                      tls_cafile=cafile, mta_sts_port=https.port)
        records: list[dict[str, Any]] = []
        async with svc:
            assert svc.driver is not None
            svc.driver.records = records.append
            await svc.submit("s@sender.test", [f"a@{DOMAIN}"], message(1))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not any(r["type"] != "Reception" for r in records):
                assert loop.time() < deadline, f"no outcome; records {records}"
                await asyncio.sleep(0.01)
        return Run(records, https)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- MTA-STS -------------------------------------------------------------------------


def test_enforce_with_matching_mx_delivers_over_verified_tls(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    async def scenario() -> None:
        async with SinkServer(hostname=MX1, tls=material(issue(ca, tmp_path, MX1))) as sink:
            got = await deliver_one(dns, sink.port, tmp_path, ca, cafile)
            rec = got.outcome
            assert rec["type"] == "Delivery", rec["response"]
            assert rec["response"]["code"] == 250
            assert rec["tls_protocol_version"] in ("TLSv1.2", "TLSv1.3")
            assert rec["tls_cipher"]
            assert any(n.startswith("O=trustme") for n in rec["tls_peer_subject_name"])
            assert [m.tls for m in sink.messages] == [True]
            assert got.https.requests == ["GET /.well-known/mta-sts.txt HTTP/1.1"]
        assert dns.count(f"_mta-sts.{DOMAIN}", "TXT") == 1

    run(scenario())


def test_enforce_refuses_clear_text_where_opportunistic_would_use_it(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    """enforce makes TLS Required: a matching MX without STARTTLS gets nothing."""
    async def scenario() -> None:
        async with SinkServer(hostname=MX1, tls=None) as sink:
            rec = (await deliver_one(dns, sink.port, tmp_path, ca, cafile)).outcome
            assert rec["type"] == "TransientFailure"
            assert rec["response"]["code"] == 400  # every host failed (KumoMTA's internal)
            assert "did not advertise STARTTLS" in rec["response"]["content"]
            assert sink.messages == []
            assert sink.plaintext.startswith(b"EHLO ")
            assert b"MAIL FROM" not in sink.plaintext

    run(scenario())


def test_enforce_with_no_matching_mx_defers_without_connecting(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    async def scenario() -> None:
        async with SinkServer(hostname=MX1, tls=material(issue(ca, tmp_path, MX1))) as sink:
            got = await deliver_one(dns, sink.port, tmp_path, ca, cafile,
                                    sts=policy_text("enforce", "mx.elsewhere.example"))
            rec = got.outcome
            assert rec["type"] == "TransientFailure"
            assert (rec["response"]["code"], rec["response"]["enhanced_code"]) == (
                451, {"class": 4, "subject": 4, "detail": 4})
            assert "matches none of the MX hosts" in rec["response"]["content"]
            assert sink.connections == 0
            assert sink.messages == []

    run(scenario())


def test_enforce_skips_the_unlisted_mx_and_uses_the_listed_one(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    """MX1 (preference 10) is not in the policy and listens on 127.0.0.2; MX2
    (preference 20) is listed: the message goes to MX2 and MX1 is never contacted."""
    dns.zone[DOMAIN] = {"MX": [(10, MX1), (20, MX2)]}
    dns.zone[MX1] = {"A": ["127.0.0.2"]}

    async def scenario() -> None:
        tls = material(issue(ca, tmp_path, MX1, MX2))
        async with (SinkServer(hostname=MX2, tls=tls) as listed,
                    SinkServer("127.0.0.2", listed.port, hostname=MX1, tls=tls) as unlisted):
            rec = (await deliver_one(dns, listed.port, tmp_path, ca, cafile,
                                     sts=policy_text("enforce", MX2))).outcome
            assert rec["type"] == "Delivery", rec["response"]
            assert rec["peer_address"]["name"] == MX2
            assert unlisted.connections == 0
            assert [m.tls for m in listed.messages] == [True]

    run(scenario())


def test_testing_mode_is_opportunistic_insecure(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    """A self-signed certificate fails plain Opportunistic (no fallback on that
    host) but delivers over TLS when the policy says testing."""
    async def scenario() -> None:
        tls = material(self_signed(tmp_path, MX1))
        async with SinkServer(hostname=MX1, tls=tls) as sink:
            rec = (await deliver_one(dns, sink.port, tmp_path, ca, cafile,
                                     sts=policy_text("testing", MX1))).outcome
            assert rec["type"] == "Delivery", rec["response"]
            assert rec["tls_peer_subject_name"] == [f"CN={MX1}"]
            assert [m.tls for m in sink.messages] == [True]
        async with SinkServer(hostname=MX1, tls=tls) as sink:
            rec = (await deliver_one(dns, sink.port, tmp_path / "b", ca, cafile,
                                     sts=policy_text("none"))).outcome
            assert rec["type"] == "TransientFailure"
            assert "certificate verification failed" in rec["response"]["content"]

    (tmp_path / "b").mkdir()
    run(scenario())


def test_enable_mta_sts_false_ignores_the_policy(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    """The same enforce policy that lists another MX: with enable_mta_sts=false it
    is never looked up and the message goes out in clear (no STARTTLS offered)."""
    async def scenario() -> None:
        async with SinkServer(hostname=MX1, tls=None) as sink:
            got = await deliver_one(dns, sink.port, tmp_path, ca, cafile,
                                    sts=policy_text("enforce", "mx.elsewhere.example"),
                                    enable_mta_sts=False)
            assert got.outcome["type"] == "Delivery"
            assert "tls_cipher" not in got.outcome
            assert [m.tls for m in sink.messages] == [False]
            assert got.https.requests == []
        assert dns.count(f"_mta-sts.{DOMAIN}") == 0

    run(scenario())


# -- DANE ------------------------------------------------------------------------------


def _tlsa_name(port: int) -> str:
    return f"_{port}._tcp.{MX1}"


@pytest.mark.parametrize("usage", ["DANE-EE", "DANE-TA"])
def test_dane_match_delivers_a_certificate_pkix_would_refuse(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path, usage: str
) -> None:
    """DANE-EE on a self-signed leaf; DANE-TA on a CA the cafile does not trust.
    Either is refused by PKIX, so only the DANE match can explain the delivery."""
    if usage == "DANE-EE":
        cert = self_signed(tmp_path, MX1)
        record = tlsa(cert.chain_der[0])
    else:
        cert = issue(trustme.CA(), tmp_path, MX1, include_root=True)
        record = tlsa(cert.chain_der[-1], usage=2)

    async def scenario() -> None:
        async with SinkServer(hostname=MX1, tls=material(cert)) as sink:
            dns.zone[_tlsa_name(sink.port)] = {"TLSA": [record]}
            # DANE needs the whole chain validated: MX, address and TLSA answers
            dns.secure.update({DOMAIN, MX1, _tlsa_name(sink.port)})
            rec = (await deliver_one(dns, sink.port, tmp_path, ca, cafile, enable_dane=True,
                                     enable_mta_sts=False)).outcome
            assert rec["type"] == "Delivery", rec["response"]
            assert rec["tls_protocol_version"] in ("TLSv1.2", "TLSv1.3")
            assert [m.tls for m in sink.messages] == [True]
            (query,) = [q for q in dns.queries if q.rtype == "TLSA"]
            assert (query.name, query.do) == (_tlsa_name(sink.port), True)

    run(scenario())


def test_dane_mismatch_fails_the_host_even_with_a_valid_certificate(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    cert = issue(ca, tmp_path, MX1)  # PKIX-valid with the cafile
    other = self_signed(tmp_path, MX1, stem="other")

    async def scenario() -> None:
        async with SinkServer(hostname=MX1, tls=material(cert)) as sink:
            dns.zone[_tlsa_name(sink.port)] = {"TLSA": [tlsa(other.chain_der[0])]}
            dns.secure.add("*")
            rec = (await deliver_one(dns, sink.port, tmp_path, ca, cafile, enable_dane=True,
                                     enable_mta_sts=False)).outcome
            assert rec["type"] == "TransientFailure"
            assert rec["response"]["code"] == 400  # every host failed (KumoMTA's internal)
            assert (f"DANE verification failed for {MX1}: no TLSA record matches the "
                    "server's certificate chain") in rec["response"]["content"]
            assert sink.messages == []

    run(scenario())


def test_tlsa_without_the_ad_flag_is_ignored(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    """The TLSA record matches, but the answer is not validated: normal TLS rules
    apply, and Opportunistic refuses the self-signed certificate."""
    cert = self_signed(tmp_path, MX1)

    async def scenario() -> None:
        async with SinkServer(hostname=MX1, tls=material(cert)) as sink:
            dns.zone[_tlsa_name(sink.port)] = {"TLSA": [tlsa(cert.chain_der[0])]}
            dns.secure.update({DOMAIN, MX1})  # the chain is secure, the TLSA answer not
            rec = (await deliver_one(dns, sink.port, tmp_path, ca, cafile, enable_dane=True,
                                     enable_mta_sts=False)).outcome
            assert rec["type"] == "TransientFailure"
            assert "certificate verification failed" in rec["response"]["content"]
            assert "DANE" not in rec["response"]["content"]
            assert sink.messages == []
        assert dns.count(rtype="TLSA") == 1

    run(scenario())


@pytest.mark.parametrize("enable_dane", [True, False])
def test_dane_overrides_mta_sts(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path, enable_dane: bool
) -> None:
    """An enforce policy listing MX1 asks for PKIX-verified TLS, which the
    self-signed certificate fails; a matching DANE-EE record takes precedence."""
    cert = self_signed(tmp_path, MX1)

    async def scenario() -> None:
        async with SinkServer(hostname=MX1, tls=material(cert)) as sink:
            dns.zone[_tlsa_name(sink.port)] = {"TLSA": [tlsa(cert.chain_der[0])]}
            dns.secure.add("*")
            got = await deliver_one(dns, sink.port, tmp_path, ca, cafile,
                                    enable_dane=enable_dane, enable_mta_sts=True)
            assert got.https.requests == ["GET /.well-known/mta-sts.txt HTTP/1.1"]
            rec = got.outcome
            if enable_dane:
                assert rec["type"] == "Delivery", rec["response"]
                assert [m.tls for m in sink.messages] == [True]
            else:
                assert rec["type"] == "TransientFailure"
                assert "certificate verification failed" in rec["response"]["content"]
                assert sink.messages == []

    run(scenario())



def test_enforce_prunes_the_unlisted_mx_before_the_site_is_named(
    dns: DnsServer, ca: trustme.CA, cafile: str, tmp_path: pathlib.Path
) -> None:
    """crates/mailexchanger/src/lib.rs (``apply_mta_sts`` before ``factor_names``):
    once the domain's enforce policy is known, its messages go to the site of
    the hosts the policy allows, ``mx2.example.com``, not the site of the whole
    MX set (docs/KUMOMTA.md row 6a)."""
    dns.zone[DOMAIN] = {"MX": [(10, MX1), (20, MX2)]}
    dns.zone[MX1] = {"A": ["127.0.0.2"]}

    async def scenario() -> None:
        tls = material(issue(ca, tmp_path, MX1, MX2))
        https_cert = issue(ca, tmp_path, f"mta-sts.{DOMAIN}", stem="mta-sts")
        async with (SinkServer(hostname=MX2, tls=tls) as listed,
                    SinkServer("127.0.0.2", listed.port, hostname=MX1, tls=tls) as unlisted,
                    PolicyServer(https_cert.server_context(), policy_text("enforce", MX2))
                    as https):
            svc = Service(path_policy(listed.port, enable_tls="Opportunistic",
                                      enable_mta_sts=True),
                          tmp_path / "spool", listen=None,
                          resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0),
                          tls_cafile=cafile, mta_sts_port=https.port)
            records: list[dict[str, Any]] = []
            async with svc:
                assert svc.driver is not None
                svc.driver.records = records.append
                loop = asyncio.get_running_loop()
                for n in (1, 2):
                    await svc.submit("s@sender.test", [f"a@{DOMAIN}"], message(n))
                    deadline = loop.time() + 10
                    while len([r for r in records if r["type"] == "Delivery"]) < n:
                        assert loop.time() < deadline, f"no delivery; records {records}"
                        await asyncio.sleep(0.01)
            first, second = [r for r in records if r["type"] == "Delivery"]
            # the first waited for the policy in the path of the whole MX set
            assert first["site"] == "unspecified->(mx1|mx2).example.com@smtp_client"
            assert second["site"] == "unspecified->mx2.example.com@smtp_client"
            assert unlisted.connections == 0

    run(scenario())
