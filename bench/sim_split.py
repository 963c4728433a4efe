"""Where a simulated message's CPU goes: a blast profiled, split by part.

The blast of `bench.sim` (``blast_scenario``) is run twice in this process:
once plain, for its CPU per message, and once under a CPU-time profile, whose
shares split that figure between the engine (`Engine.handle`, everything it
calls; records and the session's handlers shown inside it), the world
(latency draws, reply batches), the observer (records counted, finished
messages, samples), the arrivals, SimPy's own time, and the driver's own
(feeding events, timers, replies; what is left).  A profile slows
call-heavy code more than the rest, so the shares are approximate; the
total is the plain run's.

    python -m bench.sim_split              # a 30 k blast
    python -m bench.sim_split --size 100k
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

from bench.core import build
from bench.sim import blast_scenario, parse_size

_WORLD = ("connect", "batch_replies", "reply_batch", "body", "ehlo", "starttls", "resolve",
          "resolve_hosts", "mta_sts")
_OBSERVER = ("log", "finish", "sample")


def _run(n: int) -> None:
    from sim.result import run
    from sim.scenario import Scenario

    run(Scenario.from_dict(blast_scenario(n)), keep_records=False)


def split(n: int) -> tuple[float, dict[str, float]]:
    """(CPU us per message of a plain run, {part: share of the profiled run})."""
    started = time.process_time()
    _run(n)
    us = (time.process_time() - started) / n * 1e6
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    _run(n)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def cum(test: Callable[[str, str], bool]) -> float:
        return float(sum(v[3] for (f, _, name), v in stats.items() if test(f, name)))

    def own(test: Callable[[str, str], bool]) -> float:
        return float(sum(v[2] for (f, _, name), v in stats.items() if test(f, name)))

    total = own(lambda f, name: True)
    engine = cum(lambda f, name: f.endswith("engine/engine.py") and name == "handle")
    world = cum(lambda f, name: f.endswith("sim/world.py") and name in _WORLD)
    observer = cum(lambda f, name: f.endswith("sim/observer.py") and name in _OBSERVER)
    traffic = cum(lambda f, name: f.endswith("sim/traffic.py") and name == "arrivals")
    # `sim.driver_conns.run_until` is SimPy's event loop, run by the driver
    simpy = own(lambda f, name: "simpy" in f
                or (f.endswith("sim/driver_conns.py") and name == "run_until"))
    parts = {
        "engine (Engine.handle and all it calls)": engine,
        "  of which records (make_record)": cum(
            lambda f, name: f.endswith("engine/records.py") and name == "make_record"),
        "  of which the session's handlers (own time)": own(lambda f, name: "engine/session" in f),
        "driver's own (feeding, timers, replies)": total - engine - world - observer - traffic
        - simpy,
        "world (latency draws, reply batches)": world,
        "observer (records counted, finished, samples)": observer,
        "SimPy's own time": simpy,
        "arrivals (sim.traffic)": traffic,
    }
    return us, {k: v / total for k, v in parts.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=parse_size, default=30_000, help="messages (30k)")
    args = p.parse_args(argv)
    us, shares = split(args.size)
    print(f"build: {build()}")
    print(f"blast {args.size:,}: {us:.1f} CPU us per message (plain run); profiled shares:")
    for name, share in shares.items():
        print(f"  {name:<48} {100 * share:5.1f} %  {share * us:5.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
