"""KumoMTA's admin request bodies, checked, as engine events.

``SuspendV1Request``, ``SuspendReadyQueueV1Request`` and ``BounceV1Request``
(crates/kumo-api-types/src/lib.rs): optional criteria, a required
``reason``, ``duration`` (a duration string such as ``"20m"``, or seconds)
or ``expires`` (RFC 3339), KumoMTA's default being 5 minutes.  Unknown
fields are refused, as ``deny_unknown_fields`` makes KumoMTA do.  The event
carries an absolute expiry, so a restart ends the entry at the same moment.

A fault raises `BadRequest` naming the field; the server answers 400 with it.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

from engine.durations import parse_duration
from engine.events import AdminBounceRule, AdminSuspend, AdminSuspendReadyQ

__all__ = ["DEFAULT_DURATION", "BadRequest", "parse_bounce", "parse_suspend",
           "parse_suspend_ready_q"]

DEFAULT_DURATION = 300.0  # KumoMTA's default_duration()

_CRITERIA = ("domain", "tenant", "campaign")


class BadRequest(ValueError):
    """A request field is missing or wrong; `field` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _check_fields(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise BadRequest(f"unknown field {key!r}; expected one of {', '.join(allowed)}",
                             key)


def _text(data: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key} is required", key)
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"{key} must be a non-empty string, not {value!r}", key)
    return value


def _names(data: dict[str, Any]) -> tuple[str, ...]:
    value = data.get("queue_names", [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequest("queue_names must be a list of queue name strings", "queue_names")
    return tuple(value)


def _expires(data: dict[str, Any], now: float) -> float:
    """``expires`` (RFC 3339) or now + ``duration`` (default 5 minutes)."""
    if data.get("expires") is not None:
        if data.get("duration") is not None:
            raise BadRequest("give duration or expires, not both", "expires")
        text = data["expires"]
        try:
            when = datetime.fromisoformat(str(text))
        except ValueError:
            raise BadRequest(f"expires {text!r} is not an RFC 3339 time such as "
                             "2026-12-07T06:00:00Z", "expires") from None
        if when.tzinfo is None:
            raise BadRequest(f"expires {text!r} needs a time zone (Z or +hh:mm)", "expires")
        at = when.timestamp()
        if at <= now:
            raise BadRequest(f"expires {text!r} is in the past", "expires")
        return at
    value = data.get("duration")
    if value is None:
        return now + DEFAULT_DURATION
    try:
        if isinstance(value, bool):
            raise ValueError("not a duration")
        seconds = float(value) if isinstance(value, int | float) else parse_duration(value)
    except (ValueError, TypeError):
        raise BadRequest(f"duration {value!r} is not a duration such as '20m' or '1h'",
                         "duration") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadRequest(f"duration {value!r} must be above zero", "duration")
    return now + seconds


def parse_suspend(data: dict[str, Any], now: float) -> AdminSuspend:
    """POST /api/admin/suspend/v1."""
    _check_fields(data, (*_CRITERIA, "reason", "duration", "expires", "queue_names"))
    return AdminSuspend(at=now, id=str(uuid.uuid4()), reason=_text(data, "reason", required=True),
                        expires=_expires(data, now), domain=_text(data, "domain").lower(),
                        tenant=_text(data, "tenant"), campaign=_text(data, "campaign"),
                        queue_names=_names(data))


def parse_suspend_ready_q(data: dict[str, Any], now: float) -> AdminSuspendReadyQ:
    """POST /api/admin/suspend-ready-q/v1."""
    from engine.live.admin_views import ready_q_name

    _check_fields(data, ("name", "reason", "duration", "expires"))
    return AdminSuspendReadyQ(at=now, id=str(uuid.uuid4()),
                              name=ready_q_name(_text(data, "name", required=True)),
                              reason=_text(data, "reason", required=True),
                              expires=_expires(data, now))


def parse_bounce(data: dict[str, Any], now: float) -> AdminBounceRule:
    """POST /api/admin/bounce/v1."""
    _check_fields(data, (*_CRITERIA, "routing_domain", "reason", "duration", "expires",
                         "queue_names", "suppress_logging"))
    quiet = data.get("suppress_logging", False)
    if not isinstance(quiet, bool):
        raise BadRequest("suppress_logging must be true or false", "suppress_logging")
    return AdminBounceRule(at=now, id=str(uuid.uuid4()),
                           reason=_text(data, "reason", required=True),
                           expires=_expires(data, now), domain=_text(data, "domain").lower(),
                           tenant=_text(data, "tenant"), campaign=_text(data, "campaign"),
                           routing_domain=_text(data, "routing_domain").lower(),
                           queue_names=_names(data), suppress_logging=quiet)
