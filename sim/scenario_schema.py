"""Reading a scenario's tables with error messages that say exactly what is wrong.

Every value a person writes in a scenario goes through a `Table`: a view of
one TOML table that knows its own path (``hosts."mx1.example.com"``) and the
file it came from, hands out typed values (`probability`, `duration`,
`distribution`, ...) and remembers which keys were read, so `finish()` can
refuse every key nobody asked for.  That is how "unknown fields anywhere are
errors" holds without a separate list of allowed keys to keep in step.

Each refusal is a `ScenarioError` of one shape::

    scenarios/x.toml: hosts."mx1.example.com".tempfail_rcpt: expected a
    probability between 0 and 1, got 1.5

Value grammar shared by the scenario format lives here too: durations
(engine.durations, the same grammar as the engine's timeouts), sizes
("2KB", "100KB", "1.5MB"; KB = 1000 bytes, KiB = 1024), rates ("600/min",
the throttle grammar of engine.throttle, or a number per second) and
latency/size distributions (a constant, ``{median, p99}`` or ``{min, max}``)
and whole SMTP replies (``"451 4.7.1 Try again later"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from engine.errors import EgressError
from engine.reply import Reply
from sim.distributions import Constant, Distribution, LogNormal, Uniform

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")
SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_MISSING: Any = object()
_REPLY = re.compile(r"([245]\d\d)(?: ([245]\.\d{1,3}\.\d{1,3}))?(?: (.*))?")


class ScenarioError(EgressError, ValueError):
    """A scenario is wrong; the message names the file, the table path, the
    field, the value and what was expected.  Defined here, at the bottom of the
    scenario modules, so every reader raises it without importing upward."""


def key_part(key: str) -> str:
    """A key as TOML writes it in a dotted path: bare when it can be, else quoted."""
    if _BARE_KEY.fullmatch(key):
        return key
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def join_path(path: str, key: str) -> str:
    """``join_path('hosts', 'mx1.example.com') == 'hosts."mx1.example.com"'``."""
    part = key_part(key)
    return f"{path}.{part}" if path else part


def describe(value: Any) -> str:
    """How a value a person wrote is shown back in an error."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class Table:
    """One TOML table of a scenario, read field by field."""

    __slots__ = ("_used", "data", "path", "source")

    def __init__(self, data: Mapping[str, Any], path: str, source: str) -> None:
        self.data = data
        self.path = path
        self.source = source
        self._used: set[str] = set()

    # -- errors ----------------------------------------------------------------

    def where(self, key: str | None = None) -> str:
        """The path of this table, or of one of its fields."""
        if key is None:
            return self.path or "(top level)"
        return join_path(self.path, key)

    def error(self, key: str | None, message: str) -> ScenarioError:
        """A `ScenarioError` naming the file, this table's path, `key` and `message`."""
        return ScenarioError(f"{self.source}: {self.where(key)}: {message}")

    def expected(self, key: str, what: str, value: Any) -> ScenarioError:
        return self.error(key, f"expected {what}, got {describe(value)}")

    # -- raw access ------------------------------------------------------------

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value as written (marked as read); `default` when absent, else an error."""
        self._used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "this field is required")
        return default

    def finish(self) -> None:
        """Refuse any key that no one read: unknown fields are errors."""
        unknown = [k for k in self.data if k not in self._used]
        if unknown:
            allowed = ", ".join(sorted(self._used))
            raise self.error(
                unknown[0], f"unknown field; expected one of: {allowed or '(no fields)'}"
            )

    # -- typed values ----------------------------------------------------------
    # Each getter returns `default` unchanged when the key is absent (so a
    # default may be None), and validates the value when it is present.

    def _absent(self, key: str, default: Any) -> bool:
        self._used.add(key)
        if key in self.data:
            return False
        if default is _MISSING:
            raise self.error(key, "this field is required")
        return True

    def string(self, key: str, default: Any = _MISSING) -> Any:
        if self._absent(key, default):
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value:
            raise self.expected(key, "a non-empty string", value)
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        if self._absent(key, default):
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.expected(key, "true or false", value)
        return value

    def integer(
        self, key: str, default: Any = _MISSING, *, minimum: int = 0, maximum: int | None = None
    ) -> Any:
        if self._absent(key, default):
            return default
        value = self.data[key]
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if ok and maximum is not None:
            ok = value <= maximum
        if not ok:
            bound = f"an integer >= {minimum}"
            if maximum is not None:
                bound = f"an integer between {minimum} and {maximum}"
            raise self.expected(key, bound, value)
        return value

    def number(self, key: str, default: Any = _MISSING, *, minimum: float = 0.0) -> Any:
        if self._absent(key, default):
            return default
        value = self.data[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < minimum
        ):
            raise self.expected(key, f"a number >= {minimum:g}", value)
        return float(value)

    def probability(self, key: str, default: float = 0.0) -> float:
        if self._absent(key, default):
            return default
        value = self.data[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0.0 <= value <= 1.0
        ):
            raise self.expected(key, "a probability between 0 and 1", value)
        return float(value)

    def reply(self, key: str, klass: int) -> Reply:
        """A whole SMTP reply on one line, ``"451 4.7.1 Try again later"``,
        whose code (and enhanced code, when given) is of class `klass`."""
        value = self.raw(key)
        what = f'a {klass}xx SMTP reply such as "{klass}51 {klass}.7.1 Try again later"'
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise self.expected(key, what, value)
        m = _REPLY.fullmatch(value.strip())
        if m is None or int(m.group(1)) // 100 != klass:
            raise self.expected(key, what, value)
        enhanced = m.group(2)
        if enhanced is not None and int(enhanced[0]) != klass:
            raise self.expected(key, f"{what} (the enhanced code's class matching the code's)",
                                value)
        return Reply.make(int(m.group(1)), enhanced, m.group(3) or "")

    def duration(self, key: str, default: Any = _MISSING) -> Any:
        if self._absent(key, default):
            return default
        return self.parse_duration(key, self.data[key])

    def parse_duration(self, key: str, value: Any) -> float:
        from engine.durations import parse_duration

        try:
            return parse_duration(value, key=key)
        except ValueError:
            raise self.expected(
                key, 'a duration such as 30, "250ms", "2min" or "1h30m"', value
            ) from None

    def size(self, key: str, default: Any = _MISSING) -> Any:
        if self._absent(key, default):
            return default
        return self.parse_size(key, self.data[key])

    def parse_size(self, key: str, value: Any) -> int:
        what = 'a size in bytes such as 2048, "2KB", "100KB" or "1.5MB"'
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise self.expected(key, what, value)
            return value
        if isinstance(value, str):
            m = _SIZE.fullmatch(value)
            if m and m.group(2).lower() in SIZE_UNITS:
                return round(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()])
        raise self.expected(key, what, value)

    def rate(self, key: str, default: Any = _MISSING) -> Any:
        """Events per second, from a number or a throttle-like ``"600/min"``."""
        if self._absent(key, default):
            return default
        value = self.data[key]
        what = 'a rate: a number per second or a string such as "600/min" or "10/s"'
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or value <= 0:
                raise self.expected(key, what, value)
            return float(value)
        if isinstance(value, str):
            from engine.throttle import parse_throttle

            try:
                throttle = parse_throttle(value)
            except ValueError:
                raise self.expected(key, what, value) from None
            return throttle.limit / throttle.period
        raise self.expected(key, what, value)

    def distribution(self, key: str, default: Any, *, kind: str = "duration") -> Distribution:
        """A constant, ``{median, p99}`` (lognormal) or ``{min, max}`` (uniform).

        `kind` is ``"duration"`` (latencies, seconds) or ``"size"`` (bytes).
        `default` is written as in a scenario file (e.g. ``"20ms"``).
        """
        self._used.add(key)
        value = self.data.get(key, default)
        if not isinstance(value, dict):
            parse = self.parse_size if kind == "size" else self.parse_duration
            return Constant(float(parse(key, value)))
        sub = Table(value, self.where(key), self.source)
        parse = sub.parse_size if kind == "size" else sub.parse_duration
        keys = set(value)
        if keys == {"median", "p99"}:
            med, p99 = parse("median", value["median"]), parse("p99", value["p99"])
            if med <= 0:
                raise sub.expected("median", f"a {kind} above 0", value["median"])
            if p99 <= med:
                raise sub.expected(
                    "p99", f"a {kind} above the median ({describe(value['median'])})",
                    value["p99"],
                )
            return LogNormal(med, p99)
        if keys == {"min", "max"}:
            low, high = parse("min", value["min"]), parse("max", value["max"])
            if high < low:
                raise sub.expected(
                    "max", f"a {kind} >= min ({describe(value['min'])})", value["max"]
                )
            return Uniform(low, high)
        raise self.error(
            key,
            f"expected a {kind}, or a table {{median, p99}} or {{min, max}}, "
            f"got a table with keys {sorted(keys)}",
        )

    def table(self, key: str, default: Any = _MISSING) -> Table | None:
        """A sub-table (None when absent and `default` is None)."""
        value = self.raw(key, default)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.expected(key, "a table", value)
        return Table(value, self.where(key), self.source)

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[traffic]]`` or ``[{...}, {...}]``); [] when absent."""
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise self.expected(key, "an array of tables", value)
        out = []
        for i, item in enumerate(value):
            path = f"{self.where(key)}[{i}]"
            if not isinstance(item, dict):
                raise ScenarioError(
                    f"{self.source}: {path}: expected a table, got {describe(item)}"
                )
            out.append(Table(item, path, self.source))
        return out

    def subtables(self, key: str) -> Iterator[tuple[str, Table]]:
        """The tables of a table of tables (``[hosts."name"]``), in file order."""
        parent = self.table(key, None)
        if parent is None:
            return
        for name, value in parent.data.items():
            parent._used.add(name)
            if not isinstance(value, dict):
                raise parent.expected(name, "a table", value)
            yield name, Table(value, parent.where(name), self.source)
