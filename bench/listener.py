"""``python -m bench.listener``: the aiosmtpd IngestServer against the fast Listener.

Issue 7 asks to measure what bounds the relay and replace the listener if it
is the bound.  This isolates the listener: each contender runs alone in a
child process (``--serve KIND PORT``) with a no-op commit callback (returns
one id at once, nothing journaled), and Postfix's C ``smtp-source -d -s 32
-m N -l 2000`` sends into it on 127.0.0.1.  The figure is N / (smtp-source's
wall time), smtp-source having waited for every 250; the child's own CPU
seconds per wall second (from /proc) says whether it was CPU-bound (about
1.0: one core).  The child counts the submissions it acknowledged and the
run is void unless that is N.  Rounds rotate the order; the ratio is taken
within a round and the median quoted.  Without smtp-source, 32 aiosmtplib
clients in this process send instead (slower: the client is Python too).

    python -m bench.listener                # 20,000 messages, 3 rounds
    python -m bench.listener --quick        # 2,000 messages, 1 round
    python -m bench.listener --e2e          # also egress deliver end to end, both ways

``--e2e`` runs bench.e2e's egress figure (smtp-source -> ``egress deliver``
with its journal -> smtp-sink) twice per round: as it is, and with the
service's IngestServer swapped for the Listener in the child process (until
engine/live/service.py switches, that swap is how the figure is taken).
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import peers

KINDS = ("aiosmtpd", "listener")
HOST = "127.0.0.1"


# -- the child: one listener, a no-op commit --------------------------------------


async def _serve(kind: str, port: int) -> int:
    from engine.live.ingest import IngestServer, Submission
    from engine.live.listener import Listener

    accepted = [0]

    async def commit(sub: Submission) -> list[str]:
        accepted[0] += 1
        return [str(accepted[0])]

    cls = IngestServer if kind == "aiosmtpd" else Listener
    server = cls(HOST, port, submit=commit, hostname="bench.test")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)
    print(f"accepted {accepted[0]}", flush=True)
    return 0


def _egress_with_listener(argv: list[str]) -> int:
    """``egress ARGV`` with the service's IngestServer replaced by the Listener."""
    import engine.live.service as service
    from engine.cli import main as egress_main
    from engine.live.listener import Listener

    service.IngestServer = Listener  # type: ignore[misc,assignment]
    return egress_main(argv)


# -- the parent ---------------------------------------------------------------------


@contextmanager
def _egress_uses_listener() -> Iterator[None]:
    """While inside, bench.e2e starts ``egress deliver`` through `_egress_with_listener`."""
    real = subprocess.Popen

    def popen(cmd: Any, *a: Any, **kw: Any) -> Any:
        if isinstance(cmd, list) and "engine.cli" in cmd:
            at = cmd.index("engine.cli")
            cmd = [*cmd[: at - 1], "-m", "bench.listener", "--egress-cli", *cmd[at + 1 :]]
        return real(cmd, *a, **kw)

    subprocess.Popen = popen  # type: ignore[misc]
    try:
        yield
    finally:
        subprocess.Popen = real  # type: ignore[misc]


def run_e2e(messages: int, rounds: int, timeout: float) -> None:
    """bench.e2e's egress figure with aiosmtpd and with the Listener, rounds alternated."""
    from bench import e2e

    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    ratios: list[float] = []
    print(f"\ne2e: smtp-source -d -s {e2e.SESSIONS} -m {messages:,} -l {e2e.SIZE} -> "
          "egress deliver (journal on) -> smtp-sink")
    with e2e.peers.DnsServer({e2e.DOMAIN: "127.0.0.2"}) as dns:
        for r in range(rounds):
            got: dict[str, float] = {}
            for i, kind in enumerate(KINDS[r % 2:] + KINDS[: r % 2]):
                host = f"127.0.1.{2 + i}"
                dns.domains[e2e.DOMAIN] = host
                if kind == "listener":
                    with _egress_uses_listener():
                        result = e2e.measure("egress", messages, host, dns, timeout)
                else:
                    result = e2e.measure("egress", messages, host, dns, timeout)
                cpu = "" if result.cpu is None else f"   relay cpu/wall {result.cpu:.2f}"
                print(f"  round {r + 1}: {kind:<9} "
                      f"{f'{result.rate:,.0f} msg/s' if result.rate else result.note}{cpu}",
                      flush=True)
                if result.rate:
                    got[kind] = result.rate
                    rates[kind].append(result.rate)
            if len(got) == 2:
                ratios.append(got["listener"] / got["aiosmtpd"])
    for kind in KINDS:
        if rates[kind]:
            print(f"e2e egress with {kind:<9} median {statistics.median(rates[kind]):>7,.0f} "
                  f"msg/s")
    if ratios:
        print(f"e2e egress, Listener / IngestServer: {statistics.median(ratios):.2f}x "
              f"(median of {len(ratios)} round(s))")


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(kind: str, *, messages: int, sessions: int, size: int, timeout: float
            ) -> tuple[float, float | None]:
    """Start `kind` in a child, send `messages` into it; (msg/s, child cpu/wall)."""
    port = peers.free_port(HOST)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.listener", "--serve", kind, str(port)],
        stdout=subprocess.PIPE, text=True, cwd=peers.ROOT)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} listener did not start")
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
            raise RuntimeError(f"{kind} acknowledged {accepted} of {messages} messages")
        load = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / wall
        return messages / wall, load
    finally:
        peers.stop_process(child)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one table (or serve, as the child)."""
    ap = argparse.ArgumentParser(prog="python -m bench.listener", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    ap.add_argument("--quick", action="store_true", help="2,000 messages, one round")
    ap.add_argument("--e2e", action="store_true",
                    help="also egress deliver end to end with each listener")
    ap.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--egress-cli"]:
        return _egress_with_listener(argv[1:])
    args = ap.parse_args(argv)
    if args.serve:
        kind, port = args.serve
        if kind not in KINDS:
            ap.error(f"--serve KIND must be one of {', '.join(KINDS)}, not {kind!r}")
        return asyncio.run(_serve(kind, int(port)))
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
    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    loads: dict[str, list[float]] = {k: [] for k in KINDS}
    ratios: list[float] = []
    for r in range(args.rounds):
        order = KINDS[r % 2:] + KINDS[: r % 2]
        got: dict[str, float] = {}
        for kind in order:
            rate, load = run_one(kind, messages=args.messages, sessions=args.sessions,
                                 size=args.size, timeout=args.timeout)
            got[kind] = rate
            rates[kind].append(rate)
            if load is not None:
                loads[kind].append(load)
            print(f"  round {r + 1}: {kind:<9} {rate:>9,.0f} msg/s"
                  + ("" if load is None else f"   cpu/wall {load:.2f}"), flush=True)
        ratios.append(got["listener"] / got["aiosmtpd"])
    print(f"\n{'listener':<28} {'median msg/s':>13} {'min':>9} {'max':>9} {'cpu/wall':>9}")
    for kind, label in (("aiosmtpd", "IngestServer (aiosmtpd)"), ("listener", "Listener")):
        xs = rates[kind]
        load = f"{statistics.median(loads[kind]):.2f}" if loads[kind] else "-"
        print(f"{label:<28} {statistics.median(xs):>13,.0f} {min(xs):>9,.0f} "
              f"{max(xs):>9,.0f} {load:>9}")
    print(f"Listener / IngestServer: {statistics.median(ratios):.2f}x "
          f"(median of {len(ratios)} round(s))")
    if args.e2e:
        run_e2e(args.messages, args.rounds, args.timeout * 1.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
