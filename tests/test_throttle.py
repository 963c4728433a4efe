"""Throttles: every example of the reference page, the extended forms, the
round trip, and the GCRA's properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.throttle import Throttle, ThrottleState, format_throttle, gcra, parse_throttle

PAGE_EXAMPLES = [
    ("10/s", 10, 1.0), ("10/sec", 10, 1.0), ("10/second", 10, 1.0),
    ("50/m", 50, 60.0), ("50/min", 50, 60.0), ("50/minute", 50, 60.0),
    ("1,000/hr", 1000, 3600.0), ("1_000/h", 1000, 3600.0), ("1000/hour", 1000, 3600.0),
    ("10_000/d", 10000, 86400.0), ("10,000/day", 10000, 86400.0),
    ("100/min", 100, 60.0),
]


@pytest.mark.parametrize(("text", "limit", "period"), PAGE_EXAMPLES)
def test_reference_page_examples(text: str, limit: int, period: float) -> None:
    t = parse_throttle(text)
    assert t == Throttle(limit=limit, period=period)
    assert (t.limit, t.period, t.max_burst, t.local) == (limit, period, limit, False)
    assert t.interval == period / limit


def test_design_example() -> None:
    assert parse_throttle("1,000/hr") == Throttle(limit=1000, period=3600.0)
    assert parse_throttle("1,000/hr").per_second == 1000 / 3600
    assert Throttle(10, 5.0).per_second == 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/5m", Throttle(10, 300.0)),
        ("local:100/s", Throttle(100, 1.0, local=True)),
        ("100/min,max_burst=5", Throttle(100, 60.0, max_burst=5)),
        ("local:1,000/2h,max_burst=1_000", Throttle(1000, 7200.0, max_burst=1000, local=True)),
        (" 5 / 10s ", Throttle(5, 10.0)),
        ("1/0.5s", Throttle(1, 0.5)),
    ],
)
def test_extended_forms(text: str, expected: Throttle) -> None:
    assert parse_throttle(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0/s", "has a limit of 0"),
        ("10/x", "has unknown unit 'x'"),
        ("10/seconds", "has unknown unit 'seconds'"),
        ("10", "is not a valid throttle"),
        ("ten/s", "is not a valid throttle"),
        ("10/0s", "has a period of 0.0 s"),
        ("-1/s", "is not a valid throttle"),
    ],
)
def test_errors_name_key_text_and_grammar(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_throttle(text, key="max_message_rate")
    msg = str(err.value)
    assert msg.startswith(f"max_message_rate: {text!r}")
    assert why in msg
    if "max_burst" not in why:
        assert "[local:]N/[k]unit[,max_burst=B]" in msg


def test_non_string_refused_and_throttle_passes_through() -> None:
    with pytest.raises(ConfigError, match="max_connection_rate: 5 is not a throttle"):
        parse_throttle(5, key="max_connection_rate")
    t = Throttle(3, 1.0)
    assert parse_throttle(t) is t


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"limit": 0, "period": 1.0}, "limit must be an int > 0"),
        ({"limit": True, "period": 1.0}, "limit must be an int > 0"),
        ({"limit": 1, "period": 0}, "period must be finite seconds > 0"),
        ({"limit": 1, "period": math.inf}, "period must be finite seconds > 0"),
        ({"limit": 1, "period": 1.0, "max_burst": -1}, "max_burst must be an int >= 0"),
    ],
)
def test_throttle_constructor_validates(kwargs: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        Throttle(**kwargs)


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (Throttle(1000, 3600.0), "1000/h"),
        (Throttle(10, 300.0), "10/5m"),
        (Throttle(5, 1.0, max_burst=2, local=True), "local:5/s,max_burst=2"),
        (Throttle(7, 86400.0), "7/d"),
        (Throttle(1, 0.25), "1/0.25s"),
    ],
)
def test_format_throttle(t: Throttle, text: str) -> None:
    assert format_throttle(t) == text
    assert str(t) == text


throttles = st.builds(
    Throttle,
    limit=st.integers(1, 10**9),
    period=st.one_of(
        st.integers(1, 10**7).map(float),
        st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False),
    ),
    max_burst=st.one_of(st.none(), st.integers(0, 10**9)),
    local=st.booleans(),
)


@given(throttles)
def test_round_trip(t: Throttle) -> None:
    assert parse_throttle(format_throttle(t)) == t


def test_fresh_bucket_admits_burst_then_one_per_interval() -> None:
    # KumoMTA's retry_after is whole seconds (crates/throttle/src/throttle.rs)
    state = ThrottleState(parse_throttle("3/s"))
    assert [state.check(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = state.check(0.0)
    assert wait == 1.0  # 1/3 s, rounded up to a whole second
    assert state.check(0.0) == wait  # a refusal counts nothing
    assert state.peek(wait) == 0.0
    assert state.check(wait) == 0.0  # waiting the returned wait is enough
    assert [state.check(wait) for _ in range(2)] == [0.0, 0.0]
    assert state.check(wait) == 1.0


def test_max_burst_one_bursts_two() -> None:
    # redis-cell's tolerance is T * (max_burst + 1): max_burst=1 admits two at once
    state = ThrottleState(parse_throttle("10/s,max_burst=1"))
    assert state.check(5.0) == 0.0
    assert state.check(5.0) == 0.0
    assert state.check(5.0) == 1.0
    assert state.check(5.1) == 0.0
    assert state.check(5.1) == 1.0


def test_idle_bucket_refills_only_to_burst() -> None:
    state = ThrottleState(parse_throttle("2/s"))
    assert state.check(0.0) == 0.0
    # after a long idle time, only the burst (2) at once, not more
    assert [state.check(100.0) for _ in range(3)] == [0.0, 0.0, 1.0]


def test_gcra_pure_function() -> None:
    assert gcra(-math.inf, 10.0, 0.5, 1) == (0.0, 10.5)
    assert gcra(10.5, 10.0, 0.5, 1) == (1.0, 10.5)
    assert gcra(10.5, 10.0, 0.5, 2) == (0.0, 11.0)
    assert gcra(11.0, 10.0, 0.5, 2) == (1.0, 11.0)
    assert gcra(12.5, 10.0, 0.5, 1) == (3.0, 12.5)


@given(
    limit=st.integers(1, 50),
    period=st.sampled_from([1.0, 10.0, 60.0, 3600.0]),
    burst=st.integers(0, 50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=200),
    window=st.floats(min_value=0.0, max_value=500.0),
)
def test_admitted_in_any_window_from_fresh_is_bounded(
    limit: int, period: float, burst: int, gaps: list[float], window: float
) -> None:
    t = Throttle(limit, period, max_burst=burst)
    state = ThrottleState(t)
    now, admitted_at = 0.0, []
    for gap in gaps:
        now += gap
        if state.check(now) == 0.0:
            admitted_at.append(now)
    in_window = sum(1 for t in admitted_at if t <= window)
    assert in_window <= t.effective_burst + window / state.interval + 1e-9


@given(
    limit=st.integers(1, 100),
    burst=st.integers(0, 100),
    times=st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=100),
)
def test_waits_are_enough(limit: int, burst: int, times: list[float]) -> None:
    """The returned wait is KumoMTA's retry_after (whole seconds) unless under a
    millisecond, and waiting it is enough."""
    state = ThrottleState(Throttle(limit, 1.0, max_burst=burst))
    for now in sorted(times):
        wait = state.check(now)
        if wait > 0.0:
            assert wait > 1e-9
            assert wait == int(wait) or wait < 0.001
            probe = ThrottleState(state.throttle)
            probe.tat = state.tat
            again = probe.check(now + wait)
            assert again == 0.0 or again < 0.001
