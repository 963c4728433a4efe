"""Core speed and memory: Engine.handle events/s, cost vs queue size, bytes per message.

Three figures, measured in one run:

* **events/s** through `Engine.handle` on a steady delivery workload: a message
  submitted, its pipelined MAIL/RCPT/DATA replies, the reply to the dot, on
  reused connections (1 in 4 recipients deferred, so retries are scheduled,
  and a transaction with no accepted recipient drops its connection, so
  Connected, banner and EHLO replies recur), the domain resolved again every
  5 s (Resolve/Resolved), promote timers; time is summed around `handle` only,
  the scripted peer excluded.
* **per-event cost at 10 k / 100 k / 1 M queued messages**: the same workload
  run beside a backlog of N messages waiting in the scheduled queue (their
  domain's MX lookup failed; retry in a day, so the backlog does not churn
  during the run), so every retry insertion and promotion works against a
  structure of size N.  Flat means O(log n) is not showing up.
* **bytes per queued message** (tracemalloc): N submissions into a suspended
  path, the allocations still live afterwards divided by N; once counting the
  message's own strings (id, recipient) built in the measured window, once
  with the events prepared beforehand (the engine's own overhead).

    python -m bench.core            # 10k, 100k, 1M (about a minute)
    python -m bench.core --quick    # 10k, 100k
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

from engine.config import make_egress_path
from engine.effects import Connect, Resolve, Send, Verb
from engine.engine import Engine
from engine.events import (
    Connected,
    DnsFailure,
    Event,
    MessageSubmitted,
    MxRecord,
    Resolved,
    ResolveFailed,
    Response,
    Suspend,
    TimerFired,
)
from engine.policy import Policy
from engine.queue_config import make_queue_config
from engine.reply import Reply

LIVE_MX = (MxRecord(preference=10, host="mx.live.test", addresses=("192.0.2.1",)),)
BACK_MX = (MxRecord(preference=10, host="mx.backlog.test", addresses=("192.0.2.2",)),)
BACKLOG_PATH = "unspecified->mx.backlog.test"
ANSWERS = {"live.test": LIVE_MX, "backlog.test": BACK_MX}
DNS_TTL = 5.0  # the live domain is resolved again every 5 s of workload time
R220 = Reply.make(220, None, "hi")
R250 = Reply.make(250, "2.0.0", "ok")
R354 = Reply.make(354, None, "go")
R451 = Reply.make(451, "4.2.0", "later")
EHLO = Reply(code=250, text="mx hello\nPIPELINING")


def make_policy() -> Policy:
    p = Policy()
    live = make_egress_path(enable_mta_sts=False, connection_limit=8, idle_timeout=3600,
                            max_deliveries_per_connection=10**9)
    backlog = make_egress_path(enable_mta_sts=False, max_ready=1024)

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        return backlog if "backlog" in site else live

    slow = make_queue_config(retry_interval="1d", max_age="30d")
    normal = make_queue_config(retry_interval="2s")  # deferred ones come back: promote timers

    @p.on("get_queue_config")
    def _queue(domain: str, tenant: str, campaign: str, routing: str) -> Any:
        return slow if domain == "waiting.test" else normal

    return p


class Bench:
    """An engine plus a minimal scripted peer that answers in order."""

    def __init__(self) -> None:
        self.eng = Engine(make_policy(), seed=1, epoch=1_700_000_000.0)
        self.handle_time = 0.0
        self.events = 0
        self.pending: list[Event] = []
        self.now = 0.0
        self.n = 0
        self.record: list[Event] | None = None  # every event fed, when recording
        self.feed(Suspend(at=0.0, path=BACKLOG_PATH))

    def feed(self, ev: Event) -> None:
        queue = [ev]
        handle = self.eng.handle
        clock = time.perf_counter
        while queue:
            e = queue.pop()
            if self.record is not None:
                self.record.append(e)
            t0 = clock()
            fx = handle(e)
            self.handle_time += clock() - t0
            self.events += 1
            at = e.at
            replies: list[Event] = []
            for f in fx:
                tf = type(f)
                if tf is Send:
                    for c in f.commands:
                        v = c.verb
                        if v is Verb.RCPT:
                            r = R451 if c.arg.startswith("d") else R250
                        elif v is Verb.DATA:
                            r = R354
                        elif v is Verb.EHLO:
                            r = EHLO
                        else:
                            r = R250
                        replies.append(Response(at=at, conn=f.conn, reply=r))
                elif tf is Connect:
                    replies.append(Connected(at=at, conn=f.conn))
                    replies.append(Response(at=at, conn=f.conn, reply=R220))
                elif tf is Resolve and f.domain in ANSWERS:  # waiting.test stays pending
                    replies.append(Resolved(at=at, domain=f.domain, mx=ANSWERS[f.domain],
                                            ttl=DNS_TTL))
            queue.extend(reversed(replies))

    def backlog(self, n: int) -> None:
        """n messages parked on DNS, then all scheduled a day out by a SERVFAIL."""
        for i in range(n):
            self.feed(MessageSubmitted(at=self.now, id=f"b{i}", sender="s@x.org",
                                       recipients=(f"u{i}@waiting.test",), size=1000))
        self.feed(ResolveFailed(at=self.now, domain="waiting.test", kind=DnsFailure.SERVFAIL))

    def workload(self, n: int) -> tuple[int, float]:
        """n live messages; returns (events, seconds in handle)."""
        e0, t0 = self.events, self.handle_time
        for _ in range(n):
            self.n += 1
            self.now += 0.001
            local = "d" if self.n % 4 == 0 else "u"
            self.feed(MessageSubmitted(at=self.now, id=f"w{self.n}", sender="s@x.org",
                                       recipients=(f"{local}{self.n}@live.test",), size=1000))
            timers = self.eng.timers
            promote = timers.get(("promote", ""))
            if promote is not None and promote <= self.now:
                self.feed(TimerFired(at=self.now, timer=("promote", "")))
        return self.events - e0, self.handle_time - t0


def per_event(n_backlog: int, n_work: int) -> tuple[float, float, int]:
    """(us/event, events/s, scheduled) on the workload beside a backlog of n_backlog.

    The run is recorded, then replayed into a fresh engine (the engine is
    deterministic, so it sees exactly the same events); only the replay of the
    workload part is timed, in CPU time of this process, so neither the
    scripted peer nor other load on the machine is counted."""
    b = Bench()
    b.record = []
    b.backlog(n_backlog)
    b.workload(min(n_work, 2000))  # warm up
    start = len(b.record)
    b.workload(n_work)
    events = b.record
    b.record = None
    del b
    eng = Engine(make_policy(), seed=1, epoch=1_700_000_000.0)
    handle = eng.handle
    for ev in events[:start]:
        handle(ev)
    work = events[start:]
    gc.collect()
    gc.disable()  # as in timeit: collector pauses are not the engine's per-event cost
    try:
        t0 = time.process_time()
        for ev in work:
            handle(ev)
        secs = time.process_time() - t0
    finally:
        gc.enable()
    return secs / len(work) * 1e6, len(work) / secs, eng.scheduled_count


def bytes_per_message(n: int, prebuilt: bool) -> float:
    b = Bench()
    evs: list[MessageSubmitted] = []
    if prebuilt:
        evs = [MessageSubmitted(at=0.0, id=f"b{i}", sender="s@x.org",
                                recipients=(f"u{i}@backlog.test",), size=1000)
               for i in range(n)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    if prebuilt:
        for ev in evs:
            b.eng.handle(ev)
    else:
        b.backlog(n)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert b.eng.queued_count == n
    return used / n


def build() -> str:
    """Which build of the engine this process runs: the Python sources, or the
    optional mypyc build (setup.py, ``EGRESS_COMPILE=1``) and how many of the
    loaded egress modules are compiled.  Benchmarks print it, so a figure
    names its build."""
    import sys

    mods = [m for name, m in list(sys.modules.items())
            if name.split(".")[0] in ("engine", "sim") and getattr(m, "__file__", None)]
    compiled = sorted(m.__name__ for m in mods if not m.__file__.endswith(".py"))
    if not compiled:
        return "pure Python"
    return f"compiled (mypyc): {len(compiled)} of the {len(mods)} egress modules loaded"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k and 100k only")
    args = ap.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    print(f"build: {build()}")
    print("Engine.handle on the delivery workload (time inside handle only)")
    print(f"{'queued backlog':>15} {'scheduled':>10} {'us/event':>9} {'events/s':>10}")
    base = None
    for n in sizes:
        us, eps, sched = per_event(n, 40_000)
        base = base or us
        print(f"{n:>15,} {sched:>10,} {us:>9.2f} {eps:>10,.0f}   ({us / base:.2f}x)")
    n_mem = 100_000
    with_strings = bytes_per_message(n_mem, prebuilt=False)
    engine_only = bytes_per_message(n_mem, prebuilt=True)
    print(f"\nbytes per queued message ({n_mem:,} queued, tracemalloc)")
    print(f"  including the message's id/recipient strings: {with_strings:8.0f}")
    print(f"  engine overhead only (events built beforehand): {engine_only:6.0f}")


if __name__ == "__main__":
    main()
