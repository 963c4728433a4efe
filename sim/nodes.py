"""N nodes sharing their limits: what four MTAs do against one provider's limit.

A scenario with ``nodes = N`` (N > 1) runs N engines, each with its own queues
and seed (``seed + i``), on one SimPy clock against one world (so a remote
host's ``max_connections`` sees every node's connections), sharing their
connection limits and throttles through one `sim.shared_store.StoreModel`,
exactly as `egress deliver --redis` processes share them through Redis.  The
traffic is dealt to the nodes in turn, as a load balancer in front of them
would.  The store answers after `STORE_LATENCY` (a loopback Redis round trip).

The summary says what each node did (``nodes``: delivered, its share, its peak
connections and ready depth) and what they did together (``peak_connections``:
the most connections open at once per path on all the nodes, `OpenTogether`;
``shared_peak_connections``: the most leases held at once per limit, the figure
the provider sees).  `sim.nodes_summary` builds it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np
import simpy

from engine.effects import AcquireLease, CheckThrottle, ExtendLease, ReleaseLease
from engine.shared_limits import SharedLimitsConfig, configure
from sim.connections import PathConnections
from sim.driver import ProgressFn, SimDriver, sim_nodeid
from sim.driver_conns import run_until
from sim.observer import Observer
from sim.shared_store import StoreModel

__all__ = ["STORE_LATENCY", "NodeDriver", "OpenTogether", "run_nodes"]

STORE_LATENCY = 0.0005
_SHARED = (AcquireLease, CheckThrottle, ExtendLease, ReleaseLease)


class NodeDriver(SimDriver):
    """A `SimDriver` whose shared-limit effects go to the nodes' common store."""

    store: StoreModel
    together: OpenTogether

    def _carry_out(self, effect: Any) -> None:
        if type(effect) in _SHARED:
            answer = self.store.answer(effect, self.env.now)
            if answer is not None:
                self._at(STORE_LATENCY, self._deliver_at_now, answer)
            return
        super()._carry_out(effect)


def run_nodes(scenario: Any, arrivals: Any, *, keep_records: bool = True,
              record_sink: Any = None, record_kinds: Any = None, exact: bool = True,
              progress: ProgressFn | None = None,
              ) -> tuple[list[NodeDriver], StoreModel]:
    """Run `scenario` on ``scenario.nodes`` nodes; the drivers (one per node) and the store.
    `record_sink` takes every node's records as they are made (one clock: in time order);
    `exact` and `progress` are `SimDriver`'s, `progress` told the nodes' figures added up."""
    n = scenario.nodes
    env = simpy.Environment()
    store = StoreModel()
    together = OpenTogether()
    drivers: list[NodeDriver] = []
    for i in range(n):
        d = NodeDriver(scenario, keep_records=keep_records, record_sink=record_sink,
                       record_kinds=record_kinds, exact=exact)
        d.use_env(env)
        d.done = env.event()
        d.store = store
        d.together = together
        d.connections = together.watch(d.observer)
        if drivers:
            d.world = drivers[0].world
        d.engine.seed = scenario.seed + i
        d.observer.nodeid = sim_nodeid(scenario.name, i)
        d.engine.rng.seed(scenario.seed + i)
        configure(d.engine, SharedLimitsConfig(node=f"node{i}", nodes=n))
        drivers.append(d)
    everyone = env.all_of([d.done for d in drivers])
    for d in drivers:
        d.sampled_until = everyone  # each node samples to the run's end
    streams: list[list[Any]] = [[] for _ in range(n)]
    for i, msg in enumerate(arrivals):
        streams[i % n].append(msg)
    horizon = float(scenario.horizon)
    for d, stream in zip(drivers, streams, strict=True):
        d._arrivals = iter(stream)
        d._next_arrival = next(d._arrivals, None)
        if d._next_arrival is not None:
            d._at(d._next_arrival.at, d._on_arrival)
        else:
            d._check_done()
        d._at(0.0, d._on_sample, d.observer.sample_interval(scenario, horizon))
    if progress is not None:
        _report_totals(drivers, progress, drivers[0].observer.sample_interval(scenario, horizon))
    until = env.timeout(horizon)
    # the drivers' own loop (`run_until`): SimPy's order, their replies handed back natively
    run_until(env, env.any_of([everyone, until]))
    for d in drivers:
        d.observer.sample(env.now, d._conn_counts(), final=True)
    return drivers, store


class OpenTogether:
    """Open connections per path on all the nodes at once, and the most ever
    (`peak`): what the remote hosts see of the nodes together.  Each node's own
    count and peak stay its driver's (`PathConnections`, `Observer.peak_connections`)."""

    def __init__(self) -> None:
        self.nodes: list[PathConnections] = []
        self.peak: dict[str, int] = {}

    def watch(self, observer: Observer) -> PathConnections:
        """A node's connection counter, telling `observer` its rises as a single
        node's does, and this its nodes' sum."""
        conns = PathConnections(lambda path, count: self._rise(observer, path, count))
        self.nodes.append(conns)
        return conns

    def _rise(self, observer: Observer, path: str, count: int) -> None:
        observer.note_connections(path, count)
        total = 0
        for conns in self.nodes:
            total += conns.open.get(path, 0)
        if total > self.peak.get(path, 0):
            self.peak[path] = total


def _report_totals(drivers: list[NodeDriver], progress: ProgressFn, interval: float) -> None:
    """Progress for the nodes together, on a single node's cadence (`SimDriver._on_sample`):
    from time 0, every `interval` until every node is done, the finished and
    submitted messages of all the nodes added up (one call, not one per node)."""
    first = drivers[0]
    env = first.env

    def report(ev: Any) -> None:
        progress(env.now, sum(d.observer.finished for d in drivers),
                 sum(d.submitted for d in drivers))
        if not all(d.done.triggered for d in drivers):
            first._at(interval, report)

    first._at(0.0, report)


def node_summaries(drivers: list[NodeDriver], store: StoreModel) -> dict[str, Any]:
    """Each node's share and the nodes' peak together."""
    delivered = [d.observer.counts["Delivery"] for d in drivers]
    total = sum(delivered) or 1
    return {
        "nodes": [{"node": i, "submitted": d.submitted, "delivered": delivered[i],
                   "share": delivered[i] / total, "drain_time": d.observer.drain_time,
                   "peak_connections": dict(sorted(d.observer.peak_connections.items())),
                   "peak_ready_depth": dict(sorted(d.engine.ready_peaks().items()))}
                  for i, d in enumerate(drivers)],
        "shared_peak_connections": {key.split(":conn:", 1)[1]: peak
                                    for key, peak in sorted(store.peak.items())
                                    if ":conn:" in key},
    }


def add_up(tables: Iterable[dict[str, int]]) -> dict[str, int]:
    """Counts by name, added up over `tables` (the nodes' own)."""
    out: dict[str, int] = {}
    for table in tables:
        for k, v in table.items():
            out[k] = out.get(k, 0) + v
    return out


def merge_counts(drivers: list[NodeDriver]) -> dict[str, int]:
    """The record counts of every node added up."""
    return add_up(d.observer.counts for d in drivers)


def merge_reasons(drivers: list[NodeDriver]) -> dict[str, int]:
    """Why messages were not delivered at once, every node's added up."""
    return add_up(d.observer.reasons for d in drivers)


def node_percentiles(drivers: list[NodeDriver]) -> dict[str, float | None]:
    """Time to deliver, p50/p95/p99, over every node's deliveries together."""
    lat = np.concatenate([np.frombuffer(d.observer.latencies, dtype=np.float64)
                          for d in drivers])
    return {f"time_to_deliver_p{q}": float(np.percentile(lat, q)) if lat.size else None
            for q in (50, 95, 99)}


def merged_records(drivers: list[NodeDriver]) -> list[dict[str, Any]]:
    """Every node's records, in time order (ties by node)."""
    return sorted(itertools.chain.from_iterable(d.observer.records for d in drivers),
                  key=lambda r: r.get("timestamp", 0))
