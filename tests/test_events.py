"""Events are validated on construction, so a malformed event cannot exist."""

from __future__ import annotations

import dataclasses

import pytest

from engine.events import MessageSubmitted, MtaStsPolicy, Response, TimerFired
from engine.reply import EnhancedCode, Reply


def test_message_domain_is_lowercased_and_shared() -> None:
    rcpts = ("x@Example.COM", "y@example.com")
    m = MessageSubmitted(at=0, id="m1", sender="a@b.c", recipients=rcpts)
    assert m.domain == "example.com"


def test_message_with_two_domains_is_refused() -> None:
    with pytest.raises(ValueError, match="different domains"):
        MessageSubmitted(at=0, id="m1", sender="", recipients=("x@a.com", "y@b.com"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "10"])
def test_event_time_must_be_finite_number(bad: object) -> None:
    with pytest.raises(ValueError, match="at must be a finite number"):
        TimerFired(at=bad, timer=("promote", ""))  # type: ignore[arg-type]


def test_events_are_frozen() -> None:
    ev = Response(at=1.0, conn=3, reply=Reply(code=250, text="ok"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.conn = 4  # type: ignore[misc]


def test_reply_and_enhanced_code_validate() -> None:
    assert str(Reply.make(451, "4.4.1", "later")) == "451 4.4.1 later"
    assert EnhancedCode.parse("5.1.1").to_record() == {"class": 5, "subject": 1, "detail": 1}
    with pytest.raises(ValueError):
        Reply(code=99)
    with pytest.raises(ValueError):
        EnhancedCode.parse("4.4")
    with pytest.raises(ValueError):
        MtaStsPolicy(mode="strict")
