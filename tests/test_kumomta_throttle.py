"""Throttles as KumoMTA enforces them.

Follows crates/throttle/src/throttle.rs (local_throttle: ``max_burst.min(limit
- 1)`` handed to redis-cell's RateLimiter, whose tolerance is ``T * (max_burst
+ 1)``; retry_after rounded up to whole seconds when it has a millisecond
part) and crates/throttle/src/lib.rs (ThrottleSpec: max_burst defaults to the
limit; ``max_burst=0`` parses).
"""

from __future__ import annotations

import pytest

from engine.throttle import Throttle, ThrottleState, parse_throttle, retry_after


def burst_at_once(spec: str) -> int:
    state = ThrottleState(parse_throttle(spec))
    n = 0
    while state.check(0.0) == 0.0:
        n += 1
    return n


@pytest.mark.parametrize(
    ("spec", "burst"),
    [
        ("10/min", 10),                 # default max_burst = limit -> clamped to 9, + 1
        ("10/min,max_burst=100", 10),   # clamped to limit - 1, + 1 (egress used to burst 100)
        ("10/min,max_burst=3", 4),      # max_burst + 1
        ("10/min,max_burst=1", 2),
        ("10/min,max_burst=0", 1),      # ThrottleSpec accepts 0: strict spacing
        ("1/s", 1),
        ("1/s,max_burst=5", 1),
    ],
)
def test_effective_burst_is_min_of_max_burst_plus_one_and_limit(spec: str, burst: int) -> None:
    assert parse_throttle(spec).effective_burst == burst
    assert burst_at_once(spec) == burst


def test_max_burst_kept_as_written_for_formatting() -> None:
    t = parse_throttle("10/min,max_burst=100")
    assert t.max_burst == 100
    assert str(t) == "10/m,max_burst=100"
    assert Throttle(10, 60.0).max_burst == 10


@pytest.mark.parametrize(
    ("exact", "rounded"),
    [
        (0.1, 1.0),        # subsec_milliseconds() > 0 -> next whole second
        (0.999, 1.0),
        (1.0, 1.0),
        (1.5, 2.0),
        (6.0, 6.0),
        (1.0004, 1.0),     # under a millisecond of remainder: truncated, as KumoMTA
        (0.0004, 0.0004),  # KumoMTA: retry_after None, passes uncounted; egress waits it
    ],
)
def test_retry_after_rounding(exact: float, rounded: float) -> None:
    assert retry_after(exact) == pytest.approx(rounded)


def test_steady_state_spacing_after_the_burst() -> None:
    # 10/min: one every 6 s once the burst of 10 is spent
    state = ThrottleState(parse_throttle("10/min"))
    assert all(state.check(0.0) == 0.0 for _ in range(10))
    assert state.check(0.0) == 6.0
    assert state.check(6.0) == 0.0
    assert state.check(6.0) == 6.0
    assert state.check(8.5) == 4.0  # 3.5 s left -> 4
