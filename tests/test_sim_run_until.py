"""sim.driver_conns.run_until: the driver's own scheduled calls run in SimPy's order."""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest
import simpy
from simpy.events import NORMAL

from sim.driver_conns import _Due, run_until


def _schedule(env: simpy.Environment, log: list[Any], seed: int) -> simpy.Event:
    """A mix of SimPy timeouts and bare `_Due` calls, many due at the same
    instants (ties break by scheduling order), some scheduling more as they
    run; returns the `until` event: a condition on the last timeout."""
    rng = random.Random(seed)

    def due(delay: float, tag: str) -> None:
        ev = _Due()
        ev.callbacks = [lambda e: ran(e._value)]
        ev._value = tag
        heapq.heappush(env._queue, (env.now + delay, NORMAL, next(env._eid), ev))  # type: ignore[attr-defined]

    def ran(tag: str) -> None:
        log.append((env.now, tag))
        n = len(log)
        if tag.startswith("d") and n < 300:
            due(rng.choice((0.0, 1.0, 2.5)), f"d{n}")
            env.timeout(rng.choice((0.0, 1.0))).callbacks.append(lambda e: ran(f"t{n}"))

    last = None
    for i in range(40):
        delay = float(rng.randint(0, 5))
        if i % 2:
            due(delay, f"d{i}")
        else:
            last = env.timeout(delay)
            last.callbacks.append(lambda e, t=f"t{i}": ran(t))
    assert last is not None
    return env.any_of([env.timeout(20.0), env.event()])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_run_until_runs_every_event_in_simpys_order(seed: int) -> None:
    theirs: list[Any] = []
    env = simpy.Environment()
    env.run(until=_schedule(env, theirs, seed))
    ours: list[Any] = []
    env2 = simpy.Environment()
    run_until(env2, _schedule(env2, ours, seed))
    assert len(ours) > 100
    assert ours == theirs
    assert env2.now == env.now == 20.0


def test_run_until_says_when_nothing_is_left_before_until() -> None:
    env = simpy.Environment()
    env.timeout(1.0)
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        run_until(env, env.event())
