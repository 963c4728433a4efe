"""engine/event_tools.py: re-stamping an event with a new `at`."""

from __future__ import annotations

import pytest

from engine.event_tools import restamp
from engine.events import MxRecord, Resolved, TimerFired

MX = (MxRecord(preference=10, host="mx1.example.com", addresses=("192.0.2.1",)),)


def test_restamp_keeps_every_field_but_at() -> None:
    ev = Resolved(at=1.0, domain="example.com", mx=MX, implicit=True, ttl=60.0)
    again = restamp(ev, 7.5)
    assert type(again) is Resolved
    assert again == Resolved(at=7.5, domain="example.com", mx=MX, implicit=True, ttl=60.0)
    assert ev.at == 1.0  # the original is untouched (events are frozen)
    assert restamp(TimerFired(at=0.0, timer=("data", 3)), 2.0) == TimerFired(
        at=2.0, timer=("data", 3))


def test_restamp_validates_like_the_constructor() -> None:
    with pytest.raises(ValueError, match=r"TimerFired\.at must be a finite number, not nan"):
        restamp(TimerFired(at=0.0, timer=("data", 3)), float("nan"))
