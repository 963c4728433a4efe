"""ip_lookup_strategy: which A/AAAA addresses of an MX host a path tries.

KumoMTA: crates/dns-resolver/src/lib.rs (``IpLookupStrategy``, ``ip_lookup``:
``Ipv4Only``/``Ipv6Only`` query one family, ``*Then*`` query the second only
when the first gave no address, ``Ipv4AndIpv6`` both, A first) and
crates/kumod/src/smtp_dispatcher.rs (``resolve_addresses(None,
path_config.ip_lookup_strategy)``).  The engine test feeds events and reads
the Connect effects; the live test resolves through dnslib and delivers to
aiosmtpd sinks on 127.0.0.1 and ::1.
"""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from engine.effects import Connect
from engine.engine import Engine
from engine.events import MxRecord
from engine.mxplan import by_strategy, order_addresses
from tests.support.dns_server import DnsServer
from tests.support.engine_harness import World, of, policy, records, submit
from tests.support.live_harness import Live, path_policy
from tests.support.smtp_servers import SinkServer

DUAL = (MxRecord(preference=10, host="mx1.example.com",
                 addresses=("2001:db8::1", "192.0.2.1")),)
V6_ONLY = (MxRecord(preference=10, host="mx1.example.com", addresses=("2001:db8::1",)),)


@pytest.mark.parametrize(("strategy", "want"), [
    ("Ipv4Only", ["192.0.2.1"]),
    ("Ipv6Only", ["2001:db8::1"]),
    ("Ipv4AndIpv6", ["192.0.2.1", "2001:db8::1"]),
    ("Ipv4ThenIpv6", ["192.0.2.1"]),
    ("Ipv6ThenIpv4", ["2001:db8::1"]),
])
def test_each_strategy_keeps_the_families_kumomta_queries(strategy: str, want: list[str]) -> None:
    assert list(by_strategy(DUAL[0].addresses, strategy)) == want
    pairs = order_addresses(DUAL, random.Random(1), strategy)
    assert sorted(a for _, a in pairs) == sorted(want)


def test_then_strategies_fall_back_to_the_other_family() -> None:
    assert list(by_strategy(("2001:db8::1",), "Ipv4ThenIpv6")) == ["2001:db8::1"]
    assert list(by_strategy(("192.0.2.1",), "Ipv6ThenIpv4")) == ["192.0.2.1"]
    assert list(by_strategy(("192.0.2.1",), "Ipv6Only")) == []


@pytest.mark.parametrize(("strategy", "address"), [
    ("Ipv4Only", "192.0.2.1"), ("Ipv6Only", "2001:db8::1"),
    ("Ipv4ThenIpv6", "192.0.2.1"), ("Ipv6ThenIpv4", "2001:db8::1"),
])
def test_the_engine_connects_to_the_family_the_path_asks_for(strategy: str,
                                                             address: str) -> None:
    eng = Engine(policy(ip_lookup_strategy=strategy), seed=1)
    fx = World(eng, mx=DUAL, auto_connect=False).feed(submit(1))
    assert [c.address for c in of(fx, Connect)] == [address]


def test_a_family_the_host_lacks_leaves_no_address_to_try() -> None:
    eng = Engine(policy(ip_lookup_strategy="Ipv4Only"), seed=1)
    fx = World(eng, mx=V6_ONLY, auto_connect=False).feed(submit(1))
    assert of(fx, Connect) == []
    [rec] = records(fx, "TransientFailure")
    assert rec["response"]["code"] == 451


def _v6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def _deliver(strategy: str) -> tuple[int, int, dict[str, str]]:
    async with SinkServer() as v4, SinkServer(host="::1", port=v4.port) as v6:
        zone = {"example.com": {"MX": [(10, "mx1.example.com")]},
                "mx1.example.com": {"A": ["127.0.0.1"], "AAAA": ["::1"]}}
        with DnsServer(zone) as dns:
            pol = path_policy(v4.port, ip_lookup_strategy=strategy)
            async with Live(pol, dns.port) as live:
                live.submit()
                await live.wait_done()
                [rec] = live.of_type("Delivery")
        return len(v4.messages), len(v6.messages), rec["peer_address"]


@pytest.mark.timeout(30)
@pytest.mark.skipif(not _v6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize(("strategy", "v4", "v6", "addr"), [
    ("Ipv4Only", 1, 0, "127.0.0.1"), ("Ipv6Only", 0, 1, "::1"),
    ("Ipv6ThenIpv4", 0, 1, "::1"), ("Ipv4ThenIpv6", 1, 0, "127.0.0.1"),
])
def test_live_delivery_follows_the_strategy(strategy: str, v4: int, v6: int,
                                            addr: str) -> None:
    got = asyncio.run(_deliver(strategy))
    assert got == (v4, v6, {"name": "mx1.example.com", "addr": addr})


@pytest.mark.parametrize(("strategy", "addr"), [
    ("Ipv6Only", "2001:db8::7"), ("Ipv4ThenIpv6", "192.0.2.7"), ("Ipv6ThenIpv4", "2001:db8::7"),
])
def test_the_simulator_follows_the_strategy(strategy: str, addr: str) -> None:
    import sim
    sc = sim.Scenario.from_dict({
        "name": "families", "horizon": "1h",
        "traffic": [{"domain": "example.com", "messages": 3, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx1.example.com", "preference": 10}]}},
        "hosts": {"mx1.example.com": {"addresses": ["192.0.2.7", "2001:db8::7"]}},
        "egress_path": {"ip_lookup_strategy": strategy},
    })
    result = sim.run(sc)
    peers = {r["peer_address"]["addr"] for r in result.records if r["type"] == "Delivery"}
    assert peers == {addr}
