"""`egress compare SIM_DIR LAB_DIR`: one scenario's two realisations side by side.

Both directories hold what ``egress simulate --out`` and ``egress lab --run
--out`` write (summary.json, series.npz).  `compare_dirs` reads them into a
`Comparison`: rows of (figure, sim, lab, relative difference) for the figures
that say whether the simulator tells the truth (drain time, deliveries,
failures, peak connections per path, the mean delivery rate, the distance
between the two delivered-per-minute curves, the largest gap between the
cumulative curves as a fraction of the deliveries) and the curves themselves,
resampled onto one time grid so they can be drawn on one chart.

The relative difference is ``(lab - sim) / sim``: positive when the lab is
slower, higher or later.  It is None when the simulator's figure is 0 and the
lab's is not (0 when both are).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.durations import show_duration
from engine.errors import EgressError

CURVE_POINTS = 60  # bins of the delivered-per-minute curve over the longer run
DURATION_ROWS = frozenset({"drain time"})


class CompareError(EgressError, ValueError):
    """A directory to compare is missing or lacks a run's outputs."""


@dataclass(frozen=True, slots=True)
class Row:
    """One figure, both ways."""

    name: str
    sim: float | None
    lab: float | None

    @property
    def rel_diff(self) -> float | None:
        """``(lab - sim) / sim``; 0 when both are 0; None when undefined."""
        if self.sim is None or self.lab is None:
            return None
        if self.sim == 0:
            return 0.0 if self.lab == 0 else None
        return (self.lab - self.sim) / abs(self.sim)


@dataclass
class Run:
    """One run's summary and series, as written to its directory."""

    path: Path
    summary: dict[str, Any]
    series: dict[str, np.ndarray]

    @classmethod
    def load(cls, directory: str | Path) -> Run:
        """Read summary.json and series.npz from `directory`."""
        d = Path(directory)
        if not d.is_dir():
            raise CompareError(f"{d}: not a directory (expected the --out of egress simulate "
                               "or egress lab --run)")
        missing = [n for n in ("summary.json", "series.npz") if not (d / n).is_file()]
        if missing:
            raise CompareError(f"{d}: missing {' and '.join(missing)} (expected the --out of "
                               "egress simulate or egress lab --run)")
        summary = json.loads((d / "summary.json").read_text())
        with np.load(d / "series.npz") as npz:
            series = {k: npz[k] for k in npz.files}
        for key in ("t", "delivered_cumulative"):
            if key not in series:
                raise CompareError(f"{d}/series.npz: has no {key!r} array")
        return cls(d, summary, series)


@dataclass
class Comparison:
    """The rows, and the curves on one grid (``t`` seconds; per-minute rates)."""

    sim: Run
    lab: Run
    rows: list[Row] = field(default_factory=list)
    t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sim_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lab_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def row(self, name: str) -> Row:
        """The row called `name` (KeyError if there is none)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {
            "sim": str(self.sim.path),
            "lab": str(self.lab.path),
            "rows": [{"name": r.name, "sim": r.sim, "lab": r.lab, "rel_diff": r.rel_diff}
                     for r in self.rows],
        }

    def table(self) -> str:
        """A fixed-width text table (durations as every command prints them)."""
        width = max([len(r.name) for r in self.rows] + [6])
        lines = [f"{'figure':<{width}}  {'sim':>12}  {'lab':>12}  {'lab vs sim':>10}"]
        for r in self.rows:
            diff = "n/a" if r.rel_diff is None else f"{r.rel_diff:+.1%}"
            lines.append(f"{r.name:<{width}}  {cell(r, r.sim):>12}  {cell(r, r.lab):>12}  "
                         f"{diff:>10}")
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None) -> Any:
        """Delivered per minute, cumulative deliveries and connections, sim and
        lab on the same axes; saved to `path` if given; the figure."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 9), layout="constrained")
        ax_r, ax_c, ax_n = fig.subplots(3, 1, sharex=True)
        ax_r.step(self.t, self.sim_rate, where="post", label="sim", color="tab:blue")
        ax_r.step(self.t, self.lab_rate, where="post", label="lab", color="tab:orange")
        ax_r.set_ylabel("delivered / min")
        ax_r.legend(loc="upper right")
        name = self.sim.summary.get("scenario", "")
        ax_r.set_title(f"{name}: simulator vs lab")
        for run, color in ((self.sim, "tab:blue"), (self.lab, "tab:orange")):
            s = run.series
            label = "sim" if run is self.sim else "lab"
            ax_c.plot(s["t"], s["delivered_cumulative"], label=label, color=color)
            if "connections" in s:
                ax_n.step(s["t"], s["connections"], where="post", label=label, color=color)
        ax_c.set_ylabel("delivered (cumulative)")
        ax_c.legend(loc="lower right")
        ax_n.set_ylabel("open connections")
        ax_n.set_xlabel("seconds since the traffic started")
        ax_n.legend(loc="upper right")
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig


def cell(row: Row, value: float | None) -> str:
    """One side of a row as printed: durations as every command prints them."""
    return show_duration(value) if row.name in DURATION_ROWS else _num(value)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if float(v).is_integer():
        return f"{int(v)}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def rate_curve(series: dict[str, np.ndarray], grid: np.ndarray) -> np.ndarray:
    """Deliveries per minute in each bin ``[grid[i], grid[i+1])`` (len(grid) - 1 values)."""
    cum = np.interp(grid, series["t"], series["delivered_cumulative"].astype(np.float64))
    width = np.diff(grid)
    return np.diff(cum) / width * 60.0


def cumulative_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The largest gap between two cumulative delivered curves, as a fraction of
    the larger total: 0 when one run delivered exactly as the other did, minute
    by minute; 0.05 when at some moment one was 5 % of the campaign behind."""
    end = max(float(a["t"][-1]), float(b["t"][-1]))
    grid = np.union1d(a["t"], b["t"])
    grid = grid[grid <= end]
    ca = np.interp(grid, a["t"], a["delivered_cumulative"].astype(np.float64))
    cb = np.interp(grid, b["t"], b["delivered_cumulative"].astype(np.float64))
    total = max(float(ca[-1]), float(cb[-1]), 1.0)
    return float(np.abs(ca - cb).max(initial=0.0) / total)


def compare(sim: Run, lab: Run) -> Comparison:
    """The rows and curves of two runs of the same scenario."""
    a, b = sim.summary, lab.summary
    rows = [Row(k.replace("_", " "), _f(a.get(k)), _f(b.get(k))) for k in (
        "drain_time", "delivered", "bounced", "transient_failures", "still_queued")]
    paths = sorted(set(a.get("peak_connections", {})) | set(b.get("peak_connections", {})))
    for p in paths:
        rows.append(Row(f"peak connections {p}", _f(a["peak_connections"].get(p, 0)),
                        _f(b["peak_connections"].get(p, 0))))
    rows.append(Row("peak connections (all paths)",
                    _f(_max(sim.series.get("connections"))),
                    _f(_max(lab.series.get("connections")))))
    rows.append(Row("delivered per minute (mean to drain)", _mean_rate(a), _mean_rate(b)))
    span = max(float(sim.series["t"][-1]), float(lab.series["t"][-1]), 1e-9)
    grid = np.linspace(0.0, span, CURVE_POINTS + 1)
    sim_rate, lab_rate = rate_curve(sim.series, grid), rate_curve(lab.series, grid)
    peak = max(float(sim_rate.max(initial=0.0)), 1e-9)
    rows.append(Row("per-minute curve: mean |lab - sim| / sim peak", None,
                    float(np.abs(lab_rate - sim_rate).mean() / peak)))
    rows.append(Row("cumulative curve: max |lab - sim| / delivered", None,
                    cumulative_distance(sim.series, lab.series)))
    return Comparison(sim, lab, rows, grid[:-1], sim_rate, lab_rate)


def compare_dirs(sim_dir: str | Path, lab_dir: str | Path, *, force: bool = False
                 ) -> Comparison:
    """`compare` of the runs written to two directories; runs of different
    scenarios are refused (`same_scenario`) unless `force`."""
    sim, lab = Run.load(sim_dir), Run.load(lab_dir)
    if not force:
        same_scenario(sim, lab)
    return compare(sim, lab)


def same_scenario(a: Run, b: Run) -> None:
    """Raise `CompareError` unless both runs are of one scenario: the same name
    and, where both summaries carry it, the same ``scenario_hash`` (the
    scenario's tables after ``--set``, seed left out)."""
    name_a, name_b = a.summary.get("scenario"), b.summary.get("scenario")
    hash_a, hash_b = a.summary.get("scenario_hash"), b.summary.get("scenario_hash")
    if name_a != name_b:
        why = f"{a.path} is a run of {name_a!r}, {b.path} of {name_b!r}"
    elif hash_a and hash_b and hash_a != hash_b:
        why = (f"{a.path} and {b.path} are runs of {name_a!r} with different values "
               f"(scenario_hash {hash_a} vs {hash_b}: another file or other --set)")
    else:
        return
    raise CompareError(f"not the same scenario: {why}; --force compares them anyway")


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _max(v: np.ndarray | None) -> float | None:
    return None if v is None or len(v) == 0 else float(v.max())


def _mean_rate(summary: dict[str, Any]) -> float | None:
    drain = summary.get("drain_time")
    if not drain:
        return None
    return float(summary.get("delivered", 0)) / float(drain) * 60.0
