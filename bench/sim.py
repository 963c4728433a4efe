"""Simulation speed: wall time of a big scenario, against bare SimPy.

The figure that matters to a planner is wall seconds for a 1 M-message
scenario; the figure that tells us where we stand is the ratio against bare
SimPy processing the same number of events in the same process (the
simulator can never be faster than its clock).  CPU seconds of this process
are printed beside the wall time: on a shared machine they are the steadier
figure.  Note that the driver schedules fewer SimPy events than it used to
(an arrival with nothing due before it is fed without one), which lowers the
bare-SimPy denominator along with the wall time.  Run:

    python -m bench.sim                       # scenarios/million.toml
    python -m bench.sim --scenario scenarios/quickstart.toml --repeat 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


def bare_simpy(n_events: int) -> float:
    """Seconds for SimPy to schedule and process `n_events` timeouts with a callback."""
    import simpy

    env = simpy.Environment()
    counter = [0]

    def tick(_: Any) -> None:
        counter[0] += 1
        if counter[0] < n_events:
            env.timeout(0.001).callbacks.append(tick)

    # 64 concurrent chains, like many connections in flight at once.
    chains = min(64, n_events)
    for _ in range(chains):
        env.timeout(0.001).callbacks.append(tick)
    started = time.perf_counter()
    env.run()
    return time.perf_counter() - started


def run_scenario(path: str, sets: list[str]) -> dict[str, Any]:
    from sim.result import run
    from sim.scenario import Scenario

    scenario = Scenario.from_toml(path, sets)
    started = time.perf_counter()
    cpu_started = time.process_time()
    holder: dict[str, Any] = {}

    import sim.driver as drv

    original = drv.SimDriver.run

    def spy(self: Any, arrivals: Any, horizon: float) -> None:
        holder["driver"] = self
        original(self, arrivals, horizon)

    drv.SimDriver.run = spy  # type: ignore[method-assign]
    try:
        result = run(scenario, keep_records=False)
    finally:
        drv.SimDriver.run = original  # type: ignore[method-assign]
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    env = holder["driver"].env
    simpy_events = next(env._eid)  # every event SimPy scheduled in the run
    engine_events = holder["driver"].events_fed
    return {
        "wall": wall,
        "cpu": cpu,
        "summary": result.summary,
        "simpy_events": simpy_events,
        "engine_events": engine_events,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", default="scenarios/million.toml")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    rows = []
    for _ in range(args.repeat):
        r = run_scenario(args.scenario, args.set)
        bare = bare_simpy(r["simpy_events"])
        rows.append((r, bare))
    walls = [r["wall"] for r, _ in rows]
    ratios = [r["wall"] / bare for r, bare in rows]
    r0 = rows[0][0]
    s = r0["summary"]
    msgs = s["submitted"]
    print(f"scenario            {args.scenario}  (seed {s['seed']})")
    print(f"messages            {msgs:,}  delivered {s['delivered']:,}  "
          f"drain {s['drain_time']}")
    print(f"simpy events        {r0['simpy_events']:,}   engine events {r0['engine_events']:,}")
    print(f"wall s              min {min(walls):.2f}  median {statistics.median(walls):.2f}  "
          f"max {max(walls):.2f}")
    cpus = [r["cpu"] for r, _ in rows]
    print(f"cpu s               min {min(cpus):.2f}  median {statistics.median(cpus):.2f}  "
          f"max {max(cpus):.2f}  (this process; the figure to read on a busy machine)")
    print(f"sim msgs/s (wall)   {msgs / statistics.median(walls):,.0f}")
    print(f"ratio vs bare SimPy min {min(ratios):.2f}  median {statistics.median(ratios):.2f}  "
          f"max {max(ratios):.2f}  (same number of SimPy events, same process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
