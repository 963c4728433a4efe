"""`sim.run` and what it returns.

`SimResult` is what a capacity planner reads: `summary` (a flat, JSON-ready
dict of the figures that answer "how long, how deep, how many failed"),
`records` (the engine's log records, KumoMTA's JSON shape), `series` (numpy
arrays sampled at a fixed simulated interval) and `to_frame()` for pandas.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.driver import ProgressFn, SimDriver


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


class RecordFile:
    """A record sink writing JSON lines: `run(..., record_sink=RecordFile(p))`
    streams a big run's records to disk instead of holding them in memory."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "w", buffering=1 << 20)  # noqa: SIM115 - closed by close()
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def __call__(self, record: dict[str, Any]) -> None:
        self._fh.write(self._dumps(record))
        self._fh.write("\n")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _npz_key(name: str) -> str:
    """npz member names become file names: keep them portable."""
    return name.replace("/", "_").replace(">", "").replace(":", "__")


def run(
    scenario: Any,
    progress: ProgressFn | None = None,
    *,
    keep_records: bool = True,
    record_sink: Callable[[dict[str, Any]], None] | None = None,
) -> SimResult:
    """Simulate `scenario` (a `sim.Scenario`) to its horizon or until every
    message is finished, whichever comes first.  The run is fully determined by
    the scenario and its seed."""
    from sim.traffic import arrivals

    started = time.perf_counter()
    driver = SimDriver(
        scenario, progress=progress, keep_records=keep_records, record_sink=record_sink
    )
    horizon = float(scenario.horizon)
    driver.run(arrivals(scenario, _traffic_rng(scenario)), horizon)
    wall = time.perf_counter() - started
    obs = driver.observer
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
    }
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


def _traffic_rng(scenario: Any) -> Any:
    import random

    return random.Random(f"traffic:{scenario.seed}")
