"""Journal speed: durable appends, codec decoding, recovery time.

Three questions, each answered side by side in one run so the ratios hold
whatever the machine:

* appends/s that are really on disk (WAL, ``synchronous=FULL``) with group
  commit against one commit per append, at 1, 8, 32 and 128 concurrent
  appenders (asyncio tasks, each awaiting its commit, as SMTP sessions do);
* codec decode (and encode) speed in events/s for MessageSubmitted- and
  Response-sized events;
* recovery time of an N-event journal (default 1 M): read + decode only,
  read + decode + ``Engine.handle`` from scratch, and ``Engine.restore`` of a
  snapshot taken 1 % before the end plus the tail.

The recovery journal holds only MessageSubmitted events, every message still
queued: the worst case for state size (a destination down for hours), and a
stream the engine accepts without a simulated world.  Run:

    python -m bench.journal                  # the full run (a minute or so)
    python -m bench.journal --quick          # a smoke test, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import codec
from engine.events import Event, MessageSubmitted, Response
from engine.live.journal import Journal, iter_events
from engine.reply import Reply

BODY = b"x" * 1000  # a small message body rides with every append


def _message(i: int) -> MessageSubmitted:
    return MessageSubmitted(
        at=1.7e9 + i * 0.001, id=f"msg-{i:08d}", sender="bounce@news.example.com",
        recipients=(f"user{i}@d{i % 500}.example",), size=2048, tenant="acme",
        campaign="spring",
    )


def _response(i: int) -> Response:
    return Response(at=1.7e9 + i * 0.001, conn=i % 4096,
                    reply=Reply.make(250, "2.0.0", f"OK queued as {i:010x}"))


def appends_per_second(
    directory: Path, concurrency: int, duration: float, max_batch: int | None
) -> tuple[float, int, int]:
    """(appends/s, appends, commits) for `concurrency` tasks appending for `duration` s."""
    path = directory / f"appends-{concurrency}-{max_batch}.sqlite"
    journal = Journal(path, max_batch=max_batch)
    count = [0]

    async def appender(w: int, deadline: float) -> None:
        k = 0
        while time.perf_counter() < deadline:
            i = w * 10_000_000 + k
            await journal.append([_message(i)], bodies={f"msg-{i:08d}": BODY})
            k += 1
            count[0] += 1

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(appender(w, started + duration) for w in range(concurrency)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    journal.close()
    path.unlink()
    return count[0] / elapsed, count[0], journal.commits


def _rate(n: int, fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return n / (time.perf_counter() - started)


def codec_speed(n: int) -> list[tuple[str, float, float, int]]:
    """(event kind, encode events/s, decode events/s, bytes per event)."""
    rows = []
    for name, make in (("MessageSubmitted", _message), ("Response", _response)):
        evs: list[Event] = [make(i) for i in range(n)]
        blobs: list[bytes] = []
        enc = _rate(n, lambda evs=evs, blobs=blobs: blobs.extend(map(codec.encode_event, evs)))
        dec = _rate(n, lambda blobs=blobs: list(codec.decode_many(blobs)))
        rows.append((name, enc, dec, sum(map(len, blobs)) // n))
    mixed: list[Event] = [(_message if i % 2 else _response)(i) for i in range(n)]
    stream = codec.encode_events(mixed)
    rows.append(("stream, mixed", _rate(n, lambda: codec.encode_events(mixed)),
                 _rate(n, lambda: codec.decode_events(stream)), (len(stream) - 8) // n))
    return rows


def recovery(directory: Path, n: int) -> list[tuple[str, float, str]]:
    """Seconds to recover an `n`-event journal, three ways."""
    from engine import Engine, Policy

    path = directory / "recovery.sqlite"
    rows: list[tuple[str, float, str]] = []
    started = time.perf_counter()
    tail = max(1, n // 100)
    with Journal(path) as journal:
        chunk = 10_000
        for first in range(0, n - tail, chunk):
            journal.append_sync([_message(i) for i in range(first, min(first + chunk, n - tail))])
        eng = Engine(Policy())
        _, events = journal.replay()
        for ev in events:
            eng.handle(ev)
        snap_started = time.perf_counter()
        snapshot = eng.snapshot()
        snap_time = time.perf_counter() - snap_started
        journal.write_snapshot(journal.last_seq, snapshot).result()
        journal.append_sync([_message(i) for i in range(n - tail, n)])
    rows.append(("build journal + first replay", time.perf_counter() - started,
                 f"{n:,} events, {path.stat().st_size / 1e6:,.0f} MB"))
    rows.append(("take snapshot", snap_time, f"{len(snapshot) / 1e6:,.1f} MB, "
                 f"{eng.queued_count:,} messages"))

    started = time.perf_counter()
    conn = sqlite3.connect(path)
    blobs = [r[0] for r in conn.execute("SELECT data FROM events ORDER BY seq")]
    conn.close()
    read = time.perf_counter() - started
    decoded = sum(1 for _ in codec.decode_many(blobs))
    rows.append(("read only (sqlite rows)", read, f"{n / read:,.0f} rows/s"))
    rows.append(("read + decode, all", time.perf_counter() - started,
                 f"{decoded / (time.perf_counter() - started):,.0f} events/s"))
    del blobs

    started = time.perf_counter()
    eng = Engine(Policy())
    n_seen = 0
    for _, ev in iter_events(path):  # every event from seq 1, snapshots ignored
        eng.handle(ev)
        n_seen += 1
    scratch = time.perf_counter() - started
    rows.append(("from scratch: read+decode+handle", scratch,
                 f"{n_seen:,} events, {eng.queued_count:,} queued"))

    started = time.perf_counter()
    with Journal(path) as journal:
        snap, events = journal.replay()
        assert snap is not None
        eng = Engine.restore(snap, Policy())
        n_tail = 0
        for ev in events:
            eng.handle(ev)
            n_tail += 1
    warm = time.perf_counter() - started
    rows.append(("from snapshot: restore + tail", warm,
                 f"{n_tail:,} tail events, {eng.queued_count:,} queued, "
                 f"{scratch / warm:.1f}x faster"))
    path.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--dir", default=None, help="where the SQLite files go (default: a temp dir)")
    p.add_argument("--duration", type=float, default=None, help="seconds per append run")
    p.add_argument("--events", type=int, default=None, help="events in the recovery journal")
    args = p.parse_args(argv)
    duration = args.duration or (0.15 if args.quick else 2.0)
    n_events = args.events or (5_000 if args.quick else 1_000_000)
    n_codec = 5_000 if args.quick else 200_000

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="egress-bench-") as tmp:
        directory = Path(tmp)
        print(f"journal files in {directory} (WAL, synchronous=FULL), {duration:g} s per run")
        print(f"{'appenders':>9}  {'group commit/s':>14} {'appends/commit':>14}  "
              f"{'commit each/s':>13}  {'ratio':>6}")
        for c in (1, 8, 32, 128):
            g_rate, g_n, g_commits = appends_per_second(directory, c, duration, None)
            s_rate, _, _ = appends_per_second(directory, c, duration, 1)
            print(f"{c:>9}  {g_rate:>14,.0f} {g_n / max(g_commits, 1):>14.1f}  "
                  f"{s_rate:>13,.0f}  {g_rate / s_rate:>5.1f}x")
        print()
        print(f"{'codec (events)':<18} {'encode/s':>12} {'decode/s':>12} {'bytes/event':>12}")
        for name, enc, dec, size in codec_speed(n_codec):
            print(f"{name:<18} {enc:>12,.0f} {dec:>12,.0f} {size:>12}")
        print()
        print(f"recovery of a {n_events:,}-event journal")
        for name, seconds, note in recovery(directory, n_events):
            print(f"  {name:<34} {seconds:>8.2f} s   {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
