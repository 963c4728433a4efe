"""engine.live.dns: a query whose datagram is lost is sent again within the lookup.

DNS is UDP, and a nameserver's receive buffer overflows in a burst of lookups
(one message to each of 10 k domains): a lost query used to be waited for
until the whole lookup timed out, and its messages then waited for their next
retry, minutes later.  A real DNS server on 127.0.0.1 that drops the first
query of every name it is asked shows the resolver asks again.
"""

from __future__ import annotations

import asyncio

import pytest

from engine.events import MxRecord, Resolved
from engine.live import dns
from engine.live.dns import LiveResolver
from tests.support.dns_server import DnsServer

ZONE = {
    "lossy.example": {"MX": [(10, "mx.lossy.example.")], "ttl": 600},
    "mx.lossy.example": {"A": ["127.0.0.11"], "ttl": 600},
}


class LossyDnsServer(DnsServer):
    """Drops the first query of each (name, type), answers the ones after."""

    def __init__(self) -> None:
        super().__init__(ZONE)
        self.dropped: set[tuple[str, str]] = set()

    def _answer(self, data: bytes) -> bytes | None:
        reply = super()._answer(data)
        last = self.queries[-1]
        key = (last.name, last.rtype)
        if key not in self.dropped:
            self.dropped.add(key)
            return None
        return reply


def test_a_lost_query_is_sent_again_within_the_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns, "ATTEMPT", 0.3)
    with LossyDnsServer() as server:
        resolver = LiveResolver(nameservers=["127.0.0.1"], port=server.port, timeout=3.0)
        res = asyncio.run(resolver.resolve_mx("lossy.example", 5.0))
        assert isinstance(res, Resolved), res
        mx = MxRecord(preference=10, host="mx.lossy.example", addresses=("127.0.0.11",))
        assert res.mx == (mx,)
        assert server.count("lossy.example", "MX") == 2  # the lost one, then its repeat
        assert server.count("mx.lossy.example", "A") == 2


def test_the_attempt_never_outlasts_the_lookup() -> None:
    resolver = LiveResolver(nameservers=["127.0.0.1"], port=53, timeout=0.5)
    assert resolver._resolver.timeout == 0.5 and resolver._resolver.lifetime == 0.5
    resolver = LiveResolver(nameservers=["127.0.0.1"], port=53, timeout=30.0)
    assert resolver._resolver.timeout == dns.ATTEMPT and resolver._resolver.lifetime == 30.0
