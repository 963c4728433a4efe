"""Delivery alone into smtp-sink: egress against aiosmtplib and smtp-source.

Benchmark 2 of issue 7.  N messages of 2 KB are already in the spool; each
contender delivers them over 32 connections into a fresh ``smtp-sink -c`` on
its own 127.0.0.x address, and the figure is N divided by the time from the
contender's first message to the sink's last (the sink's own counter, stamped
as it arrives).  Contenders, each in its own process so none inherits
another's heap or loop:

* ``smtp-source`` (``-d -s 32``): Postfix's C client, the ceiling;
* ``aiosmtplib``: a plain sender with 32 reused clients, the Python peer;
* ``egress``: `Engine` + `LiveDriver` + `LiveResolver` asking a loopback
  dnslib server (MX -> A 127.0.0.x).  The MessageSubmitted events and bodies
  are journaled before the clock starts (that is "already in the spool"), then
  fed at once; every later event is appended to the SQLite `Journal` (WAL,
  synchronous=FULL, group commit) and bodies are dropped on Discard;
* ``egress-nojournal``: the same without the journal, for the journal's share;
* on request (``--contender``), ``egress-uvloop`` and ``egress-asyncio``:
  egress with its journal pinned to one event loop (``egress`` itself runs on
  the loop ``egress deliver --loop auto`` picks), for the side-by-side figure.

Variants: ``reuse`` (32 connections reused), ``conn-per-msg`` (one message
per connection: ``max_deliveries_per_connection=1``, smtp-source without
``-d``) and ``rcpt10`` (10 recipients per message).  Each round runs every
contender once, in a rotated order; ratios are taken within a round and the
median over rounds is quoted, because the machines are shared and noisy.

    python -m bench.delivery                      # 20 000 (5 000) messages, 3 rounds
    python -m bench.delivery --quick              # 300 messages, 1 round
    python -m bench.delivery --profile egress     # cProfile of egress's delivery path
    python -m bench.delivery --variant reuse --contender smtp-source \
        --contender egress-uvloop --contender egress-asyncio --rounds 5   # the loops
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import peers
from bench.delivery_egress import CONNECTIONS, DOMAIN, SIZE, cpu_seconds, egress_deliver

CONTENDERS = ("smtp-source", "aiosmtplib", "egress", "egress-nojournal")
#: On request (--contender): egress pinned to one event loop (engine.live.loops).
LOOP_CONTENDERS = ("egress-uvloop", "egress-asyncio")
VARIANTS: dict[str, dict[str, int]] = {
    "reuse": {"recipients": 1, "per_connection": 0},
    "conn-per-msg": {"recipients": 1, "per_connection": 1},
    "rcpt10": {"recipients": 10, "per_connection": 0},
}
# Messages per run at full size.  The two extra variants use fewer: one
# connection per message leaves a TIME_WAIT socket per message (four
# contenders x rounds would crowd the ephemeral ports), and 10 recipients
# multiply every transaction's commands by ten.
FULL_SIZE = {"reuse": 20_000, "conn-per-msg": 5_000, "rcpt10": 5_000}


@dataclass
class Measure:
    """One contender's run: messages/s from its first message to the sink's last."""

    contender: str
    variant: str
    rate: float | None  # None: not available or did not finish
    note: str = ""
    cpu: float | None = None  # the sender's CPU seconds per wall second (all its threads)


@dataclass
class Table:
    """Every round's measures, and what the ratios are taken over."""

    messages: dict[str, int]
    rounds: int
    measures: list[list[Measure]] = field(default_factory=list)

    def rates(self, contender: str, variant: str) -> list[float]:
        return [m.rate for r in self.measures for m in r
                if m.contender == contender and m.variant == variant and m.rate]

    def ratios(self, a: str, b: str, variant: str) -> list[float]:
        """a/b within each round where both finished."""
        out = []
        for r in self.measures:
            got = {m.contender: m.rate for m in r if m.variant == variant}
            if got.get(a) and got.get(b):
                out.append(got[a] / got[b])  # type: ignore[operator]
        return out


def _worker(args: argparse.Namespace) -> None:
    """One contender in this process; prints one JSON line (monotonic stamps)."""
    host, _, port = args.sink.rpartition(":")
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    variant = VARIANTS[args.variant]
    if args.contender == "aiosmtplib":
        cpu0 = cpu_seconds()
        started = time.monotonic()
        sent = asyncio.run(peers.aiosmtplib_send(
            host, int(port), messages=args.messages, connections=CONNECTIONS, size=SIZE,
            recipients=variant["recipients"], per_connection=variant["per_connection"],
            domain=DOMAIN))
        done = time.monotonic()
        out: dict[str, Any] = {"started": started, "done": done, "sent": sent,
                               "cpu": (cpu_seconds() - cpu0) / max(done - started, 1e-9)}
    else:
        from engine.live.loops import loop_factory

        journal_dir = None if args.contender == "egress-nojournal" else args.dir
        # "egress" runs on the loop `egress deliver` picks by default (auto);
        # the two others pin one loop, for the side-by-side figure
        loop = {"egress-uvloop": "uvloop", "egress-asyncio": "asyncio"}.get(args.contender, "auto")
        coro = egress_deliver(int(port), args.dns_port, messages=args.messages,
                              recipients=variant["recipients"],
                              per_connection=variant["per_connection"],
                              journal_dir=journal_dir, timeout=args.timeout)
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            out = prof.runcall(_run_on, loop, coro)
            stats = pstats.Stats(prof, stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(args.profile_top)
            stats.sort_stats("cumulative").print_stats(args.profile_top)
        else:
            out = _run_on(loop, coro)
        out["loop"] = "uvloop" if loop_factory(loop) is not None else "asyncio"
    print(json.dumps(out))


def _run_on(loop: str, coro: Any) -> Any:
    from engine.live.loops import run

    return run(coro, loop)


# -- the orchestrator -----------------------------------------------------------


def measure(contender: str, variant: str, messages: int, sink_host: str, dns: peers.DnsServer,
            timeout: float, profile: bool = False, extra: Sequence[str] = ()) -> Measure:
    """Run one contender against a fresh sink on `sink_host`; never raises for a peer."""
    v = VARIANTS[variant]
    try:
        with peers.SmtpSink(sink_host) as sink, tempfile.TemporaryDirectory(
                prefix="bench-delivery-") as tmp:
            if contender == "smtp-source":
                started = peers.run_smtp_source(
                    sink.host, sink.port, timeout=timeout, sessions=CONNECTIONS,
                    messages=messages, size=SIZE, recipients=v["recipients"],
                    reuse=v["per_connection"] == 0, to=f"user@{DOMAIN}")
                note, cpu = "", None
            else:
                cmd = [sys.executable, "-m", "bench.delivery", "worker", "--contender",
                       contender, "--variant", variant, "--messages", str(messages),
                       "--sink", f"{sink.host}:{sink.port}", "--dns-port", str(dns.port),
                       "--dir", tmp, "--timeout", str(timeout)]
                if profile:
                    cmd.append("--profile")
                cmd += extra
                done = subprocess.run(cmd, cwd=peers.ROOT, capture_output=True, text=True,
                                      timeout=timeout + 30)
                if profile:
                    sys.stderr.write(done.stderr)
                if done.returncode != 0:
                    return Measure(contender, variant, None,
                                   f"failed: {done.stderr.strip()[-300:]}")
                out = json.loads(done.stdout.strip().splitlines()[-1])
                started, cpu = out["started"], out["cpu"]
                note = _egress_note(out, messages, v["recipients"]) if "counts" in out else ""
            reached = sink.wait_for(messages, timeout)
            if reached is None:
                return Measure(contender, variant, None,
                               f"sink saw {sink.count} of {messages} in {timeout:g} s")
            return Measure(contender, variant, messages / (reached - started), note, cpu)
    except peers.PeerUnavailable as exc:
        return Measure(contender, variant, None, f"not available: {exc}")
    except subprocess.TimeoutExpired:
        return Measure(contender, variant, None, f"timed out after {timeout:g} s")


def _egress_note(out: dict[str, Any], messages: int, recipients: int) -> str:
    c = out["counts"]
    problems = []
    if c["Delivery"] != messages * recipients:
        problems.append(f"{c['Delivery']} Delivery records of {messages * recipients}")
    if c["TransientFailure"] or c["Bounce"]:
        problems.append(f"{c['TransientFailure']} transient, {c['Bounce']} bounced")
    if out["protocol_errors"]:
        problems.append(f"{out['protocol_errors']} protocol errors")
    lag = out["journaled"] - out["done"]
    if lag > 0.05:
        problems.append(f"journal caught up {lag:.2f} s after the last delivery")
    return "; ".join(problems)


def run(*, messages: dict[str, int], rounds: int, contenders: Sequence[str] = CONTENDERS,
        variants: Sequence[str] = tuple(VARIANTS), timeout: float = 120.0,
        log: Any = None, extra: Sequence[str] = ()) -> Table:
    """Every contender x variant, `rounds` times, rotating the order each round."""
    table = Table(messages=dict(messages), rounds=rounds)
    with peers.DnsServer({DOMAIN: "127.0.0.2"}) as dns:
        for r in range(rounds):
            row: list[Measure] = []
            for variant in variants:
                order = list(contenders)
                order = order[r % len(order):] + order[:r % len(order)]
                for i, contender in enumerate(order):
                    # Each contender gets its own sink address, so a slow
                    # TIME_WAIT pile-up from one run cannot touch the next.
                    host = f"127.0.0.{2 + i}"
                    dns.domains[DOMAIN] = host
                    m = measure(contender, variant, messages[variant], host, dns, timeout,
                                extra=extra)
                    row.append(m)
                    if log is not None:
                        rate = f"{m.rate:,.0f}/s" if m.rate else "-"
                        cpu = f"cpu {m.cpu:.2f}" if m.cpu is not None else ""
                        print(f"  round {r + 1} {variant:<12} {contender:<17} {rate:>10} "
                              f"{cpu} {m.note}", file=log, flush=True)
            table.measures.append(row)
    return table


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summary_rows(table: Table) -> list[tuple[str, str, str]]:
    """(figure, median, note) rows for the combined table of `python -m bench`."""
    rows = []
    for variant in VARIANTS:
        if variant not in table.messages:
            continue
        n = table.messages[variant]
        for c in CONTENDERS + tuple(c for c in LOOP_CONTENDERS if table.rates(c, variant)):
            rates = table.rates(c, variant)
            if rates:
                mine = [m for r in table.measures for m in r
                        if m.contender == c and m.variant == variant and m.cpu is not None]
                cpus = [m.cpu for m in mine]
                # CPU per message: what a loaded machine changes least (the wall
                # rate falls with the load; the work per message does not)
                per_msg = [m.cpu / m.rate * 1e6 for m in mine if m.rate]
                cpu = (f", cpu/wall {_med(cpus):.2f}, {_med(per_msg):.0f} us CPU/msg"
                       if cpus and per_msg else "")
                rows.append((f"delivery {variant} ({n:,}): {c} msg/s", f"{_med(rates):,.0f}",
                             f"min {min(rates):,.0f} max {max(rates):,.0f}{cpu}"))
            else:
                notes = {m.note for r in table.measures for m in r
                         if m.contender == c and m.variant == variant}
                rows.append((f"delivery {variant} ({n:,}): {c} msg/s", "n/a",
                             "; ".join(sorted(notes))[:120]))
        for a, b, target in (("egress", "aiosmtplib", ">= 1.5x"),
                             ("egress", "smtp-source", ">= 0.35x"),
                             ("egress", "egress-nojournal", "journal's share"),
                             ("egress-uvloop", "egress-asyncio", "keep uvloop if > 1")):
            ratio = _med(table.ratios(a, b, variant))
            if a in LOOP_CONTENDERS and ratio is None:
                continue
            rows.append((f"delivery {variant}: {a} / {b}",
                         f"{ratio:.2f}x" if ratio else "n/a",
                         target if variant == "reuse" or b == "egress-nojournal" else ""))
    return rows


def print_table(rows: list[tuple[str, str, str]], file: Any = None) -> None:
    """The rows as an aligned text table."""
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}", file=file or sys.stdout)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.delivery [--quick] [--rounds N] [--messages N] [--profile]`."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    w = sub.add_parser("worker", help="internal: run one contender and print JSON")
    w.add_argument("--contender", choices=("aiosmtplib", "egress", "egress-nojournal",
                                           "egress-uvloop", "egress-asyncio"),
                   required=True)
    w.add_argument("--variant", choices=tuple(VARIANTS), required=True)
    w.add_argument("--messages", type=int, required=True)
    w.add_argument("--sink", required=True)
    w.add_argument("--dns-port", type=int, default=0)
    w.add_argument("--dir", default=None)
    w.add_argument("--timeout", type=float, default=120.0)
    w.add_argument("--profile", action="store_true")
    w.add_argument("--profile-top", type=int, default=30)
    w.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval for the GIL experiment")
    p.add_argument("--quick", action="store_true", help="300 messages, 1 round (a smoke test)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--messages", type=int, default=None,
                   help=f"messages per run, every variant (default {FULL_SIZE})")
    p.add_argument("--variant", action="append", choices=tuple(VARIANTS))
    p.add_argument("--contender", action="append", choices=CONTENDERS + LOOP_CONTENDERS)
    p.add_argument("--profile", choices=("egress", "egress-nojournal"),
                   help="run that contender once under cProfile (the first --variant, "
                   "default reuse) and print the top")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on each run, seconds")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval in the Python senders (GIL experiment)")
    args = p.parse_args(argv)
    if args.cmd == "worker":
        _worker(args)
        return 0
    if args.profile:
        variant = (args.variant or ["reuse"])[0]
        n = args.messages or FULL_SIZE[variant]
        with peers.DnsServer({DOMAIN: "127.0.0.2"}) as dns:
            m = measure(args.profile, variant, n, "127.0.0.2", dns, args.timeout, profile=True)
        print(f"{args.profile} under cProfile: {m.rate or 0:,.0f} msg/s {m.note}")
        return 0
    variants = args.variant or tuple(VARIANTS)
    sizes = {v: args.messages or (300 if args.quick else FULL_SIZE[v]) for v in variants}
    table = run(messages=sizes, rounds=args.rounds or (1 if args.quick else 3),
                contenders=args.contender or CONTENDERS, variants=variants,
                timeout=args.timeout, log=sys.stderr,
                extra=("--switch-interval", str(args.switch_interval))
                if args.switch_interval else ())
    print(f"delivery into smtp-sink, {CONNECTIONS} connections, {SIZE} B messages, "
          f"{table.rounds} round(s), median (nproc {os.cpu_count()}, "
          f"Python {peers.python_version()})")
    print_table(summary_rows(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
