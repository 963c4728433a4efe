"""Delivery windows as curfews: the hours, in a named zone, when mail waits.

A receiver's business hours, a tenant's promise not to mail at night, a
campaign that must not land on a Sunday: each is a set of local hours during
which matching messages stay in their scheduled queue.  KumoMTA has the
per-message form (``msg:set_scheduling { dow, tz, start, end }``: the hours
delivery is *permitted*, crates/message/src/scheduling.rs); egress states
the hours it is *held*, per domain, tenant or campaign, in a shaping file
(docs/SHAPING.md, "Curfews")::

    [[curfew]]
    name = "night"                  # names it in records (default "curfew#N")
    domain = "example.com"          # and/or tenant, campaign: a name or a list
    tz = "America/New_York"         # an IANA zone, as set_scheduling's tz
    hours = "21:00-08:00"           # held from 21:00 to 08:00 local (a list for several)
    dow = "Mon,Tue,Wed,Thu,Fri"     # optional: the days a held span starts on

A span ``21:00-08:00`` that starts on Friday ends on Saturday at 08:00;
``"00:00-24:00"`` holds the whole day.  Local times are converted with the
zone's rules at each date, so a span keeps its wall-clock hours across a DST
change (a night is 8 or 10 hours long then); a local time that does not exist
(in the spring gap) or exists twice (in the autumn fold) is taken with the
offset before the change (Python's ``fold=0``).

Everything here is pure arithmetic over Unix seconds; what a curfew does to a
message is `engine.curfew_hold`'s.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from engine.errors import ConfigError
from engine.warmup import table, zone

__all__ = ["Curfew", "load_curfews"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_KEYS = ("name", "domain", "tenant", "campaign", "tz", "hours", "dow")
_DAY = 1440  # minutes


@dataclass(frozen=True, slots=True)
class Curfew:
    """One curfew: who it holds, and when (minutes after local midnight)."""

    name: str
    tz: ZoneInfo
    spans: tuple[tuple[int, int], ...]  # (start, end) minutes; end > start, <= 2 * _DAY
    days: frozenset[int]  # weekdays (Monday 0) a span may start on
    domains: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    hours: str = ""  # as written, for records

    def matches(self, domain: str, tenant: str, campaign: str) -> bool:
        """True when the scheduled queue (domain, tenant, campaign) is held by it:
        every part the curfew names must match."""
        return ((not self.domains or domain.lower() in self.domains)
                and (not self.tenants or tenant in self.tenants)
                and (not self.campaigns or campaign in self.campaigns))

    def _intervals(self, t: float) -> list[tuple[float, float]]:
        """The held spans starting from the day before `t` to nine days after, in
        Unix seconds, sorted."""
        today = dt.datetime.fromtimestamp(t, self.tz).date()
        out = []
        for offset in range(-1, 10):
            day = today + dt.timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            for start, end in self.spans:
                out.append((self._at(day, start), self._at(day, end)))
        out.sort()
        return out

    def _at(self, day: dt.date, minutes: int) -> float:
        day = day + dt.timedelta(days=minutes // _DAY)
        minutes %= _DAY
        return dt.datetime(day.year, day.month, day.day, minutes // 60, minutes % 60,
                           tzinfo=self.tz).timestamp()

    def status(self, t: float) -> tuple[bool, float]:
        """(held, until): whether Unix time `t` is within the curfew, and when that
        changes: the release (the end of the held spans that run into each other),
        or the next span's start (inf when none within a week)."""
        spans = self._intervals(t)
        release = None
        for start, end in spans:
            if release is None:
                if start <= t < end:
                    release = end
            elif start <= release < end:
                release = end
        if release is not None:
            return True, release
        return False, min((s for s, _ in spans if s > t), default=float("inf"))


def _names(raw: Any, key: str, where: str, lower: bool = False) -> frozenset[str]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{where}: {key}: {raw!r} is not a name or a list of names")
    return frozenset(i.lower() if lower else i for i in items)


def _spans(raw: Any, where: str) -> tuple[tuple[int, int], ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: hours: {raw!r} is not a span such as \"21:00-08:00\" "
                          "or a list of them")
    out = []
    for item in items:
        m = _SPAN.match(item) if isinstance(item, str) else None
        if m is None:
            raise ConfigError(f"{where}: hours: {item!r} is not a span such as \"21:00-08:00\"")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
            raise ConfigError(f"{where}: hours: {item!r} is not a span of times 00:00 to 24:00")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            raise ConfigError(f"{where}: hours: {item!r} is empty; \"00:00-24:00\" "
                              "holds the whole day")
        out.append((start, end if end > start else end + _DAY))
    return tuple(out)


def _dow(raw: Any, where: str) -> frozenset[int]:
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: dow: {raw!r} is not a list of days such as \"Sat,Sun\"")
    days = set()
    for part in raw.split(","):
        name = part.strip().lower()
        if name in _DAYS:
            days.add(_DAYS.index(name))
        elif name in _FULL:
            days.add(_FULL.index(name))
        else:
            raise ConfigError(f"{where}: dow: {part.strip()!r} is not a day (Mon ... Sun, "
                              "or the full English name)")
    return frozenset(days)


def _holds_always(spans: tuple[tuple[int, int], ...], days: frozenset[int]) -> bool:
    """True when the spans leave no minute of the week free (mail would never go)."""
    week = 7 * _DAY
    held = bytearray(week)
    for d in days:
        for start, end in spans:
            for minute in range(d * _DAY + start, d * _DAY + end):
                held[minute % week] = 1
    return all(held)


def _one(n: int, raw: Any, file: str) -> Curfew:
    where = f"{file}: [[curfew]] #{n + 1}"
    raw = table(raw, _KEYS, where)
    for key in ("tz", "hours"):
        if key not in raw:
            raise ConfigError(f"{where}: missing field {key!r}")
    name = raw.get("name", f"curfew#{n + 1}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name: {name!r} is not a non-empty string")
    spans = _spans(raw["hours"], where)
    days = _dow(raw["dow"], where) if "dow" in raw else frozenset(range(7))
    if _holds_always(spans, days):
        raise ConfigError(f"{where}: hours {raw['hours']!r} on these days hold every hour "
                          "of the week; mail would never go")
    hours = raw["hours"] if isinstance(raw["hours"], str) else ",".join(raw["hours"])
    return Curfew(
        name, zone(raw["tz"], where), spans, days,
        _names(raw["domain"], "domain", where, lower=True) if "domain" in raw else frozenset(),
        _names(raw["tenant"], "tenant", where) if "tenant" in raw else frozenset(),
        _names(raw["campaign"], "campaign", where) if "campaign" in raw else frozenset(),
        hours)


def load_curfews(raw: Any, file: str, first: int = 0) -> list[Curfew]:
    """A shaping file's ``[[curfew]]`` tables, validated; `first` numbers them after
    those of earlier files."""
    if not isinstance(raw, list):
        raise ConfigError(f"{file}: curfew: not an array of tables ([[curfew]])")
    return [_one(first + i, item, file) for i, item in enumerate(raw)]
