"""engine.live.service: idle paths, queues and domains are reaped, and /metrics
stops listing them.

A real `Service` with a short ``reap_after``, a real DNS server giving each
domain its own MX host, and a real SMTP sink.  After one message to each
domain is delivered and the connections went idle and quit, the engine
holds no path, queue or domain, and the metrics port lists no path.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys
import urllib.request
from typing import Any

import pytest

from engine import flow, records
from engine.config import make_egress_path
from engine.live import memory, service
from engine.live.dns import LiveResolver
from engine.live.service import Service
from engine.policy import Policy
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message
from tests.support.smtp_servers import SinkServer

pytestmark = pytest.mark.timeout(60)

DOMAINS = [f"d{i}.test" for i in range(8)]
ZONE: dict[str, dict[str, Any]] = {}
for _d in DOMAINS:
    ZONE[_d] = {"MX": [(10, f"mx.{_d}")]}
    ZONE[f"mx.{_d}"] = {"A": ["127.0.0.1"]}


async def until(cond: Any, timeout: float = 20.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not met after {timeout}s")
        await asyncio.sleep(0.05)


def _service(tmp_path: pathlib.Path, sink: SinkServer, dns: DnsServer) -> Service:
    """A service delivering every path to `sink`, idle after 3 s, reaped every 0.5 s."""
    p = Policy()

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        return make_egress_path(smtp_port=sink.port, prohibited_hosts=[],
                                enable_tls="Disabled", enable_mta_sts=False,
                                idle_timeout="3s")

    resolver = LiveResolver(["127.0.0.1"], port=dns.port)
    return Service(p, tmp_path / "spool", listen=None, metrics_port=0,
                   reap_after=0.5, resolver=resolver)


def test_idle_paths_are_reaped_and_leave_the_metrics(tmp_path: pathlib.Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    handed_back: list[bool] = []

    def hand_back(release: Any, queued: int) -> None:  # the real one, counted
        handed_back.append(release is not None)
        memory.hand_back(release, queued)

    monkeypatch.setattr(service, "hand_back", hand_back)

    async def scenario() -> None:
        with DnsServer(ZONE) as dns:
            async with SinkServer() as sink:
                svc = _service(tmp_path, sink, dns)
                resolver = svc.resolver
                assert isinstance(resolver, LiveResolver)
                async with svc:
                    eng = svc.engine
                    assert eng is not None
                    flow._iso(0.0, 123.0)  # a due text, as a throttled burst makes them
                    assert flow._iso_second.cache_info().currsize
                    for n, dom in enumerate(DOMAINS):
                        await svc.submit("s@sender.test", [f"u@{dom}"], message(n))
                    await until(lambda: len(sink.messages) == len(DOMAINS), what="deliveries")
                    assert len(eng.paths) == len(DOMAINS)
                    url = f"http://127.0.0.1:{svc.metrics.port}/metrics"

                    def scrape() -> str:
                        with urllib.request.urlopen(url, timeout=5) as r:
                            return str(r.read().decode())

                    d0 = 'service="smtp_client:unspecified->mx.d0.test@smtp_client"'
                    assert d0 in await asyncio.to_thread(scrape)
                    await until(lambda: not eng.paths and not eng.queues and not eng.domains,
                                what="idle state reaped")
                    assert not eng.conns and not eng.site_names
                    assert resolver.prune(0.0, ()) == 0  # the sweep dropped their answers
                    assert all(t[0] == "reap" for t in eng.timers)
                    # the memory was handed back: journal page caches, gc, malloc_trim
                    await until(lambda: handed_back == [True] * len(handed_back) != [],
                                what="memory handed back")
                    assert svc.driver is not None and len(svc.driver.timers) <= 1
                    # memos filled by the burst are emptied: a text or reply kept
                    # from it would pin the allocator pool it was made in
                    assert not svc.driver.reply_cache and not records._TEXTS
                    assert flow._iso_second.cache_info().currsize == 0
                    text = await asyncio.to_thread(scrape)
                    assert 'service="smtp_client:' not in text
                    total = 'total_messages_delivered{service="smtp_client"}'
                    assert f"\n{total} {len(DOMAINS)}\n" in text
                    # a domain seen again is made again and delivered
                    await svc.submit("s@sender.test", ["again@d0.test"], message(99))
                    await until(lambda: len(sink.messages) == len(DOMAINS) + 1, what="again")

    asyncio.run(scenario())


def test_the_interned_names_of_reaped_domains_are_dropped(tmp_path: pathlib.Path) -> None:
    """The queue, domain, site and path names the burst interned are in the
    engine's own table, not the interpreter's (which never shrinks), and the
    reap sweep leaves that table holding none of them, in a smaller table."""

    async def scenario() -> None:
        with DnsServer(ZONE) as dns:
            async with SinkServer() as sink, _service(tmp_path, sink, dns) as svc:
                eng = svc.engine
                assert eng is not None
                for n, dom in enumerate(DOMAINS):
                    await svc.submit("s@sender.test", [f"u@{dom}"], message(n))
                await until(lambda: len(sink.messages) == len(DOMAINS), what="deliveries")
                burst = [n for n in eng.names if ".test" in n]
                assert set(burst) >= set(DOMAINS) | {f"mx.{d}" for d in DOMAINS} | set(eng.paths)
                for name in burst:  # not the interpreter's: an equal copy interns apart
                    assert sys.intern("".join(list(name))) is not name
                full = sys.getsizeof(eng.names)
                await until(lambda: not eng.paths and not eng.queues and not eng.domains,
                            what="idle state reaped")
                await until(lambda: not any(".test" in n for n in eng.names),
                            what="their names dropped")
                assert sys.getsizeof(eng.names) < full
                # a domain seen again interns its names again, and is delivered
                await svc.submit("s@sender.test", ["again@d0.test"], message(99))
                await until(lambda: len(sink.messages) == len(DOMAINS) + 1, what="again")
                assert "d0.test" in eng.names and "d1.test" not in eng.names

    asyncio.run(scenario())


def test_memory_is_handed_back_after_a_reap_and_once_more_later(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a sweep that dropped something, memory is handed back at once and
    once more `reap_after` seconds after the last such sweep (what was still in
    use at the first is free by then), though the engine sweeps no more."""
    seen: list[str] = []
    reaped = memory.HandBacks.__call__

    def on_reap(self: memory.HandBacks) -> None:
        seen.append("reaped")
        reaped(self)

    def hand_back(release: Any, queued: int) -> None:
        seen.append("back")
        memory.hand_back(release, queued)

    monkeypatch.setattr(memory.HandBacks, "__call__", on_reap)
    monkeypatch.setattr(service, "hand_back", hand_back)

    async def scenario() -> None:
        with DnsServer(ZONE) as dns:
            async with SinkServer() as sink, _service(tmp_path, sink, dns) as svc:
                eng = svc.engine
                assert eng is not None
                for n, dom in enumerate(DOMAINS[:3]):
                    await svc.submit("s@sender.test", [f"u@{dom}"], message(n))
                await until(lambda: len(sink.messages) == 3, what="deliveries")
                await until(lambda: not eng.paths and not eng.queues and not eng.domains,
                            what="idle state reaped")
                await until(lambda: seen[-3:] == ["reaped", "back", "back"],
                            what="the hand-back and the later one")
                assert not eng.timers  # no sweep is armed any more
                settled = len(seen)
                await asyncio.sleep(1.5)  # three times reap_after: nothing more comes
                assert len(seen) == settled, seen

    asyncio.run(scenario())
    # each reap is handed back at once (before the next sweep, 0.5 s later)
    assert all(seen[i + 1] == "back" for i, what in enumerate(seen) if what == "reaped"), seen
