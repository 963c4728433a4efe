"""Memory: bytes per queued message in the engine, and RSS of ``egress deliver``.

Issue 7, benchmark 5.  Two figures that answer different questions:

* **bytes per queued message** (tracemalloc, in this process): what the
  engine itself keeps per message, measured by `bench.core.bytes_per_message`
  (N submissions into a suspended path; the allocations still live afterwards
  divided by N), here at 100 k and 1 M queued.  Exact and noise-free, but it
  sees only Python allocations made by the engine.
* **RSS of ``egress deliver`` holding N queued messages** (default 100 k): the
  real process, as an operator runs it.  Every path is ``suspended = true`` so
  nothing leaves; ``max_ready`` is N + 1024 so every message sits in its ready
  queue instead of bouncing between the ready and scheduled queues
  (KumoMTA's ReadyQueueWasFull), which would measure churn, not holding.  The
  MX is answered by a loopback dnslib server (`bench.peers.DnsServer`).  N
  messages of 2 KB are injected through the SMTP listener by ``smtp-source -d
  -s 32`` (or 32 aiosmtplib clients where Postfix's tools are missing); the
  bench polls ``--metrics-port`` until ``ready_count`` is N, then reads
  ``VmRSS``/``VmHWM`` from /proc.  The idle baseline is the RSS once the
  service listens, so "RSS - idle" / N is what holding a message costs the
  process (engine state, allocator slack, SQLite's page cache amortised).
  The spool's size on disk is reported beside it: bodies live in the SQLite
  journal, not in memory.  Then the service is stopped (SIGTERM) and started
  again on the same spool, and the same is read after recovery: the
  difference between the two RSS figures is what injection left behind
  (freed but not returned to the OS) rather than what the queue needs.

Why a subprocess and not the Python API: RSS is a property of a process, and
this one must not carry the bench's own heap.  Everything is on loopback and
every wait is bounded (``--timeout``).

    python -m bench.memory                 # 1 M tracemalloc + 100 k RSS
    python -m bench.memory --quick         # 10 k tracemalloc + 2 k RSS

One message to each of 10 k domains, delivered, then reaped (issue 13.6):
`bench.memory_reap` (``python -m bench.memory_reap``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import peers

DOMAIN = "hold.test"
SIZE = 2000
SESSIONS = 32
_POLICY = """\
# Written by bench.memory: every path suspended, so every message stays queued.
from engine import Policy, make_egress_path

policy = Policy()
_cfg = make_egress_path(
    suspended=True, prohibited_hosts=[], enable_tls="Disabled", enable_mta_sts=False,
    ehlo_domain="egress.bench.test", max_ready={max_ready},
)


@policy.on("get_egress_path_config")
def _path(domain, source_name, site_name):
    return _cfg
"""
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", re.M)


@dataclass
class RssRun:
    """One round of the RSS benchmark; byte figures are in bytes."""

    messages: int
    idle: int  # VmRSS once listening
    held: int  # VmRSS with every message in its ready queue
    anon: int  # RssAnon - idle RssAnon at that point (heap, not file pages)
    peak: int  # VmHWM at that point
    recovered: int  # VmRSS after a restart on the same spool, all recovered
    recover_s: float  # start -> all recovered and listening
    spool: int  # bytes on disk in --spool
    inject_s: float  # first injection -> the engine holds them all
    injector: str

    @property
    def per_message(self) -> float:
        """(held - idle) / messages."""
        return (self.held - self.idle) / self.messages

    @property
    def per_message_recovered(self) -> float:
        """(recovered - idle) / messages: the queue without what injection left."""
        return (self.recovered - self.idle) / self.messages


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (``VmRSS``, ``VmHWM``, ``RssAnon``) in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{key}:\s+(\d+) kB$", text, re.M)
    if found is None:
        raise RuntimeError(f"/proc/{pid}/status has no {key} line")
    return int(found.group(1)) * 1024


_TOTALS = ("", '{service="smtp_client"}', '{service="esmtp_listener"}')


def scrape(port: int) -> dict[str, float]:
    """The totals of ``http://127.0.0.1:PORT/metrics``, name -> value: the unlabelled
    samples and, as kumod labels its sums, those of ``service="smtp_client"`` (or
    ``"esmtp_listener"`` for receptions)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(3)) for m in _SAMPLE.finditer(text)
            if (m.group(2) or "") in _TOTALS}


def wait_held(proc: subprocess.Popen[bytes], metrics_port: int, n: int, timeout: float) -> None:
    """Return once the service's ready queues hold `n` messages; raise after `timeout` s."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"egress deliver exited with {proc.returncode}")
        try:
            seen = scrape(metrics_port)
        except OSError:
            seen = {}
        if seen.get("ready_count", 0) >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"after {timeout:g} s the engine holds {seen.get('ready_count', 0):.0f} "
                       f"of {n} messages in its ready queues "
                       f"(received {seen.get('total_messages_received', 0):.0f})")


def dir_size(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Deliver:
    """``egress deliver`` on loopback with a metrics port; stops it by its own pid."""

    def __init__(self, workdir: Path, dns_port: int, traced: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.traced = traced  # a launcher script for `python -c`, instead of -m engine.cli
        self.extra = extra  # more `egress deliver` arguments
        self.dns_port = dns_port
        self.port = peers.free_port()
        self.metrics_port = peers.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> subprocess.Popen[bytes]:
        """Start it and return once both the SMTP and the metrics ports answer."""
        launch = ["-c", self.traced] if self.traced else ["-m", "engine.cli"]
        cmd = [sys.executable, *launch, "deliver",
               "--policy", str(self.workdir / "policy.py"),
               "--spool", str(self.workdir / "spool"), "--listen", f"127.0.0.1:{self.port}",
               "--resolver", f"127.0.0.1:{self.dns_port}",
               "--metrics-port", str(self.metrics_port), *self.extra]
        log = open(self.workdir / "egress.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(cmd, cwd=peers.ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            peers.wait_listening("127.0.0.1", self.port, timeout, self.proc)
            peers.wait_listening("127.0.0.1", self.metrics_port, timeout, self.proc)
        except (peers.PeerUnavailable, TimeoutError):
            self.stop()
            tail = (self.workdir / "egress.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"egress deliver did not come up: {tail}") from None
        return self.proc

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (a graceful stop writes its snapshot), SIGKILL after `grace` s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def inject(port: int, n: int, timeout: float) -> str:
    """N messages of 2 KB over 32 sessions into 127.0.0.1:port; returns the injector's name."""
    try:
        peers.run_smtp_source("127.0.0.1", port, timeout=timeout, sessions=SESSIONS,
                              messages=n, size=SIZE, to=f"user@{DOMAIN}")
        return "smtp-source"
    except peers.PeerUnavailable:
        sent = asyncio.run(asyncio.wait_for(peers.aiosmtplib_send(
            "127.0.0.1", port, messages=n, connections=SESSIONS, size=SIZE,
            domain=DOMAIN), timeout))
        if sent != n:
            raise RuntimeError(f"aiosmtplib got {sent} of {n} messages accepted") from None
        return "aiosmtplib"


def rss_run(n: int, timeout: float, dns: peers.DnsServer) -> RssRun:
    """One round: start, inject `n`, read RSS; restart on the spool, read it again."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        (work / "policy.py").write_text(_POLICY.format(max_ready=n + 1024))
        svc = Deliver(work, dns.port)
        try:
            proc = svc.start(timeout)
            time.sleep(0.5)  # let start-up settle (imports, first loop iterations)
            idle = proc_status(proc.pid, "VmRSS")
            idle_anon = proc_status(proc.pid, "RssAnon")
            started = time.monotonic()
            injector = inject(svc.port, n, timeout)
            wait_held(proc, svc.metrics_port, n, timeout)
            inject_s = time.monotonic() - started
            held, peak = proc_status(proc.pid, "VmRSS"), proc_status(proc.pid, "VmHWM")
            anon = proc_status(proc.pid, "RssAnon") - idle_anon
        finally:
            svc.stop()
        spool = dir_size(work / "spool")
        again = Deliver(work, dns.port)
        try:
            started = time.monotonic()
            proc = again.start(timeout)
            wait_held(proc, again.metrics_port, n, timeout)
            recover_s = time.monotonic() - started
            recovered = proc_status(proc.pid, "VmRSS")
        finally:
            again.stop()
        return RssRun(n, idle, held, anon, peak, recovered, recover_s, spool, inject_s, injector)


def tracemalloc_rows(sizes: list[int]) -> list[tuple[int, float, float]]:
    """(queued, bytes/message with id and recipient strings, engine only) per size."""
    from bench.core import bytes_per_message

    return [(n, bytes_per_message(n, prebuilt=False), bytes_per_message(n, prebuilt=True))
            for n in sizes]


def _mb(b: float) -> str:
    return f"{b / 2**20:,.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.memory [--quick] [--messages N] [--rounds R] [--skip-rss]`."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--messages", type=int, default=None, help="messages held for the RSS run")
    p.add_argument("--rounds", type=int, default=None, help="RSS rounds (median quoted)")
    p.add_argument("--timeout", type=float, default=300.0, help="bound on each wait, seconds")
    p.add_argument("--skip-rss", action="store_true", help="only the tracemalloc figures")
    p.add_argument("--skip-tracemalloc", action="store_true", help="only the RSS figures")
    p.add_argument("--profile", action="store_true",
                   help="tracemalloc inside egress deliver: which lines hold the memory")
    args = p.parse_args(argv)
    n = args.messages or (2_000 if args.quick else 100_000)
    if args.profile:
        profile(args.messages or (2_000 if args.quick else 20_000), args.timeout)
        return 0
    rounds = args.rounds or (1 if args.quick else 3)

    if not args.skip_tracemalloc:
        sizes = [10_000] if args.quick else [100_000, 1_000_000]
        print("bytes per queued message (tracemalloc, bench.core.bytes_per_message)")
        print(f"{'queued':>10} {'with id/rcpt strings':>21} {'engine only':>12}")
        for size, with_strings, engine_only in tracemalloc_rows(sizes):
            print(f"{size:>10,} {with_strings:>21.0f} {engine_only:>12.0f}")
        print(f"  bytes per message at {size:,} queued: {with_strings:.0f} with id/rcpt "
              f"strings, {engine_only:.0f} engine only")
        print()
    if args.skip_rss:
        return 0
    runs: list[RssRun] = []
    with peers.DnsServer({DOMAIN: "127.0.0.2"}) as dns:
        for r in range(rounds):
            run = rss_run(n, args.timeout, dns)
            runs.append(run)
            print(f"  round {r + 1}: idle {_mb(run.idle)}, held {_mb(run.held)}, "
                  f"peak {_mb(run.peak)}, recovered {_mb(run.recovered)}, "
                  f"{run.per_message:,.0f} B/msg, spool {_mb(run.spool)}, "
                  f"inject {run.inject_s:.1f} s ({run.injector}), "
                  f"recover {run.recover_s:.1f} s", file=sys.stderr, flush=True)

    def med(f: str) -> float:
        return statistics.median(getattr(r, f) for r in runs)

    print(f"egress deliver holding {n:,} queued messages of {SIZE} B (every path suspended), "
          f"median of {rounds} round(s), injected by {runs[0].injector} -s {SESSIONS}, "
          f"nproc {os.cpu_count()}, Python {peers.python_version()}")
    rows = [
        ("RSS idle (listening, nothing queued)", _mb(med("idle")), ""),
        (f"RSS holding {n:,} queued", _mb(med("held")), f"peak (VmHWM) {_mb(med('peak'))}"),
        ("RSS - idle, per queued message", f"{med('per_message'):,.0f} B",
         f"of which anonymous (heap) {med('anon') / n:,.0f} B"),
        (f"RSS after restart, {n:,} recovered", _mb(med("recovered")),
         f"{med('per_message_recovered'):,.0f} B/msg over idle"),
        ("spool on disk", _mb(med("spool")), f"{med('spool') / n:,.0f} B/msg"),
        ("inject -> all held, s", f"{med('inject_s'):.1f}",
         f"{n / med('inject_s'):,.0f} msg/s"),
        ("restart -> all recovered, s", f"{med('recover_s'):.1f}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>12}  {note}")
    return 0


# Run `egress deliver` with tracemalloc on (frames > 0); each SIGUSR1 dumps a
# snapshot to DIR/snap-K.bin, SIGUSR2 runs gc.collect() and engine.live.memory.trim
# (jemalloc's purge, or glibc's malloc_trim(0)); asyncio's signal wake-up fd
# gets the loop to run handlers.
_TRACED = """\
import ctypes, gc, signal, sys, tracemalloc
if {frames}:
    tracemalloc.start({frames})
_k = [0]
def _dump(signum, frame):
    _k[0] += 1
    tracemalloc.take_snapshot().dump({out!r} + f"/snap-{{_k[0]}}.bin")
def _trim(signum, frame):
    from engine.live.memory import trim
    gc.collect()
    trim()
    open({out!r} + "/trimmed", "w").close()
signal.signal(signal.SIGUSR1, _dump)
signal.signal(signal.SIGUSR2, _trim)
from engine.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _signal_and_wait(svc: Deliver, sig: int, marker: Path, timeout: float) -> None:
    assert svc.proc is not None
    svc.proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    while not marker.exists() and time.monotonic() < deadline:
        scrape(svc.metrics_port)  # a request wakes the loop too
        time.sleep(0.2)
    time.sleep(1.0)  # let a dump finish writing


def trimmed_rss(n: int, timeout: float, dns: peers.DnsServer) -> tuple[int, int, int]:
    """(idle, held, held after gc + malloc_trim) RSS of an untraced `egress deliver`."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-trim-") as tmp:
        work = Path(tmp)
        (work / "policy.py").write_text(_POLICY.format(max_ready=n + 1024))
        svc = Deliver(work, dns.port, traced=_TRACED.format(frames=0, out=tmp))
        try:
            proc = svc.start(timeout)
            time.sleep(0.5)
            idle = proc_status(proc.pid, "VmRSS")
            inject(svc.port, n, timeout)
            wait_held(proc, svc.metrics_port, n, timeout)
            held = proc_status(proc.pid, "VmRSS")
            _signal_and_wait(svc, signal.SIGUSR2, work / "trimmed", timeout)
            return idle, held, proc_status(proc.pid, "VmRSS")
        finally:
            svc.stop()


def profile(n: int, timeout: float, top: int = 25) -> None:
    """Where the held memory is: tracemalloc in `egress deliver`, idle vs holding `n`."""
    import tracemalloc

    with tempfile.TemporaryDirectory(prefix="bench-memory-prof-") as tmp, peers.DnsServer(
            {DOMAIN: "127.0.0.2"}) as dns:
        work = Path(tmp)
        (work / "policy.py").write_text(_POLICY.format(max_ready=n + 1024))
        svc = Deliver(work, dns.port, traced=_TRACED.format(frames=1, out=tmp))
        try:
            proc = svc.start(timeout)
            time.sleep(0.5)
            _signal_and_wait(svc, signal.SIGUSR1, work / "snap-1.bin", timeout)
            inject(svc.port, n, timeout)
            wait_held(proc, svc.metrics_port, n, timeout)
            _signal_and_wait(svc, signal.SIGUSR1, work / "snap-2.bin", timeout)
        finally:
            svc.stop()
        idle = tracemalloc.Snapshot.load(str(work / "snap-1.bin"))
        held = tracemalloc.Snapshot.load(str(work / "snap-2.bin"))
        rss_idle, rss_held, rss_trim = trimmed_rss(n, timeout, dns)
    diff = held.compare_to(idle, "lineno")
    grown = sum(d.size_diff for d in diff)
    print(f"untraced, holding {n:,}: RSS - idle {(rss_held - rss_idle) / n:,.0f} B/msg; "
          f"after gc.collect() + malloc_trim(0) {(rss_trim - rss_idle) / n:,.0f} B/msg")
    print(f"tracemalloc in egress deliver, holding {n:,} vs idle: {grown / n:,.0f} B/msg traced; "
          f"top {top} lines by growth")
    for d in diff[:top]:
        frame = d.traceback[0]
        where = f"{frame.filename.replace(str(peers.ROOT) + '/', '')}:{frame.lineno}"
        print(f"  {d.size_diff / n:>8,.1f} B/msg {d.count_diff / n:>6.2f} blocks/msg  {where}")


if __name__ == "__main__":
    sys.exit(main())
