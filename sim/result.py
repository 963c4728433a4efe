"""`sim.run` and what it returns.

`SimResult` is what a capacity planner reads: `summary` (a flat, JSON-ready
dict of the figures that answer "how long, how deep, how many failed"),
`records` (the engine's log records, KumoMTA's JSON shape: by default the
outcomes only, since a full ready queue's `Delayed` records can outnumber the
messages many times over; the summary counts every record), `series` (numpy
arrays sampled at a fixed simulated interval) and `to_frame()` for pandas.
The summary also says, per path, how often messages were re-delayed, and
names a path that re-delayed more than once per message with the max_ready
that would have held it (`advice`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.driver import ProgressFn, SimDriver
from sim.observer import OUTCOMES
from sim.record_file import RecordFile as RecordFile  # where it used to live

#: `records=` choices: which log records a run keeps and writes (all are counted).
RECORD_CHOICES = ("outcomes", "all", "none")
#: Above this, a run says how big its records.jsonl will be before it starts.
LARGE_RECORDS = 1 << 30


@dataclass
class SimResult:
    """The outcome of one simulated run."""

    summary: dict[str, Any]
    records: list[dict[str, Any]]
    series: dict[str, np.ndarray]
    scenario_name: str = ""
    seed: int = 0
    counters: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0  # not in `summary`: a summary is a pure function of the seed
    # (start, end, label) windows worth marking on a plot: the scenario's outages
    windows: list[tuple[float, float, str]] = field(default_factory=list)

    def to_frame(self) -> Any:
        """The series as a pandas DataFrame indexed by simulated seconds."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("SimResult.to_frame() needs pandas: pip install pandas") from exc
        data = {k: v for k, v in self.series.items() if k != "t"}
        return pd.DataFrame(data, index=pd.Index(self.series["t"], name="t"))

    def records_frame(self) -> Any:
        """The log records as a pandas DataFrame (nested fields flattened)."""
        import pandas as pd

        return pd.json_normalize(self.records)

    def write(self, out: str | Path, *, plot: bool = True, records: bool = True) -> list[Path]:
        """Write records.jsonl, series.npz, summary.json and plot.png under `out`.

        `records=False` leaves records.jsonl alone: for a run that streamed its
        records there as they came (`RecordFile`), holding none in memory."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        path = out / "records.jsonl"
        if records:
            with RecordFile(path) as sink:
                for record in self.records:
                    sink(record)
        written.append(path)
        path = out / "series.npz"
        np.savez_compressed(path, **{_npz_key(k): v for k, v in self.series.items()})
        written.append(path)
        path = out / "summary.json"
        path.write_text(json.dumps(self.summary, indent=2, sort_keys=True) + "\n")
        written.append(path)
        if plot:
            from sim.plot import plot_run

            path = out / "plot.png"
            plot_run(self, path)
            written.append(path)
        return written


def _npz_key(name: str) -> str:
    """npz member names become file names: keep them portable."""
    return name.replace("/", "_").replace(">", "").replace(":", "__")


def run(
    scenario: Any,
    progress: bool | ProgressFn | None = None,
    *,
    records: str = "outcomes",
    keep_records: bool = True,
    record_sink: Callable[[dict[str, Any]], None] | None = None,
    exact: bool | None = None,
) -> SimResult:
    """Simulate `scenario` (a `sim.Scenario`) to its horizon or until every
    message is finished, whichever comes first.  The run is fully determined by
    the scenario and its seed.

    `progress`: None or False for silence; True for a line on stderr about
    every 10 s of wall time; or a callable taking (simulated seconds,
    finished, submitted), called at every sample and once more with the
    run's final figures (on ``nodes = N``, every node's added up).
    `records`: which records `SimResult.records` (and `record_sink`) get:
    ``"outcomes"`` (Reception, Delivery, TransientFailure, Bounce,
    Expiration, AdminBounce; the default), ``"all"`` (also a `Delayed` per
    re-delay) or ``"none"``.  Every record is counted in the summary either
    way.  `keep_records=False` holds none in memory (a sink still gets them).
    `exact`: True re-delays each message that meets a full ready queue by its
    own draw with a `Delayed` record each (KumoMTA's per-message rule, the
    live engine's path); False samples those re-delays lazily from the same
    distribution (`engine.backlog`: cost linear in the backlog) and counts
    them without a record each.  None (the default) is False, except for
    ``records="all"``, which asks for those records and so for the exact
    path.  Given `exact`, what is written never changes the run."""
    from sim.traffic import arrivals, traffic_rng

    kinds = record_kinds(records)
    progress_fn = progress_function(progress)
    report = None if progress_fn is None else _Report(progress_fn)
    started = time.perf_counter()
    if exact is None:
        exact = records == "all"
    if scenario.nodes > 1:
        return _run_nodes(scenario, kinds, keep_records, record_sink, started,
                          exact=exact, report=report)
    driver = SimDriver(scenario, progress=report, keep_records=keep_records,
                       record_sink=record_sink, record_kinds=kinds, exact=exact)
    horizon = float(scenario.horizon)
    driver.run(arrivals(scenario, traffic_rng(scenario)), horizon)
    if report is not None:
        report.end(driver.env.now, driver.observer.finished, driver.submitted)
    wall = time.perf_counter() - started
    obs = driver.observer
    obs.lazy_redelays(driver.engine.lazy_redelayed, driver.engine.overflow_peaks())
    counts = obs.counts
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "scenario_hash": scenario_hash(scenario),
        "seed": scenario.seed,
        "submitted": driver.submitted,
        "recipients": counts["Reception"],
        "delivered": counts["Delivery"],
        "bounced": counts["Bounce"] + counts["AdminBounce"],
        "expired": counts["Expiration"],
        "still_queued": driver.submitted - obs.finished,
        "transient_failures": counts["TransientFailure"],
        "delayed": counts["Delayed"],
        "drain_time": obs.drain_time,
        "simulated_time": driver.env.now,
        "horizon": horizon,
        "time_to_deliver_p50": obs.percentile(50),
        "time_to_deliver_p95": obs.percentile(95),
        "time_to_deliver_p99": obs.percentile(99),
        "peak_ready_depth": dict(sorted(driver.engine.ready_peaks().items())),
        "peak_connections": dict(sorted(obs.peak_connections.items())),
        "deferrals": dict(sorted(obs.reasons.items())),
        "records": dict(sorted(counts.items())),
        "redelays": obs.redelays.summary(),
    }
    summary["advice"] = advice(summary, scenario)
    return SimResult(
        summary=summary,
        records=obs.records,
        series=obs.series(),
        scenario_name=scenario.name,
        seed=scenario.seed,
        counters=dict(driver.engine.counters),
        wall_seconds=wall,
        windows=outage_windows(scenario),
    )


def _run_nodes(scenario: Any, kinds: Any, keep_records: bool,
               record_sink: Callable[[dict[str, Any]], None] | None, started: float,
               *, exact: bool, report: _Report | None) -> SimResult:
    """`run` for ``nodes = N``: N engines sharing their limits (`sim.nodes`), each
    on the path `run` chose (`exact`), `report` told the nodes' figures added up.
    The summary and series say what a single run's say, for the nodes together
    (`sim.nodes_summary`), and each node's share."""
    from sim.nodes import merged_records, run_nodes
    from sim.nodes_summary import merged_counters, merged_series, nodes_figures
    from sim.traffic import arrivals, traffic_rng

    drivers, store = run_nodes(scenario, arrivals(scenario, traffic_rng(scenario)),
                               keep_records=keep_records, record_sink=record_sink,
                               record_kinds=kinds, exact=exact, progress=report)
    for d in drivers:  # each node's lazily sampled re-delays, counted as single runs count them
        d.observer.lazy_redelays(d.engine.lazy_redelayed, d.engine.overflow_peaks())
    figures = nodes_figures(drivers, store, float(scenario.horizon))
    if report is not None:
        report.end(drivers[0].env.now, figures["submitted"] - figures["still_queued"],
                   figures["submitted"])
    summary: dict[str, Any] = {"scenario": scenario.name, "scenario_hash": scenario_hash(scenario),
                               "seed": scenario.seed, **figures}
    summary["advice"] = advice(summary, scenario, nodes=len(drivers))
    return SimResult(
        summary=summary, records=merged_records(drivers),
        series=merged_series([d.observer.series() for d in drivers]),
        scenario_name=scenario.name, seed=scenario.seed, counters=merged_counters(drivers),
        wall_seconds=time.perf_counter() - started, windows=outage_windows(scenario),
    )


def record_kinds(records: str) -> frozenset[str] | None:
    """The record types a `records=` choice keeps (None: every type)."""
    if records == "all":
        return None
    if records == "outcomes":
        return OUTCOMES
    if records == "none":
        return frozenset()
    raise ValueError(f"records must be one of {', '.join(RECORD_CHOICES)}, got {records!r}")


def progress_function(progress: Any) -> ProgressFn | None:
    """What `run(progress=...)` accepts, as the driver's callable (or None)."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return LineProgress(sys.stderr)
    if callable(progress):
        return progress  # type: ignore[no-any-return]
    raise TypeError("progress must be True, False, None or a callable taking "
                    f"(simulated seconds, finished, submitted), got {progress!r}")


class _Report:
    """A run's progress callable, told the final figures too when the run ends
    (`end`), unless its last sample already said them.  A callable with an
    `end` method of its own (`LineProgress`) is told through it, always: it
    may not have shown its last sample."""

    def __init__(self, fn: ProgressFn) -> None:
        self.fn = fn
        self.last: tuple[float, int, int] | None = None

    def __call__(self, now: float, finished: int, submitted: int) -> None:
        self.last = (now, finished, submitted)
        self.fn(now, finished, submitted)

    def end(self, now: float, finished: int, submitted: int) -> None:
        own = getattr(self.fn, "end", None)
        if own is not None:
            own(now, finished, submitted)
        elif self.last != (now, finished, submitted):
            self(now, finished, submitted)


class LineProgress:
    """A progress callable that prints one line at the first sample, then about
    every `interval` wall seconds, and the run's final figures when it ends
    (`end`): simulated time, finished/submitted, messages finished per wall
    second.  For logs and pipes, where a live bar is noise."""

    def __init__(self, stream: Any, interval: float = 10.0, label: str = "") -> None:
        self.stream = stream
        self.interval = interval
        self.label = f"{label}: " if label else ""
        self._started = self._last = time.perf_counter()
        self._last_finished = 0
        self._first = True  # the first sample prints at once: the run has started
        self._shown: tuple[float, int, int] | None = None  # the figures of the last line

    def __call__(self, now: float, finished: int, submitted: int) -> None:
        if time.perf_counter() - self._last >= self.interval or self._first:
            self._print(now, finished, submitted)

    def end(self, now: float, finished: int, submitted: int) -> None:
        """The run's final figures: printed, unless the last line said them."""
        if self._shown != (now, finished, submitted):
            self._print(now, finished, submitted)

    def _print(self, now: float, finished: int, submitted: int) -> None:
        wall = time.perf_counter()
        self._first = False
        self._shown = (now, finished, submitted)
        rate = (finished - self._last_finished) / max(wall - self._last, 1e-9)
        self._last, self._last_finished = wall, finished
        print(f"{self.label}simulated {_clock(now)}, finished {finished:,}/{submitted:,}, "
              f"{rate:,.0f} messages/s (wall {wall - self._started:,.0f} s)",
              file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


#: A path re-delaying more often than this per message, on average, is named.
REDELAY_ADVICE = 1.0


def advice(summary: dict[str, Any], scenario: Any, *, nodes: int = 1) -> list[dict[str, Any]]:
    """Paths that re-delayed more than once per message on average, each with
    the max_ready that would have held its backlog and the line to try it.
    On `nodes` > 1 the peaks are one node's (`sim.nodes_summary`), and so is
    the max_ready: each node has its own ready queue."""
    out = []
    where, per = ("", "") if nodes <= 1 else (
        " on one node", f"; each of the {nodes} nodes has its own ready queue")
    for path, r in summary["redelays"].items():
        mean = r["redelays_per_message_mean"]
        waiting = r["peak_waiting_behind_full_ready_queue"]
        if mean is None or mean <= REDELAY_ADVICE or not waiting:
            continue
        held = waiting + summary["peak_ready_depth"].get(path, 0)
        suggest = _round_up(held)
        if getattr(scenario, "policy_file", None) is not None:
            how = f"max_ready = {suggest} in the policy file's make_egress_path for this path"
        else:
            how = f"--set egress_path.max_ready={suggest}"
        out.append({
            "path": path,
            "redelays_per_message_mean": mean,
            "peak_waiting_behind_full_ready_queue": waiting,
            "max_ready_to_hold_it": suggest,
            "try": how,
            "text": (f"{path} re-delayed {mean:.1f} times per message on average: up to "
                     f"{waiting:,} messages waited at once behind its full ready queue{where} "
                     f"(peak ready depth {summary['peak_ready_depth'].get(path, 0):,}{per}); "
                     f"max_ready {suggest:,} would have held them: {how}"),
        })
    return out


def _round_up(n: int) -> int:
    """Up to two significant figures: 83,412 -> 84,000."""
    if n < 100:
        return max(n, 1)
    scale = 10 ** (int(math.log10(n)) - 1)
    return -(-n // scale) * scale


#: Bytes per record in records.jsonl, measured on the shipped scenarios
#: (every field of KumoMTA's JsonLogRecord: quickstart averages 835).
RECORD_BYTES = 840


def records_estimate(scenario: Any, records: str) -> tuple[int, str] | None:
    """(bytes, what the estimate counts) for records.jsonl, from the scenario's
    traffic, or None when nothing is written.  Outcomes: a Reception and an
    outcome per message, plus a TransientFailure per expected tempfail;
    Delayed records depend on the run and are named, not estimated."""
    if records == "none":
        return None
    messages = sum(stream.expected_messages for stream in scenario.traffic)
    tempfail = max((getattr(h, "tempfail_rcpt", 0.0) or 0.0 for h in scenario.hosts.values()),
                   default=0.0)
    per_message = 2.0 + tempfail
    size = int(messages * per_message * RECORD_BYTES)
    what = f"{messages:,.0f} messages x {per_message:.2f} records x ~{RECORD_BYTES} bytes"
    if records == "all":
        what += ", plus a Delayed record per re-delay (a blast can make many per message)"
    return size, what


def scenario_hash(scenario: Any) -> str:
    """A short digest of the scenario's tables after overrides, seed left out:
    two runs with the same digest ran the same question (`egress compare`
    refuses to set different ones side by side)."""
    import hashlib

    tables = {k: v for k, v in _plain(scenario.raw).items() if k != "seed"}
    text = json.dumps(tables, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def outage_windows(scenario: Any) -> list[tuple[float, float, str]]:
    """Each host outage as (start, end, "host mode"), hosts sharing one merged."""
    seen: dict[tuple[float, float, str], list[str]] = {}
    for name, host in sorted(scenario.hosts.items()):
        for o in getattr(host, "outages", ()):
            seen.setdefault((o.start, o.end, o.mode), []).append(name)
    return [(start, end, f"{', '.join(hosts)} {mode}")
            for (start, end, mode), hosts in sorted(seen.items())]
