"""The bodies of `egress simulate` and `egress sweep` (engine/cli.py stays thin).

Both print with rich: a live progress bar while the run goes on a terminal;
on a pipe or in a CI log, a plain line about every 10 s instead (simulated
time, finished/submitted, messages per second; a sweep's runs done/total),
so a long run is never silent.  Then a summary table.  A bad scenario is a
`ScenarioError`; the CLI prints it and exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.durations import show_duration

# Figures that are spans of time: printed with `show_duration` like every
# other duration egress prints.
DURATION_FIGURES = frozenset({"drain_time", "time_to_deliver_p50", "time_to_deliver_p95",
                              "time_to_deliver_p99"})


def _console() -> Console:
    return Console(stderr=False, highlight=False)


def load(path: str, sets: list[str]) -> Any:
    from sim.scenario import Scenario

    return Scenario.from_toml(path, sets)


def simulate(args: argparse.Namespace) -> int:
    from sim.result import LARGE_RECORDS, LineProgress, RecordFile, records_estimate, run

    sets = list(args.set or [])
    if args.seed is not None:
        sets.append(f"seed={args.seed}")
    scenario = load(args.scenario, sets)
    console = _console()
    horizon = float(scenario.horizon)
    records = getattr(args, "records", "outcomes")
    exact = True if getattr(args, "exact", False) else None  # None: exact for --records all
    interactive = console.is_terminal and not args.quiet
    estimate = records_estimate(scenario, records) if args.out else None
    if estimate is not None and estimate[0] > LARGE_RECORDS:
        console.print(f"note: records.jsonl will be about {estimate[0] / 1e9:,.1f} GB "
                      f"({estimate[1]}); --records none writes none, the summary counts them")

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TextColumn("finished {task.fields[finished]:,}/{task.fields[submitted]:,}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not interactive,
    )
    with progress:
        task = progress.add_task(scenario.name, total=horizon, clock="", finished=0, submitted=0)

        def update(now: float, finished: int, submitted: int) -> None:
            progress.update(
                task,
                completed=now,
                clock=show_duration(now),
                finished=finished,
                submitted=submitted,
            )

        report: Any = None
        if interactive:
            report = update
        elif not args.quiet:
            report = LineProgress(sys.stdout, label=scenario.name)
        if args.out and records != "none":
            # Stream records to disk: a million-message run would not fit in memory.
            def large(n: int) -> None:
                print(f"note: records.jsonl has passed {n / 1e9:.1f} GB and is still growing "
                      "(--records outcomes or none write less; the summary counts every record)",
                      file=sys.stderr, flush=True)

            with RecordFile(Path(args.out) / "records.jsonl", large=LARGE_RECORDS,
                            on_large=large) as sink:
                result = run(scenario, progress=report, records=records, exact=exact,
                             keep_records=False, record_sink=sink)
        else:
            result = run(scenario, progress=report, records=records, keep_records=False,
                         exact=exact)
            if args.out:
                (Path(args.out) / "records.jsonl").unlink(missing_ok=True)
    print_summary(console, result)
    if args.out:
        written = result.write(args.out, plot=not args.no_plot, records=False)
        if records == "none":
            written = [p for p in written if p.name != "records.jsonl"]
        console.print("wrote " + ", ".join(str(p) for p in written))
    return 0


def print_summary(console: Console, result: Any) -> None:
    s = result.summary
    table = Table(title=f"{result.scenario_name} (seed {result.seed})", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("submitted", "delivered", "bounced", "expired", "still_queued",
                "transient_failures", "delayed"):
        table.add_row(key.replace("_", " "), f"{s[key]:,}")
    drain = s["drain_time"]
    table.add_row("drain time", show_duration(drain) if drain is not None else
                  f"not drained by {show_duration(s['horizon'])}")
    for q in ("p50", "p95", "p99"):
        v = s[f"time_to_deliver_{q}"]
        table.add_row(f"time to deliver {q}", show_duration(v) if v is not None else "-")
    # a run on several nodes gives its connection peak across the nodes (what
    # the host sees), and its ready depth peak per node: each node has its own
    # ready queue per path (sim.nodes_summary)
    per_node = " (one node)" if s.get("nodes") else ""
    peaks = s.get("peak_connections", s.get("shared_peak_connections", {}))
    for path, n in peaks.items():
        table.add_row(f"peak connections {path}", str(n))
    for path, n in s.get("peak_ready_depth", {}).items():
        table.add_row(f"peak ready depth{per_node} {path}", str(n))
    for reason, n in s["deferrals"].items():
        table.add_row(f"not delivered at once: {reason}", f"{n:,}")
    for path, r in s.get("redelays", {}).items():
        table.add_row(f"messages re-delayed at least once {path}",
                      f"{r['messages_delayed_at_least_once']:,}")
        table.add_row(f"re-delays per re-delayed message {path}",
                      f"p50 {r['redelays_per_delayed_message_p50']}, "
                      f"p95 {r['redelays_per_delayed_message_p95']}, "
                      f"max {r['redelays_per_delayed_message_max']}")
        mean = r["redelays_per_message_mean"]
        if mean is not None:
            table.add_row(f"re-delays per message (mean, all its messages) {path}", f"{mean:.2f}")
    table.add_row("wall time", f"{result.wall_seconds:.2f} s")
    console.print(table)
    for item in s.get("advice", []):
        console.print(f"[bold]what is wrong:[/bold] {item['text']}", soft_wrap=True)


def sweep(args: argparse.Namespace) -> int:
    from sim.sweep import FIGURES, Vary, combinations, write_csv
    from sim.sweep import sweep as run_sweep

    base = load(args.scenario, list(args.set or []))
    varies = [Vary.parse(v) for v in args.vary]
    # Validate every combination before spending minutes on the first runs.
    for combo in combinations(varies):
        base.with_overrides(combo)
    console = _console()
    quiet = getattr(args, "quiet", False)
    interactive = console.is_terminal and not quiet
    progress = Progress(
        TextColumn("[bold]sweep"), BarColumn(), TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(), console=console, transient=True,
        disable=not interactive,
    )
    with progress:
        task = progress.add_task("sweep", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report: Any = None
        if interactive:
            report = update
        elif not quiet:
            report = SweepLines(sys.stdout)
        table_rows = run_sweep(
            base, varies, seeds=args.seeds, workers=args.workers,
            scheduler=args.scheduler, progress=report,
        )
    table = Table(title=f"sweep over {args.seeds} seed(s)")
    keys = [v.key for v in varies]
    # Long keys and figures fold onto several lines rather than being cut off.
    for k in keys:
        table.add_column(k, overflow="fold")
    shown = ("drain_time", "delivered", "transient_failures", "time_to_deliver_p95",
             "max_peak_connections")
    for f in shown:
        table.add_column(f.replace("_", " "), justify="right", overflow="fold")
    for row in table_rows:
        cells = [str(row[k]) for k in keys]
        for f in shown:
            cells.append(sweep_cell(row, f, args.seeds))
        table.add_row(*cells)
    console.print(table)
    out = Path(args.csv) if args.csv else None
    if out:
        write_csv(table_rows, out)
        console.print(f"wrote {out} ({len(table_rows)} rows, figures: {', '.join(FIGURES)})")
    return 0


class SweepLines:
    """Sweep progress for logs and pipes: runs done/total, about every `interval`
    wall seconds and when the last run is done."""

    def __init__(self, stream: Any, interval: float = 10.0) -> None:
        self.stream = stream
        self.interval = interval
        self._started = self._last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        print(f"sweep: {done}/{total} runs done (wall {now - self._started:,.0f} s)",
              file=self.stream, flush=True)


def sweep_cell(row: dict[str, Any], figure: str, seeds: int) -> str:
    """One figure of a sweep row: the mean (± the spread over seeds), durations
    as `show_duration` prints them, counts with thousands separators."""
    mean, std = row.get(f"{figure}_mean"), row.get(f"{figure}_std")
    if mean is None:
        return "-"
    show = show_duration if figure in DURATION_FIGURES else _count
    cell = f"{show(mean)} ± {show(std or 0.0)}" if seeds > 1 else show(mean)
    missing = row.get(f"{figure}_missing", 0)
    if missing:
        cell += f" ({missing} n/a)"
    return cell


def _count(value: float) -> str:
    return f"{value:,.1f}".removesuffix(".0")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `egress` command")
