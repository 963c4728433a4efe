"""What the allocator costs live delivery: ``egress deliver --allocator``, paired.

`egress deliver` runs on jemalloc where it is installed (`engine.live.memory`:
a burst's memory goes back to the system once reaped, which pymalloc's
arenas do not allow).  This measures what that choice costs while mail
flows: the same relay as `bench.e2e` (``smtp-source -s 32`` -> ``egress
deliver`` with its journal -> ``smtp-sink``, 2 KB messages, one domain), once
with ``--allocator pymalloc`` and once with ``--allocator jemalloc`` per
round, the order alternated from round to round, each on a fresh service and
sink.  The figure is the service's own CPU seconds (every thread, from
/proc) per message, which a loaded machine changes far less than the wall
rate; the ratio is taken within a round and the median quoted.

    python -m bench.memory_alloc                      # 10 rounds of 5,000
    python -m bench.memory_alloc --rounds 4 --messages 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench import peers
from bench.e2e import _POLICY, _cpu_seconds
from bench.memory import Deliver

DOMAIN = "alloc.test"
CHOICES = ("pymalloc", "jemalloc")


def measure(choice: str, messages: int, sink_host: str, dns: peers.DnsServer,
            timeout: float) -> tuple[float, float]:
    """(CPU seconds per message of the service, messages per wall second)."""
    with peers.SmtpSink(sink_host) as sink, tempfile.TemporaryDirectory(
            prefix="bench-memory-alloc-") as tmp:
        work = Path(tmp)
        (work / "policy.py").write_text(_POLICY.format(port=sink.port,
                                                       max_ready=messages + 1024))
        svc = Deliver(work, dns.port, extra=("--allocator", choice))
        try:
            proc = svc.start(timeout)
            cpu0 = _cpu_seconds(proc.pid)
            started = peers.run_smtp_source("127.0.0.1", svc.port, timeout=timeout,
                                            sessions=32, messages=messages, size=2000,
                                            to=f"user@{DOMAIN}")
            reached = sink.wait_for(messages, timeout)
            cpu1 = _cpu_seconds(proc.pid)
        finally:
            svc.stop()
    if reached is None or cpu0 is None or cpu1 is None:
        raise RuntimeError(f"--allocator {choice}: the sink saw {sink.count} of {messages}")
    return (cpu1 - cpu0) / messages, messages / (reached - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--messages", type=int, default=5_000)
    p.add_argument("--timeout", type=float, default=180.0, help="bound on each run, seconds")
    args = p.parse_args(argv)
    cpu: dict[str, list[float]] = {c: [] for c in CHOICES}
    rate: dict[str, list[float]] = {c: [] for c in CHOICES}
    ratios: list[float] = []
    with peers.DnsServer({DOMAIN: "127.0.0.2"}) as dns:
        for r in range(args.rounds):
            order = CHOICES if r % 2 == 0 else CHOICES[::-1]
            for i, choice in enumerate(order):
                host = f"127.0.1.{2 + i}"
                dns.domains[DOMAIN] = host
                c, w = measure(choice, args.messages, host, dns, args.timeout)
                cpu[choice].append(c)
                rate[choice].append(w)
                print(f"  round {r + 1} {choice:<9} {c * 1e6:7.1f} us CPU/msg {w:8,.0f} msg/s",
                      file=sys.stderr, flush=True)
            ratios.append(cpu["jemalloc"][-1] / cpu["pymalloc"][-1])
    print(f"egress deliver relaying {args.messages:,} messages of 2 KB (smtp-source -s 32), "
          f"{args.rounds} rounds, medians")
    for choice in CHOICES:
        print(f"  --allocator {choice:<9} {statistics.median(cpu[choice]) * 1e6:7.1f} us CPU/msg"
              f"  {statistics.median(rate[choice]):8,.0f} msg/s")
    print(f"  jemalloc / pymalloc CPU per message: {statistics.median(ratios):.3f}x "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
