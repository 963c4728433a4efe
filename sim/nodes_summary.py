"""What a run on ``nodes = N`` says: a single run's summary and series, for the nodes together.

The figures keep a single run's names and meaning (`sim.result.run`), so
`egress simulate`, `egress sweep`, the plot and the notebooks read them
unchanged: counts, re-delays and time to deliver are over every node's
messages; `series` adds up the nodes at each sample.  Peaks are either:

* per node, where the limit they are measured against is each node's own:
  ``peak_ready_depth`` and ``redelays``'s ``peak_waiting_behind_full_ready_queue``
  are the most any one node held (each node has its own ready queue per path,
  as KumoMTA's nodes each do, so the max_ready ``advice`` suggests is per node);
* together, where the remote side sees the sum: ``peak_connections`` is the
  most connections open at once per path on all the nodes (`sim.nodes.OpenTogether`).

Each node's own figures stay in ``nodes`` (`sim.nodes.node_summaries`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.nodes import (
    NodeDriver,
    add_up,
    merge_counts,
    merge_reasons,
    node_percentiles,
    node_summaries,
)
from sim.observer import INTERVAL_COUNTS, Redelays
from sim.shared_store import StoreModel


def nodes_figures(drivers: list[NodeDriver], store: StoreModel, horizon: float) -> dict[str, Any]:
    """The summary's figures for the nodes together (all but the scenario's name,
    hash and seed, and the advice, which `sim.result` adds as for a single run)."""
    counts = merge_counts(drivers)
    submitted = sum(d.submitted for d in drivers)
    finished = sum(d.observer.finished for d in drivers)
    drains = [d.observer.drain_time for d in drivers]
    return {
        "submitted": submitted, "recipients": counts.get("Reception", 0),
        "delivered": counts.get("Delivery", 0),
        "bounced": counts.get("Bounce", 0) + counts.get("AdminBounce", 0),
        "expired": counts.get("Expiration", 0), "still_queued": submitted - finished,
        "transient_failures": counts.get("TransientFailure", 0),
        "delayed": counts.get("Delayed", 0),
        "drain_time": None if None in drains else max(d for d in drains if d is not None),
        "simulated_time": drivers[0].env.now, "horizon": horizon,
        "records": dict(sorted(counts.items())),
        **node_percentiles(drivers),
        "deferrals": dict(sorted(merge_reasons(drivers).items())),
        "peak_ready_depth": _most(d.engine.ready_peaks() for d in drivers),
        "peak_connections": dict(sorted(drivers[0].together.peak.items())),
        "redelays": Redelays.merged([d.observer.redelays for d in drivers]).summary(),
        **node_summaries(drivers, store),
    }


def merged_counters(drivers: list[NodeDriver]) -> dict[str, int]:
    """The engines' counters (`Engine.counters`) added up: a total or gauge is
    the nodes' sum, a 0/1 flag (``shared_limits_mode{...}``) the nodes it is set on."""
    return add_up(d.engine.counters for d in drivers)


def _most(peaks: Any) -> dict[str, int]:
    """Per path, the largest of the nodes' peaks."""
    out: dict[str, int] = {}
    for node in peaks:
        for path, peak in node.items():
            out[path] = max(out.get(path, 0), peak)
    return dict(sorted(out.items()))


def merged_series(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The nodes' series (`Observer.series`) as one: at every sample time of
    any node (they share one clock, and sample on the same cadence until each
    is done), each column added up over the nodes, a node's value taken from
    its latest sample at or before that time (a node that is done holds its
    last); a column a node lacks (a path it never used) counts 0 there.
    `INTERVAL_COUNTS` are added up as running totals and differenced again, so
    they still count what happened since the previous sample."""
    t = np.unique(np.concatenate([p["t"] for p in parts]))
    names = _column_order(parts)
    out: dict[str, np.ndarray] = {"t": t}
    for name in names:
        if name == "t":
            continue
        total = np.zeros(len(t), dtype=np.int64)
        for part in parts:
            values = part.get(name)
            if values is None or not len(part["t"]):
                continue
            if name in INTERVAL_COUNTS:
                values = np.cumsum(values)
            at = np.searchsorted(part["t"], t, side="right") - 1
            total += np.where(at >= 0, values[np.maximum(at, 0)], 0)
        out[name] = np.diff(total, prepend=0) if name in INTERVAL_COUNTS else total
    return out


def _column_order(parts: list[dict[str, np.ndarray]]) -> list[str]:
    """Every part's columns in a single series' order: by kind as they first
    come, a kind's per-path columns (``ready_depth:PATH``) sorted by path."""
    names = list(dict.fromkeys(name for part in parts for name in part))
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        first.setdefault(_kind(name), i)
    return sorted(names, key=lambda name: (first[_kind(name)], name))


def _kind(name: str) -> str:
    head, sep, _ = name.partition(":")
    return head + sep
