"""``python -m bench.listener``: the SMTP Listener alone, with a no-op commit.

Issue 7 asked to measure what bounds the relay and replace the listener if it
was the bound; this harness compared the aiosmtpd-based listener with the
asyncio `Listener` that replaced it (commit 24fbbb8; the aiosmtpd one has
since been removed).  It now isolates the Listener: it runs alone in a child
process (``--serve PORT``) with a no-op commit callback (returns one id at
once, nothing journaled), and Postfix's C ``smtp-source -d -s 32 -m N -l
2000`` sends into it on 127.0.0.1.  The figure is N / (smtp-source's wall
time), smtp-source having waited for every 250; the child's own CPU seconds
per wall second (from /proc) says whether it was CPU-bound (about 1.0: one
core).  The child counts the submissions it acknowledged and the run is void
unless that is N.  Without smtp-source, 32 aiosmtplib clients in this process
send instead (slower: the client is Python too).  ``python -m bench.e2e``
measures ``egress deliver`` (this Listener, the journal, delivery) end to end.

    python -m bench.listener                # 20,000 messages, 3 rounds
    python -m bench.listener --quick        # 2,000 messages, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import peers

HOST = "127.0.0.1"


# -- the child: the listener, a no-op commit ----------------------------------------


async def _serve(port: int) -> int:
    from engine.live.listener import Listener
    from engine.live.submission import Submission

    accepted = [0]

    async def commit(sub: Submission) -> list[str]:
        accepted[0] += 1
        return [str(accepted[0])]

    server = Listener(HOST, port, submit=commit, hostname="bench.test")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)
    print(f"accepted {accepted[0]}", flush=True)
    return 0


# -- the parent ---------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(*, messages: int, sessions: int, size: int, timeout: float
            ) -> tuple[float, float | None]:
    """Start the Listener in a child, send `messages` into it; (msg/s, child cpu/wall)."""
    port = peers.free_port(HOST)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.listener", "--serve", str(port)],
        stdout=subprocess.PIPE, text=True, cwd=peers.ROOT)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the listener did not start")
        cpu0 = _cpu_seconds(child.pid)
        started = time.monotonic()
        try:
            peers.run_smtp_source(HOST, port, timeout=timeout, sessions=sessions,
                                  messages=messages, size=size)
        except peers.PeerUnavailable:
            sent = asyncio.run(peers.aiosmtplib_send(HOST, port, messages=messages,
                                                     connections=sessions, size=size))
            if sent != messages:
                raise RuntimeError(f"aiosmtplib got {sent} of {messages} accepted") from None
        wall = time.monotonic() - started
        cpu1 = _cpu_seconds(child.pid)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=10)
        accepted = int(out.split()[-1]) if out.split() else -1
        if accepted != messages:
            raise RuntimeError(f"the listener acknowledged {accepted} of {messages} messages")
        load = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / wall
        return messages / wall, load
    finally:
        peers.stop_process(child)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print one table (or serve, as the child)."""
    ap = argparse.ArgumentParser(prog="python -m bench.listener", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    ap.add_argument("--quick", action="store_true", help="2,000 messages, one round")
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve is not None:
        return asyncio.run(_serve(args.serve))
    if args.quick:
        args.messages, args.rounds = 2000, 1
    try:
        client = f"smtp-source -d -s {args.sessions} -m {args.messages} -l {args.size}"
        peers.tool("smtp-source")
    except peers.PeerUnavailable:
        client = f"{args.sessions} aiosmtplib clients (smtp-source is not installed)"
    print(f"listener: {args.messages:,} messages of {args.size} bytes, {client}, "
          f"{args.rounds} round(s), no-op commit, Python {peers.python_version()}, "
          f"nproc {os.cpu_count()}")
    rates: list[float] = []
    loads: list[float] = []
    for r in range(args.rounds):
        rate, load = run_one(messages=args.messages, sessions=args.sessions, size=args.size,
                             timeout=args.timeout)
        rates.append(rate)
        if load is not None:
            loads.append(load)
        print(f"  round {r + 1}: {rate:>9,.0f} msg/s"
              + ("" if load is None else f"   cpu/wall {load:.2f}"), flush=True)
    load_text = f"{statistics.median(loads):.2f}" if loads else "-"
    print(f"\n{'listener':<28} {'median msg/s':>13} {'min':>9} {'max':>9} {'cpu/wall':>9}")
    print(f"{'Listener':<28} {statistics.median(rates):>13,.0f} {min(rates):>9,.0f} "
          f"{max(rates):>9,.0f} {load_text:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
