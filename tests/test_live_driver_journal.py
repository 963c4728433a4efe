"""engine.live.driver in batch mode (`journal_batch=`), the reply read cache and the
wire-body cache, against a real loopback SMTP server.

The server here answers a pipelined MAIL/RCPT/DATA batch with ONE write, so the
driver reads the three replies at once: that is the case batching is for, and
it is exact (a loopback write of a few dozen bytes is one read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from engine.engine import Engine
from engine.events import MessageSubmitted, Response
from engine.live.dns import LiveResolver
from engine.live.driver import LiveDriver
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message, path_policy, zone_for

pytestmark = pytest.mark.timeout(30)


class BatchServer:
    """A tiny SMTP server on 127.0.0.1 that answers each pipelined group in one write."""

    def __init__(self, dot_reply: bytes = b"250 2.0.0 queued\r\n") -> None:
        self.dot_reply = dot_reply
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> BatchServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 batch.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-batch.test\r\n250 PIPELINING\r\n")
                elif verb == b"RSET":
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == b"MAIL":
                    owed = [b"250 2.1.0 ok\r\n"]
                    while (line := await reader.readline()).upper().startswith(b"RCPT"):
                        owed.append(b"250 2.1.5 ok\r\n")
                    owed.append(b"354 go ahead\r\n")  # `line` is DATA
                    writer.write(b"".join(owed))  # the whole group in one write
                    self.bodies.append(await reader.readuntil(b"\r\n.\r\n"))
                    writer.write(self.dot_reply)
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
        finally:
            writer.close()


@pytest.fixture
def dns() -> Any:
    with DnsServer(zone_for()) as server:
        yield server


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def _deliver(port: int, dns_port: int, n: int, *, limit: int = 1,
                   journal_batch: bool = True
                   ) -> tuple[LiveDriver, list[tuple[str, Any]], dict[str, bytes], Engine]:
    """Deliver `n` messages; return the driver, the journal/discard log, bodies, engine."""
    policy = path_policy(port, connection_limit=limit)
    eng = Engine(policy)
    log: list[tuple[str, Any]] = []
    bodies: dict[str, bytes] = {}
    driver = LiveDriver(
        eng, resolver=LiveResolver(["127.0.0.1"], port=dns_port, timeout=2.0),
        bodies=bodies.__getitem__,
        journal_batch=(lambda evs: log.append(("batch", list(evs)))) if journal_batch else None,
        journal=None if journal_batch else (lambda ev: log.append(("event", ev))),
        on_discard=lambda mid: log.append(("discard", mid)),
    )
    for i in range(n):
        mid = f"b{i}"
        bodies[mid] = message(i)
        driver.feed(MessageSubmitted(at=time.time(), id=mid, sender="s@sender.test",
                                     recipients=("user@example.com",), size=len(bodies[mid])))
    deadline = time.monotonic() + 10
    while eng.queued_count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert eng.queued_count == 0
    await driver.abort_all()
    assert driver.protocol_errors == 0
    return driver, log, bodies, eng


def test_one_read_of_a_pipelined_group_is_one_batch_in_the_engines_order(
        dns: DnsServer) -> None:
    async def scenario() -> None:
        async with BatchServer() as server:
            _, log, _, eng = await _deliver(server.port, dns.port, 3)
            batches = [evs for kind, evs in log if kind == "batch"]
            events = [ev for evs in batches for ev in evs]
            codes = [[ev.reply.code for ev in evs if type(ev) is Response] for evs in batches]
            groups = [c for c in codes if c and c[-1] == 354]
            assert len(groups) == 3  # one batch per group read (RSET's 250 may join it)
            assert all(g[-3:] == [250, 250, 354] for g in groups), codes
            assert len(batches) < len(events)
            # the journal is a fold: replaying the batches gives the same engine
            twin = Engine(path_policy(server.port, connection_limit=1))
            twin.hostname = eng.hostname  # what the driver gave it (the EHLO name)
            for ev in events:
                twin.handle(ev)
            assert twin.snapshot() == eng.snapshot()
            # the three submissions were fed from outside: each handed over at once
            assert [evs for evs in batches[:3]] == [[ev] for ev in events[:3]]

    run(scenario())


def test_discard_is_passed_on_only_after_the_events_that_finished_the_message(
        dns: DnsServer) -> None:
    async def scenario() -> None:
        async with BatchServer() as server:
            _, log, _, _ = await _deliver(server.port, dns.port, 4)
            handed: list[Any] = []
            for kind, what in log:
                if kind == "batch":
                    handed.extend(what)
                    continue
                # the final 250 to this message's dot is already in the journal
                dots = [ev for ev in handed if type(ev) is Response
                        and ev.reply.text == "queued"]
                assert len(dots) == int(what[1:]) + 1, (what, len(dots))
            assert [what for kind, what in log if kind == "discard"] == ["b0", "b1", "b2", "b3"]

    run(scenario())


def test_per_event_mode_hands_each_event_over_at_once(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with BatchServer() as server:
            _, log, _, _ = await _deliver(server.port, dns.port, 2, journal_batch=False)
            kinds = [kind for kind, _ in log]
            assert "batch" not in kinds
            assert kinds.count("discard") == 2
            # a Discard follows its own dot reply immediately, as before
            i = kinds.index("discard")
            assert log[i - 1][1].reply.text == "queued"

    run(scenario())


def test_reads_are_parsed_once_then_served_from_the_cache(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with BatchServer() as server:
            driver, _, _, _ = await _deliver(server.port, dns.port, 3)
            group = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"
            (r1, _, r3) = driver.reply_cache[group]
            assert (r1.code, str(r1.enhanced), r1.text) == (250, "2.1.0", "ok")
            assert (r3.code, r3.enhanced, r3.text) == (354, None, "go ahead")
            assert b"250 2.0.0 queued\r\n" in driver.reply_cache

    run(scenario())


def test_a_body_is_encoded_once_until_its_discard(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with BatchServer() as server:
            policy = path_policy(server.port)
            eng = Engine(policy)
            calls: list[str] = []
            content = b"Subject: x\r\n\r\n.dot\nbare lf\r\n"

            def body(mid: str) -> bytes:
                calls.append(mid)
                return content

            driver = LiveDriver(eng, resolver=LiveResolver(["127.0.0.1"], port=dns.port),
                                bodies=body)
            first = driver._wire_body("m1")
            again = driver._wire_body("m1")
            assert first is again and calls == ["m1"]
            assert first == b"Subject: x\r\n\r\n..dot\r\nbare lf\r\n.\r\n"
            from engine.effects import Discard

            driver._discard(Discard(message_id="m1"))
            driver._wire_body("m1")
            assert calls == ["m1", "m1"]  # forgotten on Discard, read again
            await driver.abort_all()

    run(scenario())


def test_both_journal_modes_at_once_is_refused(dns: DnsServer) -> None:
    async def scenario() -> None:
        eng = Engine(path_policy(1))
        with pytest.raises(ValueError, match="journal= or journal_batch="):
            LiveDriver(eng, resolver=None, bodies=lambda m: b"", journal=print,
                       journal_batch=print)

    run(scenario())
