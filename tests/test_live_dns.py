"""engine.live.dns against a real DNS server on 127.0.0.1 (tests/support/dns_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from engine.events import DnsFailure, MxRecord, Resolved, ResolveFailed, TlsaRecord
from engine.live.dns import DnsLookupError, LiveResolver
from tests.support.dns_server import DnsServer

TLSA_DATA = bytes(range(32))


def zone() -> dict[str, dict[str, Any]]:
    return {
        "example.com": {"MX": [(20, "mx2.example.com."), (10, "mx1.example.com.")], "ttl": 600},
        "mx1.example.com": {"A": ["127.0.0.11"], "AAAA": ["::1"], "ttl": 120},
        "mx2.example.com": {"A": ["127.0.0.12", "127.0.0.13"], "ttl": 300},
        "ghost.example.com": {},
        "partial.example": {"MX": [(5, "ghost.example.com."), (10, "mx2.example.com.")]},
        "nomail.example": {"MX": [(0, ".")], "ttl": 3600},
        "implicit.example": {"A": ["127.0.0.20"], "ttl": 90},
        "noaddr.example": {"MX": [(10, "ghost.example.com.")]},
        "broken.example": {"MX": [(10, "mx1.example.com.")]},
        "slow.example": {"MX": [(10, "mx1.example.com.")]},
        "_mta-sts.example.com": {"TXT": ["v=STSv1; id=abc", ["split ", "record"]]},
        "_25._tcp.mx1.example.com": {"TLSA": [(3, 1, 1, TLSA_DATA)]},
    }


class Clock:
    """A hand-driven clock for the resolver's cache."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer(zone()) as srv:
        srv.faults["broken.example"] = "SERVFAIL"
        srv.faults["slow.example"] = "DROP"
        yield srv


def resolver_for(server: DnsServer, **kw: Any) -> LiveResolver:
    kw.setdefault("timeout", 2.0)
    return LiveResolver(nameservers=["127.0.0.1"], port=server.port, **kw)


def test_mx_hosts_sorted_with_addresses_and_min_ttl(server: DnsServer) -> None:
    res = asyncio.run(resolver_for(server).resolve_mx("Example.COM.", 5.0))
    assert res == Resolved(
        at=5.0,
        domain="example.com",
        mx=(
            MxRecord(preference=10, host="mx1.example.com", addresses=("127.0.0.11", "::1")),
            MxRecord(
                preference=20, host="mx2.example.com", addresses=("127.0.0.12", "127.0.0.13")
            ),
        ),
        implicit=False,
        ttl=120.0,
    )


def test_host_without_addresses_is_dropped(server: DnsServer) -> None:
    res = asyncio.run(resolver_for(server).resolve_mx("partial.example", 0.0))
    assert isinstance(res, Resolved)
    assert [m.host for m in res.mx] == ["mx2.example.com"]


def test_no_host_with_addresses_is_no_addresses(server: DnsServer) -> None:
    res = asyncio.run(resolver_for(server).resolve_mx("noaddr.example", 1.0))
    assert isinstance(res, ResolveFailed)
    assert (res.kind, res.domain) == (DnsFailure.NO_ADDRESSES, "noaddr.example")
    assert "ghost.example.com" in res.detail


def test_implicit_mx_uses_the_domain_itself(server: DnsServer) -> None:
    res = asyncio.run(resolver_for(server).resolve_mx("implicit.example", 2.0))
    assert res == Resolved(
        at=2.0,
        domain="implicit.example",
        mx=(MxRecord(preference=0, host="implicit.example", addresses=("127.0.0.20",)),),
        implicit=True,
        ttl=90.0,
    )


def test_null_mx(server: DnsServer) -> None:
    res = asyncio.run(resolver_for(server).resolve_mx("nomail.example", 3.0))
    assert res == Resolved(
        at=3.0, domain="nomail.example", mx=(MxRecord(preference=0, host="."),), ttl=3600.0
    )
    assert server.count("nomail.example") == 1  # no address lookups for a null MX


def test_nxdomain(server: DnsServer) -> None:
    res = asyncio.run(resolver_for(server).resolve_mx("missing.example", 4.0))
    assert isinstance(res, ResolveFailed)
    assert (res.kind, res.domain) == (DnsFailure.NXDOMAIN, "missing.example")


def test_servfail(server: DnsServer) -> None:
    res = asyncio.run(resolver_for(server).resolve_mx("broken.example", 4.0))
    assert isinstance(res, ResolveFailed)
    assert res.kind == DnsFailure.SERVFAIL


def test_timeout_when_the_server_drops_the_query(server: DnsServer) -> None:
    loop_time: list[float] = []

    async def go() -> ResolveFailed | Resolved:
        loop = asyncio.get_running_loop()
        start = loop.time()
        out = await resolver_for(server, timeout=0.3).resolve_mx("slow.example", 4.0)
        loop_time.append(loop.time() - start)
        return out

    res = asyncio.run(go())
    assert isinstance(res, ResolveFailed)
    assert res.kind == DnsFailure.TIMEOUT
    assert 0.25 <= loop_time[0] < 1.5
    assert server.count("slow.example", "MX") >= 1


def test_cache_hits_within_ttl_and_expiry_by_the_clock(server: DnsServer) -> None:
    clock = Clock()
    resolver = resolver_for(server, clock=clock, negative_ttl=500.0)  # mx2 has no AAAA

    async def twice() -> tuple[Resolved | ResolveFailed, Resolved | ResolveFailed]:
        return await resolver.resolve_mx("example.com", 0.0), await resolver.resolve_mx(
            "example.com", 1.0
        )

    first, second = asyncio.run(twice())
    # MX, then A+AAAA for two hosts: five queries, and none for the second call
    assert len(server.queries) == 5
    assert isinstance(second, Resolved) and second.mx == first.mx  # type: ignore[union-attr]
    clock.now += 100
    third = asyncio.run(resolver.resolve_mx("example.com", 2.0))
    assert len(server.queries) == 5
    assert isinstance(third, Resolved) and third.ttl == 20.0  # 120 s TTL, 100 s elapsed
    clock.now += 30  # mx1's A/AAAA (120 s) expired; MX (600 s) and mx2 (300 s) did not
    asyncio.run(resolver.resolve_mx("example.com", 3.0))
    assert server.count() == 7
    assert server.count("mx1.example.com") == 4
    assert server.count("example.com", "MX") == 1


def test_prune_forgets_answers_idle_past_the_sweep(server: DnsServer) -> None:
    """The reap sweep's prune (issue 13.6): answers not asked for in the last
    `idle` seconds go, even within their TTL, and are asked again when needed;
    answers in use stay."""
    clock = Clock()
    resolver = resolver_for(server, clock=clock, negative_ttl=500.0)
    asyncio.run(resolver.resolve_mx("example.com", 0.0))
    asyncio.run(resolver.resolve_mx("missing.example", 0.0))
    assert server.count() == 6
    clock.now += 50
    asyncio.run(resolver.resolve_mx("example.com", 1.0))  # a hit: in use
    clock.now += 20
    assert resolver.prune(60.0) == 1  # missing.example, idle 70 s
    asyncio.run(resolver.resolve_mx("example.com", 2.0))
    assert server.count() == 6  # still cached
    clock.now += 61
    assert resolver.prune(60.0) == 5
    asyncio.run(resolver.resolve_mx("example.com", 3.0))
    assert server.count("example.com", "MX") == 2  # asked again


def test_prune_keeps_only_the_answers_of_domains_still_known(server: DnsServer) -> None:
    """With the engine's domains, an MX answer of a reaped domain goes at once
    (even asked for a moment ago), and with it the addresses of its hosts (no
    kept MX answer names them: kept, each would pin the allocator arena it was
    made in); a known domain keeps its MX and its hosts' addresses."""
    clock = Clock()
    resolver = resolver_for(server, clock=clock, negative_ttl=500.0)
    asyncio.run(resolver.resolve_mx("example.com", 0.0))
    asyncio.run(resolver.resolve_mx("missing.example", 0.0))
    assert resolver.prune(60.0, {"Example.COM"}) == 1  # missing.example's MX
    asyncio.run(resolver.resolve_mx("example.com", 1.0))
    assert server.count() == 6  # example.com's MX and hosts still cached
    assert resolver.prune(60.0, set()) == 5  # its MX and its hosts' A and AAAA, asked just now
    assert resolver.prune(60.0, set()) == 0
    asyncio.run(resolver.resolve_mx("example.com", 2.0))
    assert server.count("example.com", "MX") == 2


def test_failures_are_cached_briefly(server: DnsServer) -> None:
    clock = Clock()
    resolver = resolver_for(server, clock=clock, negative_ttl=5.0)
    asyncio.run(resolver.resolve_mx("missing.example", 0.0))
    asyncio.run(resolver.resolve_mx("missing.example", 0.0))
    assert server.count("missing.example") == 1
    clock.now += 6
    asyncio.run(resolver.resolve_mx("missing.example", 0.0))
    assert server.count("missing.example") == 2


def test_concurrent_lookups_share_one_query(server: DnsServer) -> None:
    resolver = resolver_for(server)

    async def many() -> list[Resolved | ResolveFailed]:
        lookups = (resolver.resolve_mx("example.com", 0) for _ in range(5))
        return list(await asyncio.gather(*lookups))

    results = asyncio.run(many())
    assert len({r for r in results}) == 1
    assert server.count("example.com", "MX") == 1


def test_txt_records_joined_and_failures(server: DnsServer) -> None:
    resolver = resolver_for(server)
    assert asyncio.run(resolver.resolve_txt("_mta-sts.example.com")) == (
        "v=STSv1; id=abc",
        "split record",
    )
    assert asyncio.run(resolver.resolve_txt("_mta-sts.missing.example")) == ()
    assert asyncio.run(resolver.resolve_txt("example.com")) == ()  # NODATA
    with pytest.raises(DnsLookupError) as info:
        asyncio.run(resolver.resolve_txt("broken.example"))
    assert info.value.kind == DnsFailure.SERVFAIL


def test_tlsa_secure_only_with_ad_flag(server: DnsServer) -> None:
    resolver = resolver_for(server)
    insecure = asyncio.run(resolver.resolve_tlsa("MX1.example.com.", 25, 7.0))
    assert insecure.records == (TlsaRecord(usage=3, selector=1, mtype=1, data=TLSA_DATA),)
    assert insecure.secure is False
    assert insecure.host == "mx1.example.com" and insecure.port == 25
    # the query asked for DNSSEC (DO bit set)
    assert [q.do for q in server.queries if q.rtype == "TLSA"] == [True]

    server.secure.add("_25._tcp.mx1.example.com")
    secure = asyncio.run(resolver_for(server).resolve_tlsa("mx1.example.com", 25, 8.0))
    assert secure.secure is True and secure.at == 8.0
    distrusting = resolver_for(server, trust_ad=False)
    assert asyncio.run(distrusting.resolve_tlsa("mx1.example.com", 25, 8.0)).secure is False


def test_tlsa_lookup_failure_is_insecure_and_empty(server: DnsServer) -> None:
    res = asyncio.run(resolver_for(server).resolve_tlsa("mx2.example.com", 25, 0.0))
    assert (res.records, res.secure) == ((), False)


def test_resolve_addresses(server: DnsServer) -> None:
    resolver = resolver_for(server)
    assert asyncio.run(resolver.resolve_addresses("mx1.example.com")) == ("127.0.0.11", "::1")
    assert asyncio.run(resolver.resolve_addresses("nowhere.example")) == ()


def test_bad_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        LiveResolver(nameservers=["127.0.0.1"], timeout=0)
