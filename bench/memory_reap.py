"""Memory after one message to each of N domains, once the idle state is reaped.

Issue 13.6: per-domain state (ready queue, scheduled queue, domain entry,
site and path names, maint timer, per-path metrics) used to stay forever, so
one message to each of 10 k domains took ``egress deliver`` from 33 to 163 MB
for good.  Now an idle path, queue or domain is dropped by the engine's reap
sweep (`engine.lifecycle.reap_idle`, every ``--reap-after`` seconds).

What this measures, on loopback: ``egress deliver`` as shipped (on jemalloc
where it is installed, `engine.live.memory`; the `bench.memory` launcher, so
SIGUSR2 runs ``gc.collect()`` and `engine.live.memory.trim`)
with a policy sending every path to a Postfix ``smtp-sink`` with
``idle_timeout = 1s``, and a dnslib server (in this process, not the
measured one) answering an MX for each of the N domains.  RSS is read from
/proc:

1. at start, once listening (nothing sent yet);
2. idle, as an operator sees the running service: warmed by one message
   to a first domain, delivered and reaped (the code paths of delivery are
   loaded, the journal has written), nothing else, then left alone for
   ``--settle`` seconds (12); the percentages are of this figure;
3. when all N are delivered (the per-domain state at its largest);
4. 1 s after ``/metrics`` lists no path any more (everything reaped; the
   sweep that reaps them also hands the memory back: `engine.live.memory`);
5. the reaped figure: the same service left alone ``--settle`` seconds more,
   not even scraped, as ``ps`` shows it to an operator once it is idle.
   Between 4 and 5 jemalloc's background thread returns what was freed after
   the service's hand-back (such as this bench's own last scrapes of
   ``/metrics``, 40,000 series each while it waited), within its
   ``dirty_decay_ms`` (10 s); the service hands back once more
   ``--reap-after`` seconds later (`engine.live.memory.HandBacks`);
6. the same after an outside ``gc.collect()`` + ``trim`` (SIGUSR2): what
   the service's own hand-back left for them to find.

    python -m bench.memory_reap                  # 10 k domains
    python -m bench.memory_reap --domains 1000   # quicker
    python -m bench.memory_reap --again          # then 10 k other domains: is it reused?
    python -m bench.memory_reap --allocator pymalloc   # CPython's own allocator
"""

from __future__ import annotations

import argparse
import signal
import smtplib
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import peers
from bench.memory import _TRACED, Deliver, _mb, _signal_and_wait, proc_status, scrape

WARM = "warm-up.reap.test"  # the first delivery, before the idle figure is read
# Seconds the service is left idle (not even scraped) before its RSS is read, at
# the idle point and once reaped: jemalloc's background thread hands back what
# was freed after the service's own hand-back (a /metrics answer of 40,000
# series still being written out) within its dirty_decay_ms, 10 s.
SETTLE = 12.0
_POLICY = """\
# Written by bench.memory_reap: every path to the local smtp-sink, idle after 1 s.
from engine import Policy, make_egress_path

policy = Policy()
_cfg = make_egress_path(
    smtp_port={port}, prohibited_hosts=[], enable_tls="Disabled", enable_mta_sts=False,
    ehlo_domain="egress.bench.test", idle_timeout="1s",
)


@policy.on("get_egress_path_config")
def _path(domain, source_name, site_name):
    return _cfg
"""


def _send(port: int, domains: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        for i, dom in enumerate(domains):
            client.sendmail("s@sender.test", [f"u@{dom}"], peers.message(2000, i))


def inject(port: int, domains: list[str], threads: int = 4) -> None:
    """One message to each domain, over `threads` SMTP sessions."""
    workers = [threading.Thread(target=_send, args=(port, domains[k::threads]))
               for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def _delivered(port: int) -> float:
    return scrape(port).get("total_messages_delivered", 0)


def _paths_listed(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode().count('service="smtp_client:')  # one per path series


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not after {timeout:g} s")
        time.sleep(0.5)


def run(n: int, reap_after: float, timeout: float, again: bool = False,
        allocator: str = "auto", settle: float = SETTLE) -> dict[str, float]:
    """RSS figures (bytes) and timings for `n` domains (`again`: then `n` others)."""
    domains = [f"d{i}.reap.test" for i in range(n)]
    others = [f"e{i}.reap.test" for i in range(n)] if again else []
    sink = peers.SmtpSink(host="127.0.0.2").start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-memory-reap-") as tmp, \
                peers.DnsServer(dict.fromkeys([WARM, *domains, *others], "127.0.0.2")) as dns:
            work = Path(tmp)
            (work / "policy.py").write_text(_POLICY.format(port=sink.port))
            svc = Deliver(work, dns.port, traced=_TRACED.format(frames=0, out=tmp),
                          extra=("--reap-after", str(reap_after), "--allocator", allocator))
            try:
                proc = svc.start(timeout)
                time.sleep(1.0)
                start = proc_status(proc.pid, "VmRSS")
                inject(svc.port, [WARM], threads=1)
                _wait(lambda: _delivered(svc.metrics_port) >= 1, timeout, "the warm-up delivery")
                _wait(lambda: _paths_listed(svc.metrics_port) == 0, timeout, "warm-up reaped")
                time.sleep(settle)
                idle = proc_status(proc.pid, "VmRSS")
                started = time.monotonic()
                inject(svc.port, domains)
                _wait(lambda: _delivered(svc.metrics_port) >= n + 1, timeout, f"{n} deliveries")
                delivered_s = time.monotonic() - started
                full = proc_status(proc.pid, "VmRSS")
                peak = proc_status(proc.pid, "VmHWM")
                listed = _paths_listed(svc.metrics_port)
                started = time.monotonic()
                _wait(lambda: _paths_listed(svc.metrics_port) == 0, timeout, "every path reaped")
                reaped_s = time.monotonic() - started
                time.sleep(1.0)
                at_once = proc_status(proc.pid, "VmRSS")
                time.sleep(settle - 1.0)
                reaped = proc_status(proc.pid, "VmRSS")
                _signal_and_wait(svc, signal.SIGUSR2, work / "trimmed", timeout)
                trimmed = proc_status(proc.pid, "VmRSS")
                second = second_peak = 0
                if others:  # a second burst, to other domains: does it reuse the first's memory?
                    inject(svc.port, others)
                    _wait(lambda: _delivered(svc.metrics_port) >= 2 * n + 1, timeout,
                          f"{n} more deliveries")
                    _wait(lambda: _paths_listed(svc.metrics_port) == 0, timeout, "reaped again")
                    time.sleep(settle)
                    second = proc_status(proc.pid, "VmRSS")
                    second_peak = proc_status(proc.pid, "VmHWM")
            finally:
                svc.stop()
    finally:
        sink.stop()
    return {"start": start, "idle": idle, "full": full, "peak": peak, "at_once": at_once,
            "reaped": reaped,
            "trimmed": trimmed, "second": second, "second_peak": second_peak, "listed": listed,
            "delivered_s": delivered_s, "reaped_s": reaped_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domains", type=int, default=10_000, help="domains, one message each")
    p.add_argument("--reap-after", type=float, default=60.0, help="egress deliver --reap-after")
    p.add_argument("--timeout", type=float, default=600.0, help="bound on each wait, seconds")
    p.add_argument("--again", action="store_true",
                   help="then one message to each of as many other domains, reaped again")
    p.add_argument("--allocator", choices=("auto", "jemalloc", "pymalloc"), default="auto",
                   help="egress deliver --allocator (auto: jemalloc where installed)")
    p.add_argument("--settle", type=float, default=SETTLE,
                   help="seconds left idle before the idle and reaped RSS are read (>= 1)")
    args = p.parse_args(argv)
    if not args.settle >= 1.0:
        p.error(f"--settle must be at least 1 second, not {args.settle:g}")
    r = run(args.domains, args.reap_after, args.timeout, args.again, args.allocator,
            args.settle)
    n = args.domains
    print(f"one message to each of {n:,} domains, --reap-after {args.reap_after:g}, "
          f"--allocator {args.allocator}")
    print(f"  RSS at start (listening)         {_mb(r['start'])}")
    print(f"  RSS idle (1 delivery, reaped)    {_mb(r['idle'])}")
    print(f"  RSS all delivered                {_mb(r['full'])}  (peak {_mb(r['peak'])}; "
          f"/metrics lists {r['listed']:.0f} path series; {r['delivered_s']:.1f} s)")
    print(f"  RSS 1 s after no path in /metrics {_mb(r['at_once'])}  "
          f"({(r['at_once'] / r['idle'] - 1) * 100:+.1f} % of idle; {r['reaped_s']:.1f} s after)")
    print(f"  RSS reaped, idle {args.settle:g} s      {_mb(r['reaped'])}  "
          f"({(r['reaped'] / r['idle'] - 1) * 100:+.1f} % of idle)")
    print(f"  RSS reaped, outside gc + trim   {_mb(r['trimmed'])}  "
          f"({(r['trimmed'] / r['idle'] - 1) * 100:+.1f} % of idle)")
    if args.again:
        print(f"  RSS after {n:,} other domains, reaped {_mb(r['second'])}  "
              f"({(r['second'] / r['idle'] - 1) * 100:+.1f} % of idle; "
              f"peak so far {_mb(r['second_peak'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
