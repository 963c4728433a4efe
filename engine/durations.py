"""Durations: the one way a person writes a span of time in egress.

KumoMTA takes "an integer in seconds, or a string using syntax like "2min""
(its humantime grammar).  We accept the same: an int or float of seconds, or a
string of one or more ``<number><unit>`` parts ("30s", "2min", "1h30m",
"1h 30m", "500ms", "1.5d"); a bare numeric string is seconds.  Every duration
is stored as float seconds, because that is what the engine adds to ``at``.

Parsing goes through `fractions.Fraction` so "1h30m" and "0.1s" are exact
before the single final rounding to float; that is what makes
``parse_duration(format_duration(x)) == x`` hold for every finite x >= 0.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from engine.errors import ConfigError

__all__ = ["DURATION_UNITS", "format_duration", "parse_duration", "positive_duration",
           "show_duration"]

# Unit spelling -> seconds.  humantime's spellings, minus months/years (whose
# length humantime fixes arbitrarily; nobody should configure a timeout in them).
DURATION_UNITS: dict[str, Fraction] = {}
for _names, _secs in (
    (("ns", "nsec", "nanos", "nanosecond", "nanoseconds"), Fraction(1, 10**9)),
    (("us", "usec", "micros", "microsecond", "microseconds"), Fraction(1, 10**6)),
    (("ms", "msec", "millis", "millisecond", "milliseconds"), Fraction(1, 1000)),
    (("s", "sec", "secs", "second", "seconds"), Fraction(1)),
    (("m", "min", "mins", "minute", "minutes"), Fraction(60)),
    (("h", "hr", "hrs", "hour", "hours"), Fraction(3600)),
    (("d", "day", "days"), Fraction(86400)),
    (("w", "week", "weeks"), Fraction(604800)),
):
    for _name in _names:
        DURATION_UNITS[_name] = _secs

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_PART = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]+)\s*")
_BARE = re.compile(rf"\s*({_NUMBER})\s*")
_EXPECTED = (
    "expected a number of seconds (>= 0) or a string like '30s', '2min', '1h30m' or '500ms'"
)

# Units format_duration composes whole-second values from, largest first.
_FORMAT_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _fail(key: str, value: object, why: str = "") -> ConfigError:
    detail = f" ({why})" if why else ""
    return ConfigError(f"{key}: {value!r} is not a valid duration{detail}; {_EXPECTED}")


def parse_duration(value: object, *, key: str = "duration") -> float:
    """Return `value` as float seconds.

    `value` is an int or float of seconds, or a string such as ``"2min"``,
    ``"30s"``, ``"1h30m"``, ``"500ms"``.  Negative, infinite and NaN values are
    refused with a `ConfigError` naming `key`, the value and the grammar.
    """
    if isinstance(value, bool):
        raise _fail(key, value, "a bool is not a duration")
    if isinstance(value, int | float):
        if math.isnan(value) or math.isinf(value):
            raise _fail(key, value, "must be finite")
        if value < 0:
            raise _fail(key, value, "must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise _fail(key, value, f"a {type(value).__name__} is not a duration")
    text = value.strip()
    if not text:
        raise _fail(key, value, "empty")
    if text.startswith("-"):
        raise _fail(key, value, "must not be negative")
    bare = _BARE.fullmatch(text)
    if bare:
        return float(Fraction(bare.group(1)))
    total = Fraction(0)
    pos = 0
    while pos < len(value):
        m = _PART.match(value, pos)
        if m is None:
            raise _fail(key, value, f"cannot read {value[pos:].strip()!r}")
        unit = DURATION_UNITS.get(m.group(2))
        if unit is None:
            unit = DURATION_UNITS.get(m.group(2).lower())
        if unit is None:
            raise _fail(key, value, f"unknown unit {m.group(2)!r}")
        total += Fraction(m.group(1)) * unit
        pos = m.end()
    result = float(total)
    if math.isinf(result):
        raise _fail(key, value, "too large")
    return result


def format_duration(seconds: float) -> str:
    """Format `seconds` as the shortest readable string `parse_duration` maps back
    to exactly the same float: ``5400.0 -> "1h30m"``, ``0.5 -> "500ms"``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"format_duration needs a number of seconds, not {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"format_duration needs a finite number >= 0, not {seconds!r}")
    if seconds == int(seconds):
        whole = int(seconds)
        if whole == 0:
            return "0s"
        parts = []
        for name, size in _FORMAT_UNITS:
            count, whole = divmod(whole, size)
            if count:
                parts.append(f"{count}{name}")
        return "".join(parts)
    if seconds < 1:
        millis = round(Fraction(seconds) * 1000)
        if float(Fraction(millis, 1000)) == seconds:
            return f"{millis}ms"
    return f"{seconds!r}s"


def show_duration(seconds: float | None) -> str:
    """A measured span as every command prints it (simulate, sweep, compare,
    replay): ``"-"`` for None; under a second in milliseconds (``"350ms"``);
    under a minute with up to two decimals (``"20.06s"``); from a minute on in
    whole seconds (``"9m59s"``, ``"1h02m03s"``, ``"2d03h00m00s"``).  Unlike
    `format_duration` it rounds: it is for reading, not for round trips."""
    if seconds is None:
        return "-"
    value = float(seconds)
    if not math.isfinite(value):
        return str(value)
    if value < 0:
        return "-" + show_duration(-value)
    if value < 1:
        millis = round(value * 1000, 1)
        return "0s" if millis == 0 else f"{millis:g}ms"
    if value < 59.995:
        return f"{value:.2f}".rstrip("0").rstrip(".") + "s"
    m, s = divmod(round(value), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    if d:
        return f"{d}d{h:02d}h{m:02d}m{s:02d}s"
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def positive_duration(value: object, key: str) -> float | None:
    """A duration that must be above zero (a span of 0 s would make the setting
    mean "never" or "at once"): a command-line flag's or a config key's.  None
    when `value` is None (not given).  A `ConfigError` names `key`, the value
    and what was wrong otherwise."""
    if value is None:
        return None
    return duration_above_zero(value, key)


def duration_above_zero(value: object, key: str) -> float:
    """`positive_duration` for a value that must be given (a config key's check)."""
    seconds = parse_duration(value, key=key)
    if seconds <= 0:
        raise ConfigError(f"{key}: {value!r} is not valid; expected a duration above 0")
    return seconds
