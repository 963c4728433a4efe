"""What a simulation run remembers: records, outcome counts, latencies, series.

The driver hands every `Log` record and a periodic sample to the `Observer`;
the observer turns them into the figures a capacity planner reads
(`SimResult.summary`) and the arrays an analyst plots (`SimResult.series`).
It only reads the engine through its inspection methods, so it cannot change
what the engine decides.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np


class Observer:
    """Collects one run's records and samples."""

    def __init__(
        self,
        engine: Any,
        *,
        keep_records: bool = True,
        sink: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.keep_records = keep_records
        self.sink = sink
        self.records: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.received_at: dict[str, float] = {}
        self.latencies = array("d")  # seconds from reception to delivery, per recipient
        self.finished = 0
        self.drain_time: float | None = None
        # series
        self._t = array("d")
        self._scheduled = array("q")
        self._delivered_cum = array("q")
        self._transient_cum = array("q")
        self._bounced_cum = array("q")
        self._ready: dict[str, array[int]] = {}
        self._conns: dict[str, array[int]] = {}
        self.peak_connections: dict[str, int] = {}

    # -- records -------------------------------------------------------------

    def log(self, record: dict[str, Any], now: float) -> None:
        """Take one record."""
        kind = record["type"]
        recipient = record.get("recipient")
        n = len(recipient) if isinstance(recipient, list) else 1
        self.counts[kind] += n
        if self.keep_records:
            self.records.append(record)
        if self.sink is not None:
            self.sink(record)
        if kind == "Reception":
            self.received_at[record["id"]] = now
        elif kind == "Delivery":
            t0 = self.received_at.get(record["id"])
            if t0 is not None:
                for _ in range(n):
                    self.latencies.append(now - t0)
        elif kind in ("TransientFailure", "Delayed", "Bounce", "Expiration"):
            self.reasons[_reason(record)] += n

    def finish(self, message_id: str) -> None:
        """The engine discarded the message: it is delivered, bounced or expired."""
        self.received_at.pop(message_id, None)
        self.finished += 1

    # -- samples ---------------------------------------------------------------

    @staticmethod
    def sample_interval(scenario: Any, horizon: float) -> float:
        interval = getattr(scenario, "sample_interval", None)
        return float(interval) if interval else max(horizon / 1000.0, 1.0)

    def sample(self, now: float, conn_counts: dict[str, int], *, final: bool = False) -> None:
        if final and self._t and self._t[-1] == now:
            return
        n = len(self._t)
        self._t.append(now)
        eng = self.engine
        self._scheduled.append(eng.scheduled_count)
        self._delivered_cum.append(self.counts["Delivery"])
        self._transient_cum.append(self.counts["TransientFailure"])
        self._bounced_cum.append(self.counts["Bounce"])
        _append_per_path(self._ready, eng.ready_depths(), n, None)
        _append_per_path(self._conns, conn_counts, n, self.peak_connections)

    def note_connections(self, path: str, count: int) -> None:
        """Exact peak tracking, called by the driver whenever a path's count rises."""
        if count > self.peak_connections.get(path, 0):
            self.peak_connections[path] = count

    def series(self) -> dict[str, np.ndarray]:
        t = np.frombuffer(self._t, dtype=np.float64).copy()
        out: dict[str, np.ndarray] = {"t": t}
        out["scheduled_depth"] = np.asarray(self._scheduled, dtype=np.int64)
        delivered = np.asarray(self._delivered_cum, dtype=np.int64)
        transient = np.asarray(self._transient_cum, dtype=np.int64)
        bounced = np.asarray(self._bounced_cum, dtype=np.int64)
        out["delivered_cumulative"] = delivered
        out["deliveries"] = np.diff(delivered, prepend=0)
        out["transient_failures"] = np.diff(transient, prepend=0)
        out["bounces"] = np.diff(bounced, prepend=0)
        n = len(t)
        ready_total = np.zeros(n, dtype=np.int64)
        conns_total = np.zeros(n, dtype=np.int64)
        for path, values in sorted(self._ready.items()):
            arr = _padded(values, n)
            out[f"ready_depth:{path}"] = arr
            ready_total += arr
        for path, values in sorted(self._conns.items()):
            arr = _padded(values, n)
            out[f"connections:{path}"] = arr
            conns_total += arr
        out["ready_depth"] = ready_total
        out["connections"] = conns_total
        return out

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        return float(np.percentile(np.frombuffer(self.latencies, dtype=np.float64), q))


def _append_per_path(
    table: dict[str, array[int]], values: dict[str, int], n: int, peaks: dict[str, int] | None
) -> None:
    for path, value in values.items():
        column = table.get(path)
        if column is None:
            column = table[path] = array("q", bytes(8 * n))  # zeros before it existed
        column.append(value)
        if peaks is not None and value > peaks.get(path, 0):
            peaks[path] = value
    for column in table.values():
        if len(column) == n:
            column.append(0)


def _padded(values: array[int], n: int) -> np.ndarray:
    arr = np.zeros(n, dtype=np.int64)
    arr[: len(values)] = np.asarray(values, dtype=np.int64)
    return arr


def _reason(record: dict[str, Any]) -> str:
    """A short, stable label for why a message was deferred or failed."""
    kind = record["type"]
    response = record.get("response") or {}
    code = response.get("code", "")
    enhanced = response.get("enhanced_code")
    text = f" {enhanced['class']}.{enhanced['subject']}.{enhanced['detail']}" if enhanced else ""
    if kind == "Delayed":
        content = response.get("content", "")
        for reason in ("ReadyQueueWasFull", "throttled", "Suspended"):
            if reason.lower() in content.lower():
                return f"Delayed {reason}"
        return "Delayed"
    return f"{kind} {code}{text}"
