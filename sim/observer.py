"""What a simulation run remembers: records, outcome counts, latencies, series.

The driver hands every `Log` record and a periodic sample to the `Observer`;
the observer turns them into the figures a capacity planner reads
(`SimResult.summary`) and the arrays an analyst plots (`SimResult.series`).
It only reads the engine through its inspection methods, so it cannot change
what the engine decides.

Every record is counted; which ones are kept or handed to the sink is the
caller's choice (`kinds`): a blast at KumoMTA's default max_ready writes a
`Delayed` record per re-delay, many times the message count, and those only
count churn.  What they say is kept as figures instead (`Redelays`): per
path, how many messages were re-delayed at least once, how often each, and
how many waited at once behind the path's full ready queue.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

#: The records `--records outcomes` writes: what happened to each message, not
#: each time a message was put back to wait (`Delayed`); and the shaping rules'
#: firings and lapses (`Shaping`, only with shaping files).
OUTCOMES = frozenset(
    ("Reception", "Delivery", "TransientFailure", "Bounce", "Expiration", "AdminBounce",
     "Shaping"))


#: The series' columns that count what happened since the previous sample; the
#: others are levels or running totals at the sample (`Observer.series`).
INTERVAL_COUNTS = ("deliveries", "transient_failures", "bounces")


class Observer:
    """Collects one run's records and samples."""

    def __init__(
        self,
        engine: Any,
        *,
        keep_records: bool = True,
        sink: Callable[[dict[str, Any]], None] | None = None,
        kinds: Collection[str] | None = None,
        nodeid: str | None = None,
    ) -> None:
        self.engine = engine
        self.nodeid = nodeid  # every record's nodeid (the simulated node's, `sim_nodeid`)
        self.keep_records = keep_records
        self.sink = sink
        self.kinds = None if kinds is None else frozenset(kinds)  # None: every type
        self._writes = keep_records or sink is not None  # False: records only counted
        self.redelays = Redelays()
        self.records: list[dict[str, Any]] = []
        # records by type, and deferrals by reason: plain dicts, which the
        # compiled build updates natively (`counts` and `reasons` read them)
        self._counts: dict[str, int] = {}
        self._reasons: dict[str, int] = {}
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

    def log(self, record: dict[str, Any], now: float, where: str | None = None) -> None:
        """Take one record; `where` is `engine.effects.Log.where` (the ready queue
        a full-queue Delayed record's message was turned away from)."""
        kind = record["type"]
        recipient = record.get("recipient")
        n = len(recipient) if type(recipient) is list else 1
        counts = self._counts
        counts[kind] = counts.get(kind, 0) + n
        if self._writes and (self.kinds is None or kind in self.kinds):
            if self.nodeid is not None:
                record["nodeid"] = self.nodeid
            if self.keep_records:
                self.records.append(record)
            if self.sink is not None:
                self.sink(record)
        # every message has a Reception and most a Delivery; a blast on the
        # exact path has many Delayed records each
        if kind == "Reception":  # a message's first record: nothing to settle yet
            self.received_at[record["id"]] = now
            return
        if kind == "Delivery":
            rid = record["id"]
            self.redelays.outcome(record, kind)
            t0 = self.received_at.get(rid)
            if t0 is not None:
                if n == 1:
                    self.latencies.append(now - t0)
                else:
                    self.latencies.extend([now - t0] * n)
            return
        if kind == "Delayed":
            # one prefix test instead of two parses
            if self.redelays.delayed(record, where):
                self._defer("Delayed ReadyQueueWasFull", n)
            else:
                self._defer(_reason(record), n)
            return
        self.redelays.outcome(record, kind)
        if kind in ("TransientFailure", "Bounce", "Expiration"):
            self._defer(_reason(record), n)

    def _defer(self, reason: str, n: int) -> None:
        reasons = self._reasons
        reasons[reason] = reasons.get(reason, 0) + n

    @property
    def counts(self) -> Counter[str]:
        """Records taken, by type (a copy: 0 for a type never seen)."""
        return Counter(self._counts)

    @property
    def reasons(self) -> Counter[str]:
        """Deferrals by reason, ``"<type> <reason>"`` (a copy: 0 for one never seen)."""
        return Counter(self._reasons)

    def finish(self, message_id: str, redelays: int | None = None) -> None:
        """The engine discarded the message: it is delivered, bounced or expired.
        `redelays`: how often it was re-delayed, when the engine says so itself
        (an engine that counts re-delays instead of logging a record each)."""
        self.received_at.pop(message_id, None)
        rd = self.redelays
        if redelays or rd._live:
            rd.finish(message_id, redelays)
        else:  # `Redelays.finish` with nothing to settle, without a call (most messages)
            rd._site.pop(message_id, None)
        self.finished += 1

    def lazy_redelays(self, total: int, peaks: dict[str, int]) -> None:
        """The engine's lazily sampled re-delays (`engine.backlog`), which made no
        `Delayed` record each: counted as such records would have been, and each
        path's peak backlog as its peak waiting behind a full ready queue."""
        if total:
            self._counts["Delayed"] = self._counts.get("Delayed", 0) + total
            self._defer("Delayed ReadyQueueWasFull", total)
        for path, peak in peaks.items():
            if peak > self.redelays.peak_waiting[path]:
                self.redelays.peak_waiting[path] = peak

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
        counts = self._counts
        self._delivered_cum.append(counts.get("Delivery", 0))
        self._transient_cum.append(counts.get("TransientFailure", 0))
        self._bounced_cum.append(counts.get("Bounce", 0))
        _append_per_path(self._ready, eng.ready_depths(), n, None)
        _append_per_path(self._conns, conn_counts, n, self.peak_connections)

    def note_connections(self, path: str, count: int) -> None:
        """Exact peak tracking, called by the driver whenever a path's count rises."""
        if count > self.peak_connections.get(path, 0):
            self.peak_connections[path] = count

    def series(self) -> dict[str, np.ndarray]:
        """The samples as arrays: `t`, levels and running totals at each sample,
        and `INTERVAL_COUNTS` (what happened since the sample before)."""
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


class Redelays:
    """Per path: messages re-delayed at least once, re-delays per message, and the
    most messages waiting at once after the path's full ready queue turned them
    away.

    Fed every record (and every finished message) by the `Observer`; holds one
    small entry per message that was re-delayed and is not finished yet.  A
    `Delayed` record is attributed to the place the message waited: the ready
    queue that was full (`Log.where`, beside KumoMTA's ``Context: ...,
    ReadyQueueWasFull`` text), the path a text names (``451 4.4.1
    SOURCE->SITE ready queue throttled ...``), else its scheduled queue
    (``MessageRateThrottle on QUEUE``).
    """

    __slots__ = ("_live", "_site", "counts", "messages", "outcomes", "peak_waiting", "waiting")

    def __init__(self) -> None:
        # id -> [path, re-delays, waiting behind a full ready queue now, had an outcome there]
        self._live: dict[str, list[Any]] = {}
        self.counts: dict[str, Counter[int]] = {}  # path -> {re-delays: messages}, finished
        # path -> Delivery/Bounce records naming it (a plain dict: updated per message)
        self.outcomes: dict[str, int] = {}
        self.messages: Counter[str] = Counter()  # path -> re-delayed messages with no outcome there
        self.waiting: Counter[str] = Counter()
        self.peak_waiting: Counter[str] = Counter()
        self._site: dict[str, str] = {}  # id -> path of its outcome record, until finished

    def delayed(self, record: dict[str, Any], where: str | None = None) -> bool:
        """Take a `Delayed` record; True when a full ready queue made it."""
        path, full = _delay_path(record, where)
        entry = self._live.get(record["id"])
        if entry is None:
            entry = self._live[record["id"]] = [path, 0, False, False]
        elif entry[0] != path:
            self._settle(entry)
            entry[:] = [path, 0, False, False]
        entry[1] += 1
        if full and not entry[2]:
            entry[2] = True
            n = self.waiting[path] = self.waiting[path] + 1
            if n > self.peak_waiting[path]:
                self.peak_waiting[path] = n
        return full

    def outcome(self, record: dict[str, Any], kind: str) -> None:
        """Any record but `Delayed` and `Reception` (of type `kind`)."""
        rid = record["id"]
        site = record.get("site")
        if site and (kind == "Delivery" or kind == "Bounce"):
            outcomes = self.outcomes
            outcomes[site] = outcomes.get(site, 0) + 1
            self._site[rid] = site
        entry = self._live.get(rid) if self._live else None
        if entry is not None:
            if entry[2]:
                entry[2] = False
                self.waiting[entry[0]] -= 1
            if site == entry[0]:
                entry[3] = True

    def finish(self, message_id: str, redelays: int | None = None) -> None:
        """`redelays` from the engine, for a message whose re-delays had no
        record each: attributed to the path of its outcome record."""
        site = self._site.pop(message_id, "")
        entry = self._live.pop(message_id, None)
        if entry is not None:
            self._settle(entry)
        elif redelays:
            hist = self.counts.get(site)
            if hist is None:
                hist = self.counts[site] = Counter()
            hist[redelays] += 1
            if not site:
                self.messages[site] += 1

    def _settle(self, entry: list[Any]) -> None:
        path, n, waiting, had_outcome = entry
        hist = self.counts.get(path)
        if hist is None:
            hist = self.counts[path] = Counter()
        hist[n] += 1
        if waiting:
            self.waiting[path] -= 1
        if not had_outcome:
            self.messages[path] += 1

    @staticmethod
    def merged(parts: list[Redelays]) -> Redelays:
        """One `Redelays` over every part's messages (N nodes' together): its
        `summary` counts them all, per path, as one run's would; a path's peak
        waiting is the largest part's (each node has its own ready queue)."""
        out = Redelays()
        for part in parts:
            for path, hist in part.counts.items():
                out.counts.setdefault(path, Counter()).update(hist)
            for path, n in part.outcomes.items():
                out.outcomes[path] = out.outcomes.get(path, 0) + n
            out.messages.update(part.messages)
            for path, n, _, had_outcome in part._live.values():  # as `summary` counts them
                out._settle([path, n, False, had_outcome])
            for path, peak in part.peak_waiting.items():
                if peak > out.peak_waiting[path]:
                    out.peak_waiting[path] = peak
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per path, figures whose names say what they count (unfinished messages
        included with the re-delays they had so far)."""
        counts = {p: Counter(c) for p, c in self.counts.items()}
        extra = Counter(self.messages)
        for path, n, _, had_outcome in self._live.values():
            counts.setdefault(path, Counter())[n] += 1
            if not had_outcome:
                extra[path] += 1
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(counts):
            hist = counts[path]
            delayed = sum(hist.values())
            total = sum(k * v for k, v in hist.items())
            through = self.outcomes.get(path, 0) + extra[path]
            out[path] = {
                "messages_delayed_at_least_once": delayed,
                "redelays": total,
                "redelays_per_message_mean": round(total / through, 3) if through else None,
                "redelays_per_delayed_message_p50": _hist_quantile(hist, 0.50),
                "redelays_per_delayed_message_p95": _hist_quantile(hist, 0.95),
                "redelays_per_delayed_message_max": max(hist),
                "peak_waiting_behind_full_ready_queue": self.peak_waiting[path],
            }
        return out


def _delay_path(record: dict[str, Any], where: str | None = None) -> tuple[str, bool]:
    """(where the message waited, whether a full ready queue turned it away).

    A full ready queue's record has KumoMTA's text (``Context: ...,
    ReadyQueueWasFull. Next due in ...``), which names no queue: the engine
    says which one beside it (`where`); without that (records read back from
    a file) the message's scheduled queue stands for it."""
    content = (record.get("response") or {}).get("content") or ""
    if content.startswith("Context: "):
        full = "ReadyQueueWasFull" in content.partition(". Next due in ")[0]
        return where or record.get("queue") or "", full
    if content.startswith("Delayed due to "):
        head, _, rest = content[len("Delayed due to "):].partition(" on ")
        name = rest.partition(";")[0]
        if name:
            return name, head == "ReadyQueueWasFull"
    if " ready queue throttled" in content:
        return content.partition(" ready queue throttled")[0].rpartition(" ")[2], False
    return record.get("queue") or "", False


def _hist_quantile(hist: Counter[int], q: float) -> int:
    """The `q` quantile (nearest rank) of a {value: how many} histogram."""
    total = sum(hist.values())
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)


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
