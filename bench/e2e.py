"""End to end, as an operator runs it: smtp-source -> relay -> smtp-sink.

Benchmark 1 of issue 7.  The same C source injects N messages of 2 KB over
32 sessions (``smtp-source -d -s 32``) into a relay listening on 127.0.0.1,
which delivers them to a fresh ``smtp-sink -c`` on another 127.0.0.x address;
the figure is N divided by the time from the first injection to the sink's
last message.  Relays, side by side in the same run:

* ``egress``: ``egress deliver --policy P --spool DIR --listen 127.0.0.1:PORT
  --resolver 127.0.0.1:DNSPORT`` (journal on: the 250 follows the commit),
  resolving the MX through a loopback dnslib server;
* ``postfix``: Postfix itself, a throwaway instance with the issue's main.cf
  (``relayhost``, ``smtp_destination_concurrency_limit = 32``, connection
  cache on demand, no DNS);
* ``slimta``: python-slimta 5, SmtpEdge -> Queue (in-memory) ->
  StaticSmtpRelay(pool_size=32, idle_timeout) on gevent, in its own venv.

``direct`` (smtp-source straight into the sink) is the ceiling of the rig.
A relay that is missing (tool not installed, ``egress deliver`` not built
yet) is reported as "not available" with the reason, not as a failure.  The
relay's CPU seconds per wall second are read from /proc for the one-process
relays: near 1.0 means one core (the GIL) bounds it.

    python -m bench.e2e                # 20 000 messages, 3 rounds
    python -m bench.e2e --quick        # 300 messages, 1 round
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import peers
from bench.relays import PostfixRelay, SlimtaRelay

RELAYS = ("direct", "egress", "postfix", "slimta")
SESSIONS = 32
SIZE = 2000
DOMAIN = "sink.test"
_POLICY = """\
# Written by bench.e2e: every path goes to the benchmark's smtp-sink.
from engine import Policy, make_egress_path

policy = Policy()
_cfg = make_egress_path(
    connection_limit=32, smtp_port={port}, prohibited_hosts=[], enable_tls="Disabled",
    enable_mta_sts=False, ehlo_domain="egress.bench.test", max_ready={max_ready},
)


@policy.on("get_egress_path_config")
def _path(domain, source_name, site_name):
    return _cfg
"""


@dataclass
class Run:
    """One relay's run: messages/s from first injection to the sink's last message."""

    relay: str
    rate: float | None
    cpu: float | None = None  # relay CPU seconds per wall second (one-process relays)
    note: str = ""


@dataclass
class Table:
    messages: int
    rounds: int
    runs: list[list[Run]] = field(default_factory=list)

    def rates(self, relay: str) -> list[float]:
        return [r.rate for row in self.runs for r in row if r.relay == relay and r.rate]

    def ratios(self, a: str, b: str) -> list[float]:
        out = []
        for row in self.runs:
            got = {r.relay: r.rate for r in row}
            if got.get(a) and got.get(b):
                out.append(got[a] / got[b])  # type: ignore[operator]
        return out


def egress_deliver_available() -> str | None:
    """None if ``egress deliver`` takes --listen and --resolver, else why not."""
    try:
        done = subprocess.run([sys.executable, "-m", "engine.cli", "deliver", "--help"],
                              cwd=peers.ROOT, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`egress deliver --help` did not answer in 30 s"
    if done.returncode != 0:
        return "`egress deliver` is not built yet (engine/live/service.py)"
    missing = [opt for opt in ("--listen", "--resolver", "--spool", "--policy")
               if opt not in done.stdout]
    return f"`egress deliver` lacks {', '.join(missing)}" if missing else None


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def egress_relay(sink: peers.SmtpSink, dns: peers.DnsServer, messages: int,
                 workdir: str, profile: str | None = None) -> Iterator[tuple[str, int, int]]:
    """``egress deliver`` listening on 127.0.0.1; yields (host, port, pid).

    With `profile`, it runs under ``python -m cProfile -o PROFILE`` (the stats
    are written when SIGTERM makes it exit)."""
    why = egress_deliver_available()
    if why is not None:
        raise peers.PeerUnavailable(why)
    policy = Path(workdir) / "policy.py"
    policy.write_text(_POLICY.format(port=sink.port, max_ready=messages + 1024))
    port = peers.free_port()
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    cmd = [sys.executable, *prefix, "-m", "engine.cli", "deliver", "--policy", str(policy),
           "--spool", str(Path(workdir) / "spool"), "--listen", f"127.0.0.1:{port}",
           "--resolver", f"127.0.0.1:{dns.port}"]
    log = open(Path(workdir) / "egress.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=peers.ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            peers.wait_listening("127.0.0.1", port, 30.0, proc)
        except peers.PeerUnavailable:
            tail = (Path(workdir) / "egress.log").read_text(errors="replace")[-500:]
            raise peers.PeerUnavailable(f"egress deliver exited: {tail}") from None
        yield "127.0.0.1", port, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


@contextmanager
def relay_for(name: str, sink: peers.SmtpSink, dns: peers.DnsServer, messages: int,
              workdir: str, profile: str | None = None) -> Iterator[tuple[str, int, int | None]]:
    """Start relay `name` in front of `sink`; yields (host, port, pid or None)."""
    if name == "direct":
        yield sink.host, sink.port, None
    elif name == "egress":
        with egress_relay(sink, dns, messages, workdir, profile) as where:
            yield where
    elif name == "postfix":
        with PostfixRelay(sink.host, sink.port) as pf:
            yield pf.host, pf.port, None
    elif name == "slimta":
        with SlimtaRelay(sink.host, sink.port) as sl:
            yield sl.host, sl.port, sl.pid
    else:
        raise ValueError(f"unknown relay {name!r}; expected one of {', '.join(RELAYS)}")


def measure(relay: str, messages: int, sink_host: str, dns: peers.DnsServer,
            timeout: float, profile: str | None = None) -> Run:
    """One relay, a fresh sink; never raises for a missing peer."""
    try:
        with peers.SmtpSink(sink_host) as sink, tempfile.TemporaryDirectory(
                prefix="bench-e2e-") as tmp, relay_for(relay, sink, dns, messages, tmp,
                                                       profile) as (host, port, pid):
            cpu0 = _cpu_seconds(pid) if pid else None
            started = peers.run_smtp_source(host, port, timeout=timeout, sessions=SESSIONS,
                                            messages=messages, size=SIZE, to=f"user@{DOMAIN}")
            reached = sink.wait_for(messages, timeout)
            if reached is None:
                return Run(relay, None, note=f"sink saw {sink.count} of {messages} "
                                             f"in {timeout:g} s")
            cpu1 = _cpu_seconds(pid) if pid else None
            cpu = (cpu1 - cpu0) / (reached - started) if cpu0 is not None and cpu1 else None
            return Run(relay, messages / (reached - started), cpu)
    except peers.PeerUnavailable as exc:
        return Run(relay, None, note=f"not available: {exc}")
    except (subprocess.TimeoutExpired, RuntimeError) as exc:
        return Run(relay, None, note=f"failed: {exc}"[:300])


def run(*, messages: int, rounds: int, relays: Sequence[str] = RELAYS, timeout: float = 180.0,
        log: Any = None) -> Table:
    """Every relay once per round, the order rotated each round."""
    table = Table(messages=messages, rounds=rounds)
    with peers.DnsServer({DOMAIN: "127.0.0.2"}) as dns:
        for r in range(rounds):
            order = list(relays)[r % len(relays):] + list(relays)[:r % len(relays)]
            row = []
            for i, relay in enumerate(order):
                host = f"127.0.1.{2 + i}"
                dns.domains[DOMAIN] = host
                result = measure(relay, messages, host, dns, timeout)
                row.append(result)
                if log is not None:
                    rate = f"{result.rate:,.0f}/s" if result.rate else "-"
                    cpu = f"cpu {result.cpu:.2f}" if result.cpu is not None else ""
                    print(f"  round {r + 1} {relay:<8} {rate:>10} {cpu} {result.note}",
                          file=log, flush=True)
            table.runs.append(row)
    return table


def summary_rows(table: Table) -> list[tuple[str, str, str]]:
    """(figure, median, note) rows for the combined table of `python -m bench`."""
    rows = []
    for relay in RELAYS:
        rates = table.rates(relay)
        name = f"e2e ({table.messages:,}): {relay} msg/s"
        if rates:
            cpus = [r.cpu for row in table.runs for r in row if r.relay == relay and r.cpu]
            cpu = f", relay cpu/wall {statistics.median(cpus):.2f}" if cpus else ""
            rows.append((name, f"{statistics.median(rates):,.0f}",
                         f"min {min(rates):,.0f} max {max(rates):,.0f}{cpu}"))
        else:
            notes = {r.note for row in table.runs for r in row if r.relay == relay}
            if notes:
                rows.append((name, "n/a", "; ".join(sorted(notes))[:160]))
    for a, b, target in (("egress", "slimta", ">= 1.5x"), ("egress", "postfix", ">= 3x"),
                         ("slimta", "postfix", ""), ("egress", "direct", "share of the rig")):
        ratios = table.ratios(a, b)
        rows.append((f"e2e: {a} / {b}", f"{statistics.median(ratios):.2f}x" if ratios else "n/a",
                     target))
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.e2e [--quick] [--rounds N] [--messages N] [--relay R ...]`."""
    from bench.delivery import print_table

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="300 messages, 1 round (a smoke test)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--messages", type=int, default=None)
    p.add_argument("--relay", action="append", choices=RELAYS)
    p.add_argument("--timeout", type=float, default=180.0, help="bound on each run, seconds")
    p.add_argument("--profile", action="store_true",
                   help="run egress deliver once under cProfile and print the top functions")
    args = p.parse_args(argv)
    if args.profile:
        return _profile(args.messages or 20_000, args.timeout)
    table = run(messages=args.messages or (300 if args.quick else 20_000),
                rounds=args.rounds or (1 if args.quick else 3), relays=args.relay or RELAYS,
                timeout=args.timeout, log=sys.stderr)
    print(f"end to end: smtp-source -s {SESSIONS} -> relay -> smtp-sink, {SIZE} B messages, "
          f"{table.rounds} round(s), median (nproc {os.cpu_count()}, "
          f"Python {peers.python_version()})")
    print_table(summary_rows(table))
    return 0


def _profile(messages: int, timeout: float) -> int:
    import pstats

    with tempfile.TemporaryDirectory(prefix="bench-e2e-prof-") as tmp, peers.DnsServer(
            {DOMAIN: "127.0.1.2"}) as dns:
        out = str(Path(tmp) / "egress.prof")
        result = measure("egress", messages, "127.0.1.2", dns, timeout, profile=out)
        print(f"egress deliver under cProfile: {result.rate or 0:,.0f} msg/s {result.note}")
        if Path(out).exists():
            stats = pstats.Stats(out)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
