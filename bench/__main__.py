"""``python -m bench``: every benchmark of issue 7, then one table of the figures.

Each benchmark stays runnable on its own (``python -m bench.delivery`` and so
on, each with ``--quick``).  This runner starts the core, simulation and
journal ones as subprocesses (so one's heap cannot slow the next), prints
their own reports as they finish, picks each one's headline figures out of
its report, runs the delivery and end-to-end ones in this process (they
start their peers as processes themselves), and ends with one table: the
figure, its median, and what it is measured against.  A headline that cannot
be found (a report's format changed) says so in the table instead of failing
the run, and a benchmark that fails or times out is a row, not a crash.

    python -m bench               # full sizes (tens of minutes)
    python -m bench --quick       # tiny sizes, a minute or two
    python -m bench --only delivery --only e2e --markdown
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from bench import delivery, e2e, peers

Row = tuple[str, str, str]


@dataclass(frozen=True)
class External:
    """A benchmark run as ``python -m MODULE``, and how to read its headlines."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    headlines: tuple[tuple[str, str, str], ...]  # (figure, regex with one group, note)


EXTERNAL = (
    External("core", ("bench.core",), ("bench.core", "--quick"), (
        ("core: us/event at 10,000 queued", r"^\s+10,000\s+[\d,]+\s+([\d.]+)", ""),
        ("core: us/event at 1,000,000 queued", r"^\s+1,000,000\s+[\d,]+\s+([\d.]+)",
         "flat within 1.3x of 10 k"),
        ("core: events/s at 10,000 queued", r"^\s+10,000\s+[\d,]+\s+[\d.]+\s+([\d,]+)", ""),
        ("core: bytes per queued message (engine only)",
         r"engine overhead only[^:]*:\s+([\d.]+)", "<= 350"),
    )),
    External("sim", ("bench.sim",),
             ("bench.sim", "--scenario", "scenarios/quickstart.toml", "--repeat", "1"), (
        ("sim: wall s (median)", r"wall s\s+min [\d.]+\s+median ([\d.]+)", "<= 20 s at 1 M"),
        ("sim: simulated msgs/s", r"sim msgs/s \(wall\)\s+([\d,]+)", ""),
        ("sim: ratio vs bare SimPy", r"ratio vs bare SimPy min [\d.]+\s+median ([\d.]+)",
         "<= 3x"),
    )),
    External("journal", ("bench.journal",), ("bench.journal", "--quick"), (
        ("journal: group-commit appends/s, 32 appenders", r"^\s+32\s+([\d,]+)", ""),
        ("journal: group commit / commit each, 32 appenders",
         r"^\s+32\s+[\d,]+\s+[\d.]+\s+[\d,]+\s+([\d.]+x)", "same run"),
        ("journal: recovery from scratch, s (simulated stream)",
         r"from scratch: read\+decode\+handle\s+([\d.]+)", "1 M events"),
        ("journal: recovery from snapshot, s (simulated stream)",
         r"from snapshot: restore \+ tail\s+([\d.]+)", "snapshot 10 k events before the end"),
        ("journal: recovery from scratch, s (1 M queued)",
         r"(?s)MessageSubmitted only.*?from scratch: read\+decode\+handle\s+([\d.]+)",
         "worst case for state size"),
        ("journal: recovery from snapshot, s (1 M queued)",
         r"(?s)MessageSubmitted only.*?from snapshot: restore \+ tail\s+([\d.]+)", ""),
    )),
    External("memory", ("bench.memory",), ("bench.memory", "--quick"), (
        ("memory: bytes per queued message (tracemalloc, with id/rcpt strings)",
         r"bytes per message at ([\d,]+ queued: \d+) with", "<= 350 at 1,000,000"),
        ("memory: egress deliver RSS holding the queue",
         r"RSS holding [\d,]+ queued\s+([\d.,]+ MiB)", "100,000 at full size"),
        ("memory: egress deliver RSS - idle, per queued message",
         r"RSS - idle, per queued message\s+([\d,]+) B", "bytes"),
        ("memory: spool on disk per message", r"spool on disk.*?([\d,]+) B/msg", "bytes"),
    )),
)
SECTIONS = ("core", "sim", "journal", "memory", "delivery", "e2e")


def run_external(b: External, quick: bool, timeout: float) -> list[Row]:
    """Run one benchmark module, print its report, return its headline rows."""
    cmd = [sys.executable, "-m", *(b.quick if quick else b.full)]
    print(f"\n## {b.name}: {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=peers.ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return [(f"{b.name}: run", "failed", f"timed out after {timeout:g} s")]
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return [(f"{b.name}: run", "failed", f"exit {done.returncode}: "
                 f"{done.stderr.strip().splitlines()[-1:] or ''}"[:120])]
    rows = []
    for figure, pattern, note in b.headlines:
        found = re.search(pattern, done.stdout, re.M)
        rows.append((figure, found.group(1) if found else "?",
                     note if found else "not found in the report above"))
    rows.append((f"{b.name}: wall time of the benchmark, s",
                 f"{time.monotonic() - started:.1f}", ""))
    return rows


def header(quick: bool) -> str:
    """Machine, Python, date and the command, as BENCHMARKS.md records them."""
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python -m bench" + (" --quick" if quick else "")
    return (f"{cmd} | {today} | nproc {os.cpu_count()} | Python {peers.python_version()} | "
            f"{os.uname().machine}")


def print_rows(rows: list[Row], markdown: bool) -> None:
    """The combined table, plain or as Markdown (for BENCHMARKS.md)."""
    if markdown:
        print("| figure | median | against / note |\n|---|---:|---|")
        for name, value, note in rows:
            print(f"| {name} | {value} | {note} |")
    else:
        delivery.print_table(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks (all by default) and print one table."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these")
    p.add_argument("--rounds", type=int, default=None, help="rounds of delivery and e2e")
    p.add_argument("--markdown", action="store_true", help="the final table in Markdown")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="bound on each external benchmark, seconds")
    args = p.parse_args(argv)
    chosen = args.only or SECTIONS
    rounds = args.rounds or (1 if args.quick else 3)
    rows: list[Row] = []
    for b in EXTERNAL:
        if b.name in chosen:
            rows += run_external(b, args.quick, args.timeout)
    if "delivery" in chosen:
        print("\n## delivery: python -m bench.delivery", flush=True)
        sizes = {v: 300 if args.quick else n for v, n in delivery.FULL_SIZE.items()}
        table = delivery.run(messages=sizes, rounds=rounds, log=sys.stdout)
        rows += delivery.summary_rows(table)
    if "e2e" in chosen:
        print("\n## e2e: python -m bench.e2e", flush=True)
        e2e_table = e2e.run(messages=300 if args.quick else 20_000, rounds=rounds,
                            log=sys.stdout)
        rows += e2e.summary_rows(e2e_table)
    print(f"\n## summary: {header(args.quick)}")
    print_rows(rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
