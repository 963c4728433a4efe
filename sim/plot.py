"""One picture of a run: queue depths, connections and delivery rate over time.

Used by `egress simulate --out` (plot.png) and the notebooks.  matplotlib is
driven through its object API on the Agg backend so it works without a screen.

The series are samples (every ``sample_interval``), so a ready queue that
fills and drains between two samples peaks higher than its line.  The
summary's peaks are exact; each path's legend entry gives its exact peak and
a dotted line marks it where the samples fall short, so the plot and the
printed summary agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_PATHS = 8  # more lines than this is noise; the rest are summed as "other"


def _per_path(series: dict[str, np.ndarray], prefix: str) -> list[tuple[str, np.ndarray]]:
    items = [(k[len(prefix) :], v) for k, v in series.items() if k.startswith(prefix)]
    items.sort(key=lambda kv: -int(kv[1].max(initial=0)))
    if len(items) > MAX_PATHS:
        other = np.sum([v for _, v in items[MAX_PATHS - 1 :]], axis=0)
        items = [*items[: MAX_PATHS - 1], ("other paths", other)]
    return items


def _time_axis(t: np.ndarray) -> tuple[np.ndarray, str]:
    span = float(t[-1]) if len(t) else 0.0
    if span > 3 * 3600:
        return t / 3600.0, "simulated hours"
    if span > 3 * 60:
        return t / 60.0, "simulated minutes"
    return t, "simulated seconds"


def plot_run(result: Any, path: str | Path | None = None, *, title: str | None = None) -> Any:
    """Draw the three panels; save to `path` if given; return the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    s = result.series
    x, unit = _time_axis(s["t"])
    fig = Figure(figsize=(10, 9), layout="constrained")
    ax_q, ax_c, ax_r = fig.subplots(3, 1, sharex=True)

    summary = getattr(result, "summary", None) or {}
    ax_q.plot(x, s["scheduled_depth"], label="scheduled", color="black", lw=1.5)
    ready_peaks = summary.get("peak_ready_depth", {})
    # several nodes: the line adds up their ready queues, the peak is one node's
    # (each node has its own ready queue per path), so no dotted peak line
    nodes = bool(summary.get("nodes"))
    for name, values in _per_path(s, "ready_depth:"):
        peak = ready_peaks.get(name)
        label = _label(f"ready {name}", peak, " on one node" if nodes else "")
        (line,) = ax_q.plot(x, values, label=label, lw=1)
        if not nodes:
            _mark_peak(ax_q, peak, values, line.get_color())
    ax_q.set_ylabel("messages queued")
    ax_q.legend(fontsize=7, loc="upper right")
    ax_q.set_title(title or f"{result.scenario_name} (seed {result.seed})")

    conn_peaks = summary.get("peak_connections", {})
    for name, values in _per_path(s, "connections:"):
        (line,) = ax_c.step(x, values, where="post", label=_label(name, conn_peaks.get(name)),
                            lw=1)
        _mark_peak(ax_c, conn_peaks.get(name), values, line.get_color())
    ax_c.set_ylabel("open connections")
    ax_c.legend(fontsize=7, loc="upper right")

    scale = float(s["t"][-1]) / float(x[-1]) if len(x) and x[-1] else 1.0
    for start, end, label in getattr(result, "windows", ()):
        for ax in (ax_q, ax_c, ax_r):
            ax.axvspan(start / scale, end / scale, color="tab:red", alpha=0.08, lw=0)
        ax_q.annotate(f"outage: {label}", xy=(start / scale, 1.0),
                      xycoords=("data", "axes fraction"), xytext=(2, -12),
                      textcoords="offset points", fontsize=7, color="tab:red")

    t = s["t"]
    dt = np.diff(t, prepend=t[0] if len(t) else 0.0)
    dt[dt <= 0] = np.nan
    rate = s["deliveries"] / dt * 60.0
    ax_r.plot(x, rate, label="delivered / min", color="tab:green", lw=1)
    fails = (s["transient_failures"] + s["bounces"]) / dt * 60.0
    ax_r.plot(x, fails, label="failures / min", color="tab:red", lw=1)
    ax_r.set_ylabel("per minute")
    ax_r.set_xlabel(unit)
    ax2 = ax_r.twinx()
    ax2.plot(x, s["delivered_cumulative"], color="tab:blue", lw=1, ls="--", label="delivered")
    ax2.set_ylabel("delivered (cumulative)")
    ax_r.legend(fontsize=7, loc="upper left")

    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _label(name: str, peak: int | None, where: str = "") -> str:
    return name if peak is None else f"{name} (peak {peak:,}{where})"


def _mark_peak(ax: Any, peak: int | None, values: np.ndarray, color: Any) -> None:
    """A dotted line at the exact peak where the samples miss it."""
    if peak is not None and peak > int(values.max(initial=0)):
        ax.axhline(peak, color=color, ls=":", lw=0.8)
