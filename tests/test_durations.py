"""Durations: the grammar of the reference page, errors, and the round trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.durations import format_duration, parse_duration, positive_duration
from engine.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2min", 120.0),
        ("30s", 30.0),
        ("1h", 3600.0),
        ("5m", 300.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("90", 90.0),
        (" 2 min ", 120.0),
        ("1.5s", 1.5),
        ("1w", 604800.0),
        ("2hours", 7200.0),
        ("10sec", 10.0),
        ("0s", 0.0),
        (60, 60.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration_examples(text: object, seconds: float) -> None:
    result = parse_duration(text)
    assert result == seconds
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("-1s", "must not be negative"),
        (-1, "must not be negative"),
        (-0.5, "must not be negative"),
        (float("nan"), "must be finite"),
        (float("inf"), "must be finite"),
        ("nan", "cannot read"),
        ("1x", "unknown unit 'x'"),
        ("1h30", "cannot read '30'"),
        ("", "empty"),
        (True, "a bool is not a duration"),
        (None, "a NoneType is not a duration"),
        ([1], "a list is not a duration"),
    ],
)
def test_parse_duration_refuses(value: object, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration(value, key="connect_timeout")
    msg = str(err.value)
    assert msg.startswith(f"connect_timeout: {value!r} is not a valid duration")
    assert why in msg
    assert "'2min'" in msg  # names the expected grammar


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (30.0, "30s"), (120.0, "2m"), (5400.0, "1h30m"), (86401.0, "1d1s"),
     (0.5, "500ms"), (1.5, "1.5s"), (1e-5, "1e-05s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_refuses_negative_and_nan() -> None:
    with pytest.raises(ValueError, match="finite number >= 0"):
        format_duration(-1.0)
    with pytest.raises(ValueError, match="finite number >= 0"):
        format_duration(math.nan)
    with pytest.raises(TypeError):
        format_duration("1s")  # type: ignore[arg-type]


@given(st.floats(min_value=0.0, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_round_trip_floats(x: float) -> None:
    assert parse_duration(format_duration(x)) == x


@given(st.integers(min_value=0, max_value=10**12))
def test_round_trip_whole_seconds(n: int) -> None:
    text = format_duration(float(n))
    assert "." not in text
    assert parse_duration(text) == float(n)


@pytest.mark.parametrize(("value", "seconds"), [(None, None), ("2min", 120.0), (0.5, 0.5)])
def test_positive_duration_takes_a_span_above_zero(value: object, seconds: float | None) -> None:
    assert positive_duration(value, "--log-max-age") == seconds


@pytest.mark.parametrize(("value", "why"), [
    (0, "--log-max-age: 0 is not valid; expected a duration above 0"),
    ("0s", "--log-max-age: '0s' is not valid; expected a duration above 0"),
    ("soon", "--log-max-age: 'soon' is not a valid duration"),
])
def test_positive_duration_names_the_key_and_what_was_wrong(value: object, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        positive_duration(value, "--log-max-age")
    assert str(info.value).startswith(why)


def test_the_path_keys_use_the_same_check() -> None:
    from engine.path_keys import NEWER_CHECKS

    with pytest.raises(ConfigError, match=r"^remember_broken_tls: 0 is not valid; expected a "
                       r"duration above 0$"):
        NEWER_CHECKS["remember_broken_tls"](0, "remember_broken_tls")
    with pytest.raises(ConfigError, match=r"^refresh_interval: None is not valid"):
        NEWER_CHECKS["refresh_interval"](None, "refresh_interval")
