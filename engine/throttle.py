"""Throttles: the rate value type, its grammar, and the GCRA that enforces it.

One `Throttle` value is shared by the configuration, the engine and the
simulator (DESIGN.md: no second copy of the rate arithmetic).  The grammar is
KumoMTA's: ``[local:]N/[k]unit[,max_burst=B]``; N may contain ``,`` or ``_``;
units ``s|sec|second``, ``m|min|minute``, ``h|hr|hour``, ``d|day``; ``10/5m``
is 10 per 300 s.  As an extension, ``k`` may be a decimal (``1/0.5s``) so that
every `Throttle` value has a spelling `format_throttle` can write.

Enforcement is the Generic Cell Rate Algorithm as KumoMTA runs it
(crates/throttle/src/throttle.rs over redis-cell's RateLimiter): the emission
interval is ``T = period / limit``, max_burst is clamped to ``limit - 1`` and
the delay-variation tolerance is ``T * (max_burst + 1)``, so a fresh bucket
admits ``min(max_burst + 1, limit)`` at once (`Throttle.effective_burst`) and
then one every T.  The default max_burst is the limit, so an unadorned
``"10/min"`` bursts 10.  A refusal's wait is KumoMTA's ``retry_after``: whole
seconds, one more when the remainder has a millisecond in it.  KumoMTA lets a
refusal whose retry_after rounds to nothing through uncounted; egress instead
waits the sub-millisecond remainder, so no event ever passes the GCRA bound.
`gcra` is the pure function; `ThrottleState` wraps one theoretical arrival
time for the engine's hot path (slots, no allocation).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.errors import ConfigError

__all__ = [
    "Throttle", "ThrottleState", "format_throttle", "gcra", "parse_throttle", "retry_after",
]

_UNITS: dict[str, int] = {
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hr": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
}
_GRAMMAR = (
    "expected '[local:]N/[k]unit[,max_burst=B]' with N > 0 (may contain ',' or '_') and unit "
    "one of s|sec|second, m|min|minute, h|hr|hour, d|day, e.g. '100/min', '1,000/hr', '10/5m'"
)
_SPEC = re.compile(
    r"(?P<local>local:)?\s*(?P<limit>[0-9][0-9,_]*)\s*/\s*"
    r"(?P<scale>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)?\s*(?P<unit>[a-zA-Z]+)"
    r"(?:\s*,\s*max_burst\s*=\s*(?P<burst>[0-9][0-9,_]*))?"
)
# Tolerance for "the wait is over": now + wait may round a hair below the
# theoretical time; a few ulps of slack keeps a timer set for exactly the
# returned wait from being refused again.
_ABS_EPS = 1e-9
_REL_EPS = 4e-16


@dataclass(frozen=True, slots=True)
class Throttle:
    """A rate limit: `limit` events per `period` seconds, with KumoMTA's `max_burst`.

    `max_burst` defaults to `limit`, so ``Throttle(1000, 3600.0) ==
    parse_throttle("1,000/hr")``; it is kept as written (so it formats back),
    and `effective_burst` is what a fresh bucket admits at once.  `local`
    marks a throttle kept per process rather than shared (KumoMTA's
    ``local:`` prefix; egress keeps every throttle in the engine, so it only
    records the intent).
    """

    limit: int
    period: float
    max_burst: int | None = None
    local: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit <= 0:
            raise ConfigError(f"Throttle.limit must be an int > 0, not {self.limit!r}")
        period = self.period
        if isinstance(period, bool) or not isinstance(period, int | float):
            raise ConfigError(f"Throttle.period must be seconds > 0, not {period!r}")
        if not math.isfinite(period) or period <= 0:
            raise ConfigError(f"Throttle.period must be finite seconds > 0, not {period!r}")
        object.__setattr__(self, "period", float(period))
        burst = self.limit if self.max_burst is None else self.max_burst
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
            raise ConfigError(f"Throttle.max_burst must be an int >= 0, not {burst!r}")
        object.__setattr__(self, "max_burst", burst)
        if not isinstance(self.local, bool):
            raise ConfigError(f"Throttle.local must be a bool, not {self.local!r}")

    @property
    def interval(self) -> float:
        """The emission interval T: seconds between events at the sustained rate."""
        return self.period / self.limit

    @property
    def burst(self) -> int:
        """`max_burst` as a plain int (never None after construction)."""
        assert self.max_burst is not None
        return self.max_burst

    @property
    def effective_burst(self) -> int:
        """Events a fresh bucket admits at once: KumoMTA clamps max_burst to
        ``limit - 1`` and tolerates one more, so ``min(max_burst + 1, limit)``."""
        return min(self.burst, self.limit - 1) + 1

    @property
    def per_second(self) -> float:
        """The sustained rate in events per second."""
        return self.limit / self.period

    def __str__(self) -> str:
        return format_throttle(self)


def _count(text: str) -> int:
    digits = text.replace(",", "").replace("_", "")
    return int(digits) if digits else 0


def parse_throttle(value: object, *, key: str = "throttle") -> Throttle:
    """Parse KumoMTA's throttle spec (``"100/min"``, ``"local:1,000/hr,max_burst=50"``).

    A `Throttle` passes through unchanged.  Anything else is a `ConfigError`
    naming `key`, the text and the grammar.
    """
    if isinstance(value, Throttle):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{key}: {value!r} is not a throttle; {_GRAMMAR}")
    m = _SPEC.fullmatch(value.strip())
    if m is None:
        raise ConfigError(f"{key}: {value!r} is not a valid throttle; {_GRAMMAR}")
    unit = _UNITS.get(m.group("unit"))
    if unit is None:
        raise ConfigError(
            f"{key}: {value!r} has unknown unit {m.group('unit')!r}; {_GRAMMAR}"
        )
    limit = _count(m.group("limit"))
    if limit <= 0:
        raise ConfigError(f"{key}: {value!r} has a limit of 0; {_GRAMMAR}")
    scale_text = m.group("scale")
    scale = float(scale_text) if scale_text else 1.0
    period = scale * unit
    if not math.isfinite(period) or period <= 0:
        raise ConfigError(f"{key}: {value!r} has a period of {period!r} s; {_GRAMMAR}")
    burst_text = m.group("burst")
    burst = _count(burst_text) if burst_text is not None else None
    return Throttle(limit=limit, period=period, max_burst=burst, local=bool(m.group("local")))


def _format_period(period: float) -> str:
    if period == int(period):
        whole = int(period)
        for name, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if whole % size == 0:
                count = whole // size
                return name if count == 1 else f"{count}{name}"
    return f"{period!r}s"


def format_throttle(throttle: Throttle) -> str:
    """Write `throttle` in the grammar `parse_throttle` reads, as short as possible:
    ``Throttle(1000, 3600.0) -> "1000/h"``, ``Throttle(10, 300.0) -> "10/5m"``."""
    text = f"{'local:' if throttle.local else ''}{throttle.limit}/{_format_period(throttle.period)}"
    if throttle.max_burst != throttle.limit:
        text += f",max_burst={throttle.max_burst}"
    return text


def retry_after(wait: float) -> float:
    """KumoMTA's rounding of a refusal's wait: whole seconds, plus one when the
    remainder holds at least a millisecond.  A wait that rounds to nothing (or
    below itself, as 1.0004 s does to 1 s and the retry then finds 0.4 ms left)
    stays exact, see the module docstring."""
    whole = math.floor(wait)
    if wait - whole >= 0.001:
        whole += 1
    return float(whole) if whole > 0 else wait


def gcra(tat: float, now: float, interval: float, burst: int) -> tuple[float, float]:
    """One GCRA decision: return ``(wait, new_tat)``.

    `tat` is the theoretical arrival time so far (``-inf`` for a fresh bucket)
    and `burst` the effective burst (`Throttle.effective_burst`).  ``wait ==
    0.0`` means the event conforms and is counted (`new_tat` advanced by
    `interval`); a positive `wait` is `retry_after` of the seconds until it
    would conform, and `new_tat` is `tat` unchanged.
    """
    allow_at = tat - interval * (burst - 1)
    wait = allow_at - now
    if wait > _ABS_EPS + _REL_EPS * abs(now):
        return retry_after(wait), tat
    return 0.0, (tat if tat > now else now) + interval


class ThrottleState:
    """The mutable GCRA state of one throttle: its theoretical arrival time.

    `check` is on the engine's hot path, so the interval and burst tolerance are
    precomputed and nothing is allocated per call.
    """

    __slots__ = ("interval", "tat", "tau", "throttle")

    def __init__(self, throttle: Throttle) -> None:
        self.throttle = throttle
        self.interval = throttle.interval
        self.tau = self.interval * (throttle.effective_burst - 1)
        self.tat = -math.inf

    def check(self, now: float) -> float:
        """0.0: allowed at `now`, and counted.  Otherwise the positive wait in
        seconds (`retry_after`) before it would be allowed; nothing is counted."""
        tat = self.tat
        wait = tat - self.tau - now
        if wait > _ABS_EPS + _REL_EPS * abs(now):
            return retry_after(wait)
        self.tat = (tat if tat > now else now) + self.interval
        return 0.0

    def peek(self, now: float) -> float:
        """The wait `check(now)` would return, without counting anything."""
        wait = self.tat - self.tau - now
        return retry_after(wait) if wait > _ABS_EPS + _REL_EPS * abs(now) else 0.0

    def __repr__(self) -> str:
        return f"ThrottleState({format_throttle(self.throttle)!r}, tat={self.tat!r})"
