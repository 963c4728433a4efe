"""IP warm-up plans: how many messages a new egress source may take per day or hour.

KumoMTA warms a source up with ``source_selection_rate``, one GCRA rate per
path: it smooths, but it does not follow a schedule, and a rate of 100/day
with a burst of 1 spreads the day's hundred instead of letting a provider
see them when the campaign goes out.  Operators warm IPs with a *schedule*:
day 1 at most 50 messages to each large provider, day 2 100, and so on,
counted per calendar day in the operator's zone, and whatever the new source
may not take goes out through the pool's warm sources.  That schedule is
data here, in a shaping file (docs/SHAPING.md, "Warm-up")::

    [warmup."ip-new"]                 # the egress source being warmed up
    start = 2026-01-01                # its day 1, a date in `tz`
    tz = "UTC"                        # whose midnights and hours start a new count
    daily = { 1 = 50, 2 = 100, 4 = 400, 8 = 2000, 15 = "unlimited" }
    hourly = { 1 = 10, 8 = 300 }      # optional, as daily: day -> cap per hour
    [warmup."ip-new".providers."Gmail"]   # a [provider."Gmail"] name, or a site name
    daily = { 1 = 20, 2 = 40 }

A cap applies per provider: the path's ``provider_name`` (a shaping file's
``[provider]`` block that matched the destination sets it) or, without one,
its site name; each provider has its own count.  A day takes the cap of the
greatest listed day at or before it; before the first listed day the source
takes nothing; ``"unlimited"`` lifts the cap.

This module holds the values and the calendar arithmetic, all pure: a time is
Unix seconds (the engine's event time plus its epoch), and the zone's rules
come from `zoneinfo`, loaded once when the file is parsed.  What counts and
what a full cap does is `engine.selection`'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import ConfigError

__all__ = ["DAY", "HOUR", "PERIODS", "Schedule", "Warmup", "load_warmup", "table", "zone"]

DAY = "daily"
HOUR = "hourly"
PERIODS = (DAY, HOUR)
UNLIMITED = "unlimited"
_KEYS = ("start", "tz", DAY, HOUR, "providers")


def zone(name: Any, where: str) -> ZoneInfo:
    """The IANA zone `name` (``"America/New_York"``), or a ConfigError naming `where`."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: tz: {name!r} is not an IANA time zone name "
                          "such as \"Europe/Paris\"")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: tz: {name!r} is not a known IANA time zone "
                          "(such as \"America/New_York\"; abbreviations like EST are not)"
                          ) from None


@dataclass(frozen=True, slots=True)
class Schedule:
    """Day -> cap steps, ascending by day; a cap of None is unlimited."""

    steps: tuple[tuple[int, int | None], ...]

    def cap(self, day: int) -> int | None:
        """The cap on `day` (1 is the plan's start date): the greatest listed day's
        at or before it, 0 before the first."""
        found: int | None = 0
        for first, cap in self.steps:
            if first > day:
                break
            found = cap
        return found


@dataclass(frozen=True, slots=True)
class Warmup:
    """One source's plan: its start date, zone, and schedules (source-wide and
    per provider; a provider's table replaces the period it names)."""

    source: str
    start: dt.date
    tz: ZoneInfo
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    providers: Mapping[str, Mapping[str, Schedule]] = field(default_factory=dict)

    def schedule(self, period: str, provider: str) -> Schedule | None:
        """The schedule counting `period` for `provider` (None: no cap of that period)."""
        own = self.providers.get(provider)
        if own is not None and period in own:
            return own[period]
        return self.schedules.get(period)

    def day(self, t: float) -> int:
        """The plan's day number at Unix time `t` (1 on the start date)."""
        return (dt.datetime.fromtimestamp(t, self.tz).date() - self.start).days + 1

    def bucket_end(self, period: str, t: float) -> float:
        """When the count of `period` that `t` falls in ends (the next local
        midnight, or the next local hour), as Unix seconds.  A local day is 23 or
        25 hours long across a DST change; the local hour follows the wall clock."""
        local = dt.datetime.fromtimestamp(t, self.tz)
        if period == HOUR:
            top = local.replace(minute=0, second=0, microsecond=0)
            return top.timestamp() + 3600.0
        nxt = local.date() + dt.timedelta(days=1)
        return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.tz).timestamp()


def table(raw: Any, keys: tuple[str, ...], where: str) -> Mapping[str, Any]:
    """`raw` if it is a table with only `keys`; else a ConfigError naming `where`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {raw!r} is not a table")
    for key in raw:
        if key not in keys:
            raise ConfigError(f"{where}: unknown field {key!r}; valid fields are "
                              f"{', '.join(keys)}")
    return raw


def _schedule(raw: Any, where: str) -> Schedule:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: {raw!r} is not a table of day = cap, such as "
                          "{ 1 = 50, 2 = 100, 8 = \"unlimited\" }")
    steps: list[tuple[int, int | None]] = []
    for key, value in raw.items():
        try:
            day = int(key)
        except ValueError:
            day = 0
        if day < 1 or str(day) != str(key).strip():
            raise ConfigError(f"{where}: day {key!r} is not a day number (1 is the start date)")
        if value == UNLIMITED:
            steps.append((day, None))
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            steps.append((day, value))
        else:
            raise ConfigError(f"{where}: day {key}: {value!r} is not a cap (an integer >= 0 "
                              f"or \"{UNLIMITED}\")")
    return Schedule(tuple(sorted(steps)))


def _periods(raw: Mapping[str, Any], where: str) -> dict[str, Schedule]:
    return {p: _schedule(raw[p], f"{where}.{p}") for p in PERIODS if p in raw}


def _start(raw: Any, where: str) -> dt.date:
    if isinstance(raw, dt.datetime):
        raise ConfigError(f"{where}.start: {raw!r} is not a date; write a date (2026-01-01)")
    if isinstance(raw, dt.date):
        return raw
    if isinstance(raw, str):
        try:
            return dt.date.fromisoformat(raw)
        except ValueError:
            pass
    raise ConfigError(f"{where}.start: {raw!r} is not a date such as 2026-01-01")


def _one(source: str, raw: Any, file: str) -> Warmup:
    where = f'{file}: [warmup."{source}"]'
    raw = table(raw, _KEYS, where)
    if "start" not in raw:
        raise ConfigError(f"{where}: missing field 'start' (the plan's day 1, a date)")
    schedules = _periods(raw, where)
    providers: dict[str, dict[str, Schedule]] = {}
    provs = raw.get("providers", {})
    if not isinstance(provs, Mapping):
        raise ConfigError(f"{where}.providers: {provs!r} is not a table of provider tables")
    for name, tbl in provs.items():
        pw = f'{where}.providers."{name}"'
        providers[name] = _periods(table(tbl, PERIODS, pw), pw)
    if not schedules and not any(providers.values()):
        raise ConfigError(f"{where}: no schedule; give daily or hourly (day = cap)")
    return Warmup(source, _start(raw["start"], where), zone(raw.get("tz", "UTC"), where),
                  schedules, providers)


def load_warmup(raw: Any, file: str) -> dict[str, Warmup]:
    """A shaping file's ``[warmup."source"]`` tables, validated (by source name)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{file}: [warmup]: not a table of sources ([warmup.\"ip-new\"])")
    return {source: _one(source, tbl, file) for source, tbl in raw.items()}
