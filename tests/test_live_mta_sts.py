"""engine.live.mta_sts against a real DNS server and a real HTTPS server on 127.0.0.1.

The DNS server answers ``_mta-sts.example.com`` TXT and ``mta-sts.example.com``
A 127.0.0.1; a small asyncio HTTPS server (tests/support/policy_server.py)
with a trustme certificate for ``mta-sts.example.com`` serves the policy and
counts the requests.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from engine.events import MtaStsPolicy, MtaStsResolved
from engine.live.dns import LiveResolver
from engine.live.mta_sts import MtaStsError, MtaStsFetcher, parse_policy, parse_txt_id
from tests.support.certs import issue, write_cafile
from tests.support.dns_server import DnsServer
from tests.support.policy_server import PolicyServer

DOMAIN = "example.com"
POLICY = (
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\n"
    "max_age: 86400\r\n"
)
ENFORCE = MtaStsPolicy(mode="enforce", mx=("mx1.example.com", "*.example.net"), max_age=86400.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    zone: dict[str, dict[str, Any]] = {
        "_mta-sts.example.com": {"TXT": ["v=STSv1; id=20240101T1"]},
        "mta-sts.example.com": {"A": ["127.0.0.1"]},
        "example.com": {"MX": [(10, "mx1.example.com")]},
        "nosts.example": {"MX": [(10, "mx1.example.com")]},
    }
    with DnsServer(zone) as srv:
        yield srv


def run_fetches(
    dns: DnsServer, ca: trustme.CA, tmp_path: pathlib.Path, steps: Any, *,
    cert_names: tuple[str, ...] = ("mta-sts.example.com",), clock: Clock | None = None,
) -> tuple[list[MtaStsResolved], PolicyServer]:
    """Start the HTTPS server, then run `steps(fetcher, server)` (an async function)."""
    cert = issue(ca, tmp_path, *cert_names)
    cafile = str(write_cafile(ca, tmp_path))

    async def main() -> tuple[list[MtaStsResolved], PolicyServer]:
        async with PolicyServer(cert.server_context(), POLICY,
                                headers={"Content-Type": "text/plain; charset=utf-8"}) as server:
            resolver = LiveResolver(nameservers=["127.0.0.1"], port=dns.port, timeout=2.0)
            fetcher = MtaStsFetcher(resolver, port=server.port, cafile=cafile, timeout=2.0,
                                    clock=clock or Clock())
            return await steps(fetcher, server), server

    return asyncio.run(main())


def test_enforce_policy_fetched(dns: DnsServer, ca: trustme.CA, tmp_path: pathlib.Path) -> None:
    async def steps(f: MtaStsFetcher, s: PolicyServer) -> list[MtaStsResolved]:
        return [await f.fetch("Example.COM", 12.5)]

    (res,), server = run_fetches(dns, ca, tmp_path, steps)
    assert res == MtaStsResolved(at=12.5, domain=DOMAIN, policy=ENFORCE)
    assert server.requests == ["GET /.well-known/mta-sts.txt HTTP/1.1"]
    assert len(server.heads) == 1
    assert server.heads[0].startswith("GET /.well-known/mta-sts.txt HTTP/1.1\r\n")
    assert "Host: mta-sts.example.com\r\n" in server.heads[0]


def test_chunked_body(dns: DnsServer, ca: trustme.CA, tmp_path: pathlib.Path) -> None:
    async def steps(f: MtaStsFetcher, s: PolicyServer) -> list[MtaStsResolved]:
        s.chunked = True
        return [await f.fetch(DOMAIN, 0.0)]

    (res,), _ = run_fetches(dns, ca, tmp_path, steps)
    assert res.policy == ENFORCE


def test_cache_by_max_age_and_policy_id(
    dns: DnsServer, ca: trustme.CA, tmp_path: pathlib.Path
) -> None:
    clock = Clock()

    async def steps(f: MtaStsFetcher, s: PolicyServer) -> list[MtaStsResolved]:
        out = [await f.fetch(DOMAIN, 0.0)]
        f.resolver.clear_cache()
        out.append(await f.fetch(DOMAIN, 1.0))  # same id: cached policy, no HTTPS
        assert len(s.requests) == 1
        dns.zone["_mta-sts.example.com"]["TXT"] = ["v=STSv1; id=20240202"]
        s.body = POLICY.replace("enforce", "testing").encode()
        f.resolver.clear_cache()
        out.append(await f.fetch(DOMAIN, 2.0))  # new id: refetched
        assert len(s.requests) == 2
        clock.now += 86401  # past max_age: refetched although the id is unchanged
        f.resolver.clear_cache()
        s.body = POLICY.replace("enforce", "none").encode()
        out.append(await f.fetch(DOMAIN, 3.0))
        assert len(s.requests) == 3
        return out

    results, _ = run_fetches(dns, ca, tmp_path, steps, clock=clock)
    assert [r.policy.mode for r in results if r.policy] == ["enforce", "enforce", "testing",
                                                            "none"]


def test_no_txt_record_means_no_policy_and_no_fetch(
    dns: DnsServer, ca: trustme.CA, tmp_path: pathlib.Path
) -> None:
    async def steps(f: MtaStsFetcher, s: PolicyServer) -> list[MtaStsResolved]:
        return [await f.fetch("nosts.example", 4.0)]

    (res,), server = run_fetches(dns, ca, tmp_path, steps)
    assert res == MtaStsResolved(at=4.0, domain="nosts.example", policy=None)
    assert server.requests == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "404 Not Found"}, "HTTP status 404"),
        ({"status": "301 Moved Permanently"}, "HTTP status 301 (redirects are not followed)"),
        ({"headers": {"Content-Type": "text/html"}}, "content type 'text/html'"),
        ({"body": b"version: STSv1\nmode: enforce\nmax_age: 60\n"}, "lists no mx"),
        ({"body": POLICY.replace("STSv1", "STSv2").encode()}, "version must be 'STSv1'"),
    ],
)
def test_bad_responses_give_no_policy_with_a_logged_reason(
    dns: DnsServer, ca: trustme.CA, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
    change: dict[str, Any], reason: str,
) -> None:
    async def steps(f: MtaStsFetcher, s: PolicyServer) -> list[MtaStsResolved]:
        for key, value in change.items():
            setattr(s, key, value)
        out = [await f.fetch(DOMAIN, 0.0)]
        assert reason in f.last_reason[DOMAIN]
        return out

    with caplog.at_level(logging.WARNING, logger="egress.mta_sts"):
        (res,), _ = run_fetches(dns, ca, tmp_path, steps)
    assert res.policy is None
    assert any(reason in r.getMessage() for r in caplog.records)


def test_certificate_for_the_wrong_name_gives_no_policy(
    dns: DnsServer, ca: trustme.CA, tmp_path: pathlib.Path
) -> None:
    async def steps(f: MtaStsFetcher, s: PolicyServer) -> list[MtaStsResolved]:
        out = [await f.fetch(DOMAIN, 0.0)]
        assert "certificate not valid for mta-sts.example.com" in f.last_reason[DOMAIN]
        return out

    (res,), server = run_fetches(dns, ca, tmp_path, steps, cert_names=("example.com",))
    assert res.policy is None
    assert server.requests == []


def test_failed_refetch_keeps_the_unexpired_cached_policy(
    dns: DnsServer, ca: trustme.CA, tmp_path: pathlib.Path
) -> None:
    async def steps(f: MtaStsFetcher, s: PolicyServer) -> list[MtaStsResolved]:
        first = await f.fetch(DOMAIN, 0.0)
        dns.zone["_mta-sts.example.com"]["TXT"] = ["v=STSv1; id=new"]
        s.status = "500 Internal Server Error"
        f.resolver.clear_cache()
        second = await f.fetch(DOMAIN, 1.0)
        assert "HTTP status 500" in f.last_reason[DOMAIN]
        del dns.zone["_mta-sts.example.com"]  # TXT gone: the cached policy still applies
        f.resolver.clear_cache()
        return [first, second, await f.fetch(DOMAIN, 2.0)]

    results, _ = run_fetches(dns, ca, tmp_path, steps)
    assert [r.policy for r in results] == [ENFORCE, ENFORCE, ENFORCE]


def test_txt_id_parsing() -> None:
    assert parse_txt_id(("v=STSv1; id=20160831085700Z;",)) == "20160831085700Z"
    assert parse_txt_id(("v=STSv1;id=abc", "unrelated text")) == "abc"
    assert parse_txt_id(("v=STSv1; id=a", "v=STSv1; id=b")) is None  # two records: none
    assert parse_txt_id(("v=STSv1; id=bad-id!",)) is None
    assert parse_txt_id(("v=STSv1",)) is None
    assert parse_txt_id(("v=STSv10; id=abc",)) is None
    assert parse_txt_id(()) is None


def test_policy_parsing_is_strict() -> None:
    assert parse_policy(POLICY) == ENFORCE
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\nextension: ignored\n") == (
        MtaStsPolicy(mode="none", mx=(), max_age=0.0)
    )
    bad = {
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999999\n": "max_age",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1d\n": "whole number",
        "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 60\n": "mode must be",
        "version: STSv1\nmode: enforce\nmode: none\nmx: a.example\nmax_age: 60\n": "twice",
        "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 60\n": "mx 'a..example'",
        "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 60\n": "mx '*.*.example'",
        "version STSv1\nmode: enforce\nmx: a.example\nmax_age: 60\n": "line 1",
        "mode: enforce\nmx: a.example\nmax_age: 60\n": "version must be 'STSv1', not None",
    }
    for text, reason in bad.items():
        with pytest.raises(MtaStsError) as info:
            parse_policy(text)
        assert reason in str(info.value), (text, str(info.value))
