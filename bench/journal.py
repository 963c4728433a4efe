"""Journal speed: durable appends, codec decoding, recovery time.

Three questions, each answered side by side in one run so the ratios hold
whatever the machine:

* appends/s that are really on disk (WAL, ``synchronous=FULL``) with group
  commit against one commit per append, at 1, 8, 32 and 128 concurrent
  appenders (asyncio tasks, each awaiting its commit, as SMTP sessions do);
* codec decode (and encode) speed in events/s for MessageSubmitted- and
  Response-sized events;
* recovery time of an N-event journal (default 1 M): read only, read +
  decode, read + decode + ``Engine.handle`` from scratch, and
  ``Engine.restore`` of a snapshot taken N/100 events before the end (the
  average tail under the service's ``snapshot_every`` = 20,000) plus the tail.

Two recovery journals.  The realistic one is the stream a real run makes:
the events the simulator feeds its engine for scenarios/million.toml cut to
about 150 k messages (submissions, pipelined replies, timers, connects, DNS
and MTA-STS answers, in the order they happened), journaled as the service
does it, each event after the engine accepted it.  The other holds only
MessageSubmitted, every message still queued: the worst case for state size
and snapshot size (a destination down for hours).  Each recovery is checked
against the run it recovers: the engine's counters and queued count after
recovery must equal those of the engine that made the journal.  Bodies are
left out of the recovery journals: they live in their own table, which
recovery does not read.  Run:

    python -m bench.journal                  # the full run (three minutes or so)
    python -m bench.journal --skip-appends --stream sim --profile   # where recovery goes
    python -m bench.journal --quick          # a smoke test, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import codec
from engine.effects import closes
from engine.events import Event, MessageSubmitted, Response
from engine.live.journal import Journal, iter_events
from engine.reply import Reply

BODY = b"x" * 1000  # a small message body rides with every append
ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "scenarios/million.toml"


def _message(i: int) -> MessageSubmitted:
    return MessageSubmitted(
        at=1.7e9 + i * 0.001, id=f"msg-{i:08d}", sender="bounce@news.example.com",
        recipients=(f"user{i}@d{i % 500}.example",), size=2048, tenant="acme",
        campaign="spring",
    )


def _response(i: int) -> Response:
    return Response(at=1.7e9 + i * 0.001, conn=i % 4096,
                    reply=Reply.make(250, "2.0.0", f"OK queued as {i:010x}"))


def _thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class AppendRun:
    """One append run: rate, batching, and where the CPU went (per wall second)."""

    rate: float
    appends: int
    commits: int
    loop_cpu: float  # the asyncio loop's thread: encoding, futures, the tasks
    writer_cpu: float  # the journal's writer thread: SQLite inserts and commits


def appends_per_second(
    directory: Path, concurrency: int, duration: float, max_batch: int | None
) -> AppendRun:
    """`concurrency` tasks appending (each awaiting its commit) for `duration` s."""
    path = directory / f"appends-{concurrency}-{max_batch}.sqlite"
    journal = Journal(path, max_batch=max_batch)
    writer = journal._writer.native_id
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

    w0, l0 = _thread_cpu(writer or 0), time.thread_time()
    elapsed = asyncio.run(run())
    loop_cpu, writer_cpu = time.thread_time() - l0, _thread_cpu(writer or 0) - w0
    journal.close()
    path.unlink()
    return AppendRun(count[0] / elapsed, count[0], journal.commits, loop_cpu / elapsed,
                     writer_cpu / elapsed)


def append_table(directory: Path, duration: float, rounds: int) -> None:
    """Group commit against one commit per append, same appenders, same run.

    Each round runs both for every concurrency back to back; the ratio is taken
    within a round and the median over rounds is printed."""
    print(f"journal files in {directory} (WAL, synchronous=FULL), {duration:g} s per run, "
          f"median of {rounds} round(s)")
    print(f"{'appenders':>9}  {'group commit/s':>14} {'appends/commit':>14}  "
          f"{'commit each/s':>13}  {'ratio':>6}  {'group: commits/s':>16} "
          f"{'loop cpu':>8} {'writer cpu':>10}")
    for c in (1, 8, 32, 128):
        group: list[AppendRun] = []
        single: list[float] = []
        ratio: list[float] = []
        for _ in range(rounds):
            g = appends_per_second(directory, c, duration, None)
            s_rate = appends_per_second(directory, c, duration, 1).rate
            group.append(g)
            single.append(s_rate)
            ratio.append(g.rate / s_rate)
        med = statistics.median
        rate = med(g.rate for g in group)
        per_commit = med(g.appends / max(g.commits, 1) for g in group)
        print(f"{c:>9}  {rate:>14,.0f} {per_commit:>14.1f}  "
              f"{med(single):>13,.0f}  {med(ratio):>5.1f}x  {rate / per_commit:>16,.0f} "
              f"{med(g.loop_cpu for g in group):>8.2f} {med(g.writer_cpu for g in group):>10.2f}")
    print("(loop/writer cpu: that thread's CPU seconds per wall second, group commit)")
    print()


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


class _Cut(Exception):
    """Raised from inside the simulator once the journal has its N events."""


@dataclass
class Stream:
    """A recovery journal as written, and what recovering it must reproduce."""

    name: str
    fresh: Callable[[], Any]  # a new Engine, as the recorded run started one
    policy: Callable[[], Any]  # the policy to restore a snapshot with
    final: dict[str, int]  # the recorded engine's counters after the last event
    queued: int  # ... and its queued_count
    mix: Counter[str] = field(default_factory=Counter)
    snapshot_bytes: int = 0
    snapshot_s: float = 0.0


def _write_snapshot(journal: Journal, eng: Any, stream: Stream) -> None:
    started = time.perf_counter()
    data = eng.snapshot()
    stream.snapshot_s = time.perf_counter() - started
    stream.snapshot_bytes = len(data)
    journal.write_snapshot(journal.last_seq, data).result()


def submitted_stream(journal: Journal, n: int, tail: int) -> Stream:
    """N MessageSubmitted, every message still queued: the worst case for state size."""
    from engine import Engine, Policy

    eng = Engine(Policy())
    stream = Stream("MessageSubmitted only", lambda: Engine(Policy()), Policy, {}, 0)
    chunk = 10_000
    for first in range(0, n, chunk):
        if first <= n - tail < first + chunk:
            cut = n - tail
            for lo, hi in ((first, cut), (cut, min(first + chunk, n))):
                evs = [_message(i) for i in range(lo, hi)]
                journal.append_sync(evs)
                for ev in evs:
                    eng.handle(ev)
                if hi == cut:
                    _write_snapshot(journal, eng, stream)
            continue
        evs = [_message(i) for i in range(first, min(first + chunk, n))]
        journal.append_sync(evs)
        for ev in evs:
            eng.handle(ev)
    stream.mix["MessageSubmitted"] = n
    stream.final, stream.queued = eng.counters, eng.queued_count
    return stream


def sim_stream(journal: Journal, n: int, tail: int, messages: int,
               scenario: str = SCENARIO) -> Stream:
    """The first N events the simulator feeds its engine, journaled as the service does.

    `scenario` (million.toml by default) cut to `messages` injected over 5
    minutes: five providers, 2 % tempfails, MTA-STS, so the stream holds
    submissions, connects, pipelined replies, timers, DNS and MTA-STS answers
    in the order a real run makes them.  Each event is journaled after
    `Engine.handle` accepted it, 10,000 per append, and a snapshot is
    written `tail` events before the end."""
    import random

    from engine import Engine
    from sim.driver import SimDriver
    from sim.scenario import Scenario
    from sim.traffic import arrivals

    sc = Scenario.from_toml(ROOT / scenario, [f"traffic[0].messages={messages}",
                                              'traffic[0].over="5min"'])
    driver = SimDriver(sc, keep_records=False)
    eng = driver.engine
    stream = Stream(f"simulated ({scenario}, {messages:,} messages over 5 min)",
                    lambda: Engine(sc.policy(), seed=sc.seed, epoch=sc.start_epoch),
                    sc.policy, {}, 0)
    handle = eng.handle
    buf: list[Event] = []
    count = [0]

    def recording(ev: Event) -> list[Any]:
        effects = handle(ev)
        buf.append(ev)
        count[0] += 1
        if len(buf) >= 10_000 or count[0] in (n - tail, n):
            journal.append_sync(buf)
            buf.clear()
            if count[0] == n - tail:
                del eng.handle, eng.handle_replies  # the snapshot pickles the engine's attributes
                _write_snapshot(journal, eng, stream)
                eng.handle = recording  # type: ignore[method-assign]
                eng.handle_replies = recording_replies  # type: ignore[method-assign]
            elif count[0] == n:
                raise _Cut
        return effects

    def recording_replies(at: float, conn: int, replies: list[Reply]) -> list[Any]:
        # the batch as the Response events it stands for, each recorded
        effects: list[Any] = []
        for reply in replies:
            fx = recording(Response(at=at, conn=conn, reply=reply))
            effects += fx
            if closes(fx, conn):
                break
        return effects

    eng.handle = recording  # type: ignore[method-assign]
    eng.handle_replies = recording_replies  # type: ignore[method-assign]
    with contextlib.suppress(_Cut):
        driver.run(arrivals(sc, random.Random(f"traffic:{sc.seed}")), float(sc.horizon))
    del eng.handle, eng.handle_replies
    if count[0] < n:
        raise ValueError(f"{scenario} with {messages:,} messages makes only {count[0]:,} "
                         f"events; need {n:,}: raise the message count")
    stream.final, stream.queued = eng.counters, eng.queued_count
    for _, ev in iter_events(journal.path):
        stream.mix[type(ev).__name__] += 1
    return stream


def recovery(directory: Path, n: int, kind: str, messages: int = 0,
             profile: bool = False) -> tuple[Stream, list[tuple[str, float, str]]]:
    """Seconds to recover an `n`-event journal of `kind` ("sim" or "submitted")."""
    path = directory / f"recovery-{kind}.sqlite"
    rows: list[tuple[str, float, str]] = []
    started = time.perf_counter()
    tail = max(1, n // 100)
    with Journal(path) as journal:
        stream = (sim_stream(journal, n, tail, messages) if kind == "sim"
                  else submitted_stream(journal, n, tail))
    rows.append(("build journal (run + append)", time.perf_counter() - started,
                 f"{n:,} events, {path.stat().st_size / 1e6:,.0f} MB"))
    rows.append(("take snapshot", stream.snapshot_s,
                 f"{stream.snapshot_bytes / 1e6:,.1f} MB at event {n - tail:,}"))

    started = time.perf_counter()
    conn = sqlite3.connect(path)
    blobs = [r[0] for r in conn.execute("SELECT data FROM events ORDER BY seq")]
    conn.close()
    read = time.perf_counter() - started
    decoded = sum(1 for _ in codec.decode_many(blobs))
    decode = time.perf_counter() - started
    rows.append(("read only (sqlite rows)", read, f"{n / read:,.0f} rows/s"))
    rows.append(("read + decode, all", decode, f"{decoded / decode:,.0f} events/s"))
    del blobs

    prof = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if prof is not None:
        prof.enable()
    eng = stream.fresh()
    n_seen = 0
    for _, ev in iter_events(path):  # every event from seq 1, snapshots ignored
        eng.handle(ev)
        n_seen += 1
    scratch = time.perf_counter() - started
    same = "state = the run's" if (eng.counters, eng.queued_count) == (
        stream.final, stream.queued) else "STATE DIFFERS from the run's"
    rows.append(("from scratch: read+decode+handle", scratch,
                 f"{n_seen:,} events, {eng.queued_count:,} queued, {same}"))
    rows.append(("  of which Engine.handle (by difference)", scratch - decode,
                 f"{n_seen / max(scratch - decode, 1e-9):,.0f} events/s"))

    started = time.perf_counter()
    with Journal(path) as journal:
        snap, events = journal.replay()
        assert snap is not None
        eng = type(stream.fresh()).restore(snap, stream.policy())
        n_tail = 0
        for ev in events:
            eng.handle(ev)
            n_tail += 1
    warm = time.perf_counter() - started
    if prof is not None:
        prof.disable()
    same = "state = the run's" if (eng.counters, eng.queued_count) == (
        stream.final, stream.queued) else "STATE DIFFERS from the run's"
    rows.append(("from snapshot: restore + tail", warm,
                 f"{n_tail:,} tail events, {eng.queued_count:,} queued, "
                 f"{scratch / warm:.1f}x faster, {same}"))
    path.unlink()
    if prof is not None:
        print(f"cProfile of both recoveries ({stream.name}), top functions by own time:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return stream, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--dir", default=None, help="where the SQLite files go (default: a temp dir)")
    p.add_argument("--duration", type=float, default=None, help="seconds per append run")
    p.add_argument("--events", type=int, default=None, help="events in the recovery journal")
    p.add_argument("--messages", type=int, default=None,
                   help="messages in the simulated run that makes the recovery journal")
    p.add_argument("--stream", action="append", choices=("sim", "submitted"),
                   help="which recovery journal (default: both)")
    p.add_argument("--profile", action="store_true", help="cProfile the recoveries")
    p.add_argument("--skip-appends", action="store_true", help="recovery only")
    p.add_argument("--skip-recovery", action="store_true", help="appends and codec only")
    p.add_argument("--rounds", type=int, default=None,
                   help="append runs per setting, median quoted (default 3, --quick 1)")
    args = p.parse_args(argv)
    duration = args.duration or (0.15 if args.quick else 2.0)
    n_events = args.events or (5_000 if args.quick else 1_000_000)
    n_codec = 5_000 if args.quick else 200_000
    rounds = args.rounds or (1 if args.quick else 3)
    messages = args.messages or max(1_000, n_events * 3 // 20)  # ~8 events per message

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="egress-bench-") as tmp:
        directory = Path(tmp)
        if not args.skip_appends:
            append_table(directory, duration, rounds)
            print(f"{'codec (events)':<18} {'encode/s':>12} {'decode/s':>12} {'bytes/event':>12}")
            for name, enc, dec, size in codec_speed(n_codec):
                print(f"{name:<18} {enc:>12,.0f} {dec:>12,.0f} {size:>12}")
            print()
        kinds = [] if args.skip_recovery else args.stream or ["sim", "submitted"]
        for kind in kinds:
            stream, rows = recovery(directory, n_events, kind, messages, args.profile)
            mix = ", ".join(f"{k} {v:,}" for k, v in stream.mix.most_common())
            print(f"recovery of a {n_events:,}-event journal: {stream.name}")
            print(f"  mix: {mix}")
            for name, seconds, note in rows:
                print(f"  {name:<40} {seconds:>8.2f} s   {note}")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
