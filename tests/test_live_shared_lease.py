"""A shared connection lease outlives its ttl while its connection is busy, live.

Two services in one process share a connection_limit of 2 through a real
redis-server, with a lease ttl of 2.5 s and no shared throttle: each message
extends its connection's lease (`engine.shared_limits.may_start`).  The sink
is slow at the dot, so the connections stay busy for several ttls (and an
idle one closes after 2 s, within the ttl).  Were the leases not extended,
they would lapse in Redis after 2.5 s and the service still waiting would
open its own: the sink would see more than 2 at once.
"""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from engine.live.dns import LiveResolver
from engine.live.service import Service
from engine.policy import Policy
from engine.shared_limits import SharedLimitsConfig
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message, zone_for
from tests.support.redis_server import RedisServer
from tests.test_live_shared_e2e import POLICY, CountingSink

pytestmark = [pytest.mark.timeout(120)]

MESSAGES = 120  # 60 a service, 0.2 s at the dot: about 12 s on 2 connections, 5 ttls


def test_a_busy_connection_keeps_its_shared_lease_past_the_ttl(tmp_path: pathlib.Path) -> None:
    with RedisServer() as redis, CountingSink(data_delay=0.2) as sink, \
            DnsServer(zone_for()) as dns:
        policy_file = tmp_path / "policy.py"
        policy_file.write_text(POLICY.format(port=sink.port, limit=2, extra=""))

        async def scenario() -> None:
            services = [
                Service(Policy.from_file(str(policy_file)), tmp_path / name, listen=None,
                        resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0),
                        redis=redis.url,
                        shared_limits=SharedLimitsConfig(node=name, nodes=2, lease_ttl=2.5))
                for name in ("a", "b")]
            for svc in services:
                await svc.start()
            try:
                await asyncio.gather(*(
                    svc.submit("s@sender.test", [f"r{i}@example.com"], message(i))
                    for i in range(MESSAGES) for svc in services[i % 2:i % 2 + 1]))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                while sink.count() < MESSAGES:
                    assert loop.time() < deadline, (sink.count(), sink.peak)
                    await asyncio.sleep(0.05)
            finally:
                for svc in services:
                    await svc.stop(grace=1.0)

        asyncio.run(scenario())
        assert sink.count() == MESSAGES
        assert sink.peak == 2, sink.peak  # reached, never passed, over five ttls
