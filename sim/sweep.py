"""`egress sweep`: every combination of some scenario keys, over several seeds.

Each run is independent and CPU-bound, so runs go to worker processes (one
per core by default) or, with `scheduler`, to a Dask cluster.  A worker gets
the raw scenario dict plus its overrides, not a built `Scenario`, so nothing
unpicklable crosses the process boundary and each worker validates what it
runs.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EgressError


class SweepError(EgressError, ValueError):
    """A --vary, --seeds or --workers the sweep cannot run; the message names it."""

# The summary figures a sweep reports, with spread across seeds.
FIGURES = (
    "drain_time",
    "delivered",
    "bounced",
    "expired",
    "still_queued",
    "transient_failures",
    "time_to_deliver_p50",
    "time_to_deliver_p95",
    "time_to_deliver_p99",
    "max_peak_connections",
    "max_peak_ready_depth",
    "max_redelays_per_message",  # the worst path's mean re-delays per message
)


@dataclass(frozen=True)
class Vary:
    """One `--vary KEY=V1,V2,...`: a scenario key path and its values (as text)."""

    key: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Vary:
        key, sep, values = text.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SweepError(f"--vary {text!r}: expected KEY=V1,V2,... (a scenario key, '=', "
                             "and comma-separated values), e.g. "
                             "egress_path.connection_limit=4,8,16")
        return cls(key.strip(), tuple(v.strip() for v in _split_values(values)))


def _split_values(text: str) -> list[str]:
    """Split on commas outside quotes and brackets, so "1,000/hr" can be quoted."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch in "[{":
            depth += 1
            cur.append(ch)
        elif ch in "]}":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [v for v in out if v.strip()]


def combinations(varies: Sequence[Vary]) -> list[tuple[str, ...]]:
    """Every combination as a tuple of `KEY=VALUE` override strings."""
    axes = [[f"{v.key}={value}" for value in v.values] for v in varies]
    return [tuple(c) for c in itertools.product(*axes)]


def run_one(
    raw: dict[str, Any], source: str, base_dir: str | None, overrides: tuple[str, ...], seed: int
) -> dict:
    """One simulation in a worker: returns the summary figures (no records)."""
    from sim.overrides import apply_overrides
    from sim.result import run
    from sim.scenario import Scenario

    data = apply_overrides(raw, [*overrides, f"seed={seed}"])
    scenario = Scenario.from_dict(data, source=source, base_dir=base_dir)
    result = run(scenario, keep_records=False)
    s = result.summary
    row = {k: s.get(k) for k in FIGURES}
    row["max_peak_connections"] = max(s["peak_connections"].values(), default=0)
    row["max_peak_ready_depth"] = max(s["peak_ready_depth"].values(), default=0)
    row["max_redelays_per_message"] = max(
        (r["redelays_per_message_mean"] or 0.0 for r in s["redelays"].values()), default=0.0)
    return row


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation, min and max of each figure across seeds."""
    out: dict[str, Any] = {"runs": len(rows)}
    for name in FIGURES:
        values = [r[name] for r in rows if r.get(name) is not None]
        if not values:
            out[f"{name}_mean"] = None
            continue
        out[f"{name}_mean"] = statistics.fmean(values)
        out[f"{name}_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
        out[f"{name}_min"] = min(values)
        out[f"{name}_max"] = max(values)
        out[f"{name}_missing"] = len(rows) - len(values)  # e.g. runs that did not drain
    return out


def sweep(
    base: Any,
    varies: Sequence[Vary],
    *,
    seeds: int = 1,
    base_seed: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every combination over `seeds` seeds; one aggregated row per combination."""
    if seeds < 1:
        raise SweepError(f"--seeds {seeds}: expected at least 1")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers {workers}: expected at least 1")
    raw = _plain(base.raw)
    source = base.source
    base_dir = str(base.base_dir) if base.base_dir is not None else None
    first = base.seed if base_seed is None else base_seed
    combos = combinations(varies)
    jobs = [(combo, first + i) for combo in combos for i in range(seeds)]
    results: dict[tuple[str, ...], list[dict[str, Any]]] = {c: [] for c in combos}
    if scheduler:
        done = _run_dask(scheduler, (raw, source, base_dir), jobs, progress)
    else:
        done = _run_local((raw, source, base_dir), jobs, workers, progress)
    for (combo, _seed), row in zip(jobs, done, strict=True):
        results[combo].append(row)
    table = []
    for combo in combos:
        row = {o.partition("=")[0]: o.partition("=")[2] for o in combo}
        row.update(aggregate(results[combo]))
        table.append(row)
    return table


def _plain(value: Any) -> Any:
    """A picklable deep copy of the scenario's raw tables (MappingProxy -> dict)."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _run_local(base, jobs, workers, progress) -> list[dict[str, Any]]:
    workers = workers or os.cpu_count() or 1
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    if workers == 1:
        for i, (combo, seed) in enumerate(jobs):
            out[i] = run_one(*base, combo, seed)
            if progress:
                progress(i + 1, len(jobs))
        return out  # type: ignore[return-value]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(run_one, *base, combo, seed): i
            for i, (combo, seed) in enumerate(jobs)
        }
        for n, fut in enumerate(as_completed(futures), 1):
            out[futures[fut]] = fut.result()
            if progress:
                progress(n, len(jobs))
    return out  # type: ignore[return-value]


def _run_dask(scheduler, base, jobs, progress) -> list[dict[str, Any]]:
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ImportError as exc:
        raise SweepError(
            "--scheduler needs dask.distributed, which is not installed: "
            "pip install 'egress[dask]'"
        ) from exc
    with Client(scheduler) as client:
        futures = [client.submit(run_one, *base, c, s, pure=False) for c, s in jobs]
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        for n, fut in enumerate(dask_completed(futures), 1):
            out[index[fut.key]] = fut.result()
            if progress:
                progress(n, len(jobs))
    return out  # type: ignore[return-value]


def write_csv(table: list[dict[str, Any]], path: str | Path) -> None:
    keys: list[str] = []
    for row in table:
        keys.extend(k for k in row if k not in keys)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for row in table:
            writer.writerow({k: _fmt(row.get(k)) for k in keys})


def _fmt(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 6)
    return value
