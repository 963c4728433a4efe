"""engine.live.service with a raising policy hook: only what it configures fails.

A real `Service` (SQLite spool, SMTP listener on loopback), a real DNS server
and a real SMTP sink.  The policy's ``get_egress_path_config`` raises for one
domain; every other domain's mail flows, the failing domain's messages get a
TransientFailure record naming the hook and its error, are retried, and
``total_hook_failures`` counts the failures.
"""

from __future__ import annotations

import asyncio
import pathlib
import smtplib
from typing import Any

import pytest

from engine.config import make_egress_path
from engine.live.dns import LiveResolver
from engine.live.journal import iter_events
from engine.live.logfile import read_records
from engine.live.service import Service
from engine.policy import Policy
from engine.queue_config import make_queue_config
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message
from tests.support.smtp_servers import SinkServer

pytestmark = pytest.mark.timeout(60)

ZONE = {
    "good.test": {"MX": [(10, "mx.good.test")]}, "mx.good.test": {"A": ["127.0.0.1"]},
    "bad.test": {"MX": [(10, "mx.bad.test")]}, "mx.bad.test": {"A": ["127.0.0.1"]},
}


def raising_policy(port: int, failing: set[str], refresh: float = 60.0) -> Policy:
    """Every path to 127.0.0.1:`port`; the hook raises for a domain in `failing`."""
    p = Policy()

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        if domain in failing:
            raise KeyError(f"no route configured for {domain}")
        return make_egress_path(smtp_port=port, prohibited_hosts=[], enable_tls="Disabled",
                                enable_mta_sts=False, refresh_interval=refresh)

    return p


def send(port: int, rcpt: str, n: int) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.sendmail("s@sender.test", [rcpt], message(n, rcpt))


async def until(cond: Any, timeout: float = 20.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not met after {timeout}s")
        await asyncio.sleep(0.02)


def _service(policy: Policy, tmp_path: pathlib.Path, dns: DnsServer) -> Service:
    return Service(policy, tmp_path / "spool", listen=("127.0.0.1", 0),
                   log_dir=tmp_path / "logs",
                   resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0))


def test_a_hook_raising_when_a_site_is_first_resolved_fails_only_that_domain(
        tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        with DnsServer(ZONE) as dns:
            async with SinkServer() as sink:
                svc = _service(raising_policy(sink.port, {"bad.test"}), tmp_path, dns)
                async with svc:
                    port = svc.listen_port
                    for n in range(3):
                        assert await asyncio.to_thread(send, port, f"u{n}@bad.test", n) == {}
                    for n in range(20):
                        assert await asyncio.to_thread(send, port, f"u{n}@good.test", n) == {}
                    await until(lambda: len(sink.messages) == 20, what="20 deliveries")
                    eng = svc.engine
                    assert eng is not None
                    await until(lambda: eng.queued_count == 3, what="only bad.test queued")
                    assert eng.counters["total_hook_failures"] >= 1
                    assert eng.scheduled_count == 3  # each waits for its retry
                    # the driver is alive: a later message still flows
                    assert await asyncio.to_thread(send, port, "late@good.test", 99) == {}
                    await until(lambda: len(sink.messages) == 21, what="a later delivery")
        recs = list(read_records(tmp_path / "logs"))
        failed = [r for r in recs if r["type"] == "TransientFailure"]
        assert sorted(r["recipient"] for r in failed) == [f"u{n}@bad.test" for n in range(3)]
        for r in failed:
            assert r["response"]["code"] == 451
            assert "hook 'get_egress_path_config'" in r["response"]["content"]
            assert "KeyError" in r["response"]["content"]
        assert sorted(r["recipient"] for r in recs if r["type"] == "Delivery") == sorted(
            [f"u{n}@good.test" for n in range(20)] + ["late@good.test"])

    asyncio.run(scenario())


def test_a_hook_raising_at_a_config_refresh_refuses_nothing(
        tmp_path: pathlib.Path) -> None:
    # path configs are re-asked after refresh_interval (60 s): made short here
    failing: set[str] = set()

    async def scenario() -> None:
        with DnsServer(ZONE) as dns:
            async with SinkServer() as sink:
                svc = _service(raising_policy(sink.port, failing, 0.3), tmp_path, dns)
                async with svc:
                    port = svc.listen_port
                    assert await asyncio.to_thread(send, port, "first@bad.test", 0) == {}
                    assert await asyncio.to_thread(send, port, "first@good.test", 0) == {}
                    await until(lambda: len(sink.messages) == 2, what="both paths used")
                    failing.add("bad.test")  # from now on its path's refresh raises
                    await asyncio.sleep(0.5)
                    for n in range(20):
                        assert await asyncio.to_thread(send, port, f"u{n}@good.test", n) == {}
                    await until(lambda: len(sink.messages) == 22, what="20 more deliveries")
                    eng = svc.engine
                    assert eng is not None
                    assert eng.counters["total_hook_failures"] >= 1
                    await until(lambda: eng.queued_count == 0, what="queue empty")

    asyncio.run(scenario())


def test_a_raising_queue_config_refuses_only_its_own_submissions(
        tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        with DnsServer(ZONE) as dns:
            async with SinkServer() as sink:
                p = raising_policy(sink.port, set())

                @p.on("get_queue_config")
                def _queue(domain: str, tenant: str, campaign: str, routing: str) -> Any:
                    if domain == "bad.test":
                        raise ValueError("no queue for bad.test")
                    return make_queue_config()

                svc = _service(p, tmp_path, dns)
                async with svc:
                    port = svc.listen_port
                    with pytest.raises(smtplib.SMTPDataError) as refused:
                        await asyncio.to_thread(send, port, "u@bad.test", 1)
                    assert refused.value.smtp_code == 451
                    for n in range(5):
                        assert await asyncio.to_thread(send, port, f"u{n}@good.test", n) == {}
                    await until(lambda: len(sink.messages) == 5, what="5 deliveries")
                    assert svc.driver is not None and svc.driver.protocol_errors == 0
                    assert svc.driver.hook_failures == 1
        events = [type(ev).__name__ for _, ev in iter_events(tmp_path / "spool" /
                                                             "journal.sqlite")]
        assert events.count("MessageSubmitted") == 5  # the refused one was not journaled

    asyncio.run(scenario())
