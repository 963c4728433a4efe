"""The egress contender of `bench.delivery`, run inside a worker process.

Split from `bench.delivery` (the orchestrator: peers, rounds, the table)
because this is the part that measures egress itself: an `Engine`, a
`LiveDriver` and a `LiveResolver` asking a loopback dnslib server, with the
N messages "already in the spool" (their `MessageSubmitted` events and
bodies committed to the SQLite `Journal` before the clock starts).  The
driver journals as `egress deliver` does: in batch mode (one append per loop
iteration, in the engine's order; see `engine.live.driver`), with every body
dropped on `Discard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from bench import peers

CONNECTIONS = 32
SIZE = 2000
DOMAIN = "sink.test"


def cpu_seconds() -> float:
    """CPU seconds of this process so far, every thread (the journal writer too)."""
    t = os.times()
    return t.user + t.system


def egress_policy(sink_port: int, per_connection: int, max_ready: int) -> Any:
    """Every path: 32 connections to the sink's port, loopback allowed, no TLS."""
    from engine.config import make_egress_path
    from engine.policy import Policy

    cfg = make_egress_path(
        connection_limit=CONNECTIONS, smtp_port=sink_port, prohibited_hosts=[],
        enable_tls="Disabled", enable_mta_sts=False, ehlo_domain="egress.bench.test",
        # All N are due at once: a ready queue smaller than N would push the rest
        # back 0-60 s (KumoMTA's ReadyQueueWasFull) and measure that instead.
        max_ready=max_ready, max_deliveries_per_connection=per_connection or 1024,
    )
    policy = Policy()

    @policy.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        return cfg

    return policy


async def egress_deliver(sink_port: int, dns_port: int, *, messages: int, recipients: int,
                         per_connection: int, journal_dir: str | None, timeout: float
                         ) -> dict[str, Any]:
    """Deliver `messages` through Engine + LiveDriver; returns when all are finished."""
    from engine.engine import Engine
    from engine.events import MessageSubmitted
    from engine.live.dns import LiveResolver
    from engine.live.driver import LiveDriver
    from engine.live.journal import Journal

    body = peers.message(SIZE)
    rcpts = tuple(f"user{r}@{DOMAIN}" for r in range(recipients))
    now = time.time()
    events = [MessageSubmitted(at=now, id=f"m{i:06d}", sender=peers.SENDER, recipients=rcpts,
                               size=len(body)) for i in range(messages)]
    bodies = {ev.id: body for ev in events}
    journal = Journal.in_spool(journal_dir) if journal_dir else None
    if journal is not None:  # "already in the spool": journaled before the clock starts
        for k in range(0, messages, 1000):
            chunk = events[k:k + 1000]
            journal.append_sync(chunk, {ev.id: body for ev in chunk})
    finished = asyncio.Event()
    counts = {"Delivery": 0, "TransientFailure": 0, "Bounce": 0, "discarded": 0}

    def record(rec: dict[str, Any]) -> None:
        kind = rec.get("type", "")
        if kind in counts:
            counts[kind] += 1

    def discard(message_id: str) -> None:
        counts["discarded"] += 1
        if journal is not None:
            journal.drop_body(message_id)
        if counts["discarded"] == messages:
            finished.set()

    last: list[Any] = [None]

    def journal_events(evs: list[Any]) -> None:
        # The submissions are in the spool already (committed above).
        rows = [ev for ev in evs if type(ev) is not MessageSubmitted]
        if journal is not None and rows:
            last[0] = journal.append(rows)

    eng = Engine(egress_policy(sink_port, per_connection, messages + 1024))
    driver = LiveDriver(eng, resolver=LiveResolver(["127.0.0.1"], port=dns_port, timeout=2.0),
                        bodies=bodies.__getitem__, records=record,
                        journal_batch=journal_events if journal is not None else None,
                        on_discard=discard)
    cpu0 = cpu_seconds()
    started = time.monotonic()
    for ev in events:
        driver.feed(ev)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished.wait(), timeout)
    done = time.monotonic()
    cpu = (cpu_seconds() - cpu0) / max(done - started, 1e-9)
    driver.flush_journal()
    if last[0] is not None:
        await last[0]  # the journal has caught up with the last event
    journaled = time.monotonic()
    await driver.abort_all()
    if journal is not None:
        journal.close()
    return {"started": started, "done": done, "journaled": journaled, "counts": counts, "cpu": cpu,
            "protocol_errors": driver.protocol_errors, "engine_queued": eng.queued_count}


