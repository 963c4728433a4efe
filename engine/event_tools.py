"""Small helpers over events that more than one driver needs.

Drivers compute some answers (a DNS result, a TLS outcome) before the moment
they are delivered, and must stamp them with the time they arrive: the core
trusts `at` and never reads a clock.  Events are frozen, so re-stamping
means building a new one.  The live driver (`engine.live.driver_io`) and the
simulator (`sim.driver`) both need it, so it lives here, beside the events.
It builds the event through its constructor, so the new one is validated as
any other.
"""

from __future__ import annotations

from typing import TypeVar

from engine.events import Event

__all__ = ["restamp"]

E = TypeVar("E", bound=Event)


def restamp(event: E, at: float) -> E:
    """A copy of `event` with every field the same but `at`."""
    fields = {name: getattr(event, name) for name in event.__dataclass_fields__}
    fields["at"] = at
    return type(event)(**fields)
