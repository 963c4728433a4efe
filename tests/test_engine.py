"""engine.engine: the event and timer tables, protocol errors, the maint timer."""

from __future__ import annotations

import pytest

from engine.effects import SetTimer
from engine.engine import Engine
from engine.errors import ProtocolError
from engine.events import Response, TimerFired
from engine.reply import Reply
from tests.support.engine_harness import PATH, policy, prime, records, resolved_engine, submit


def test_event_for_unknown_connection_is_a_protocol_error() -> None:
    eng, w = resolved_engine()
    w.feed(submit(1))
    before = eng.snapshot()
    with pytest.raises(ProtocolError, match=r"^session 99 cannot handle Response in state "
                                            r"UNKNOWN$"):
        eng.handle(Response(at=1.0, conn=99, reply=Reply.make(250, None, "ok")))
    with pytest.raises(ProtocolError, match=r"^session 1 cannot handle Response\(250\) in state "
                                            r"AWAIT_CONNECT$"):
        eng.handle(Response(at=1.0, conn=1, reply=Reply.make(250, None, "ok")))
    assert eng.snapshot() == before


def test_stalled_ready_queue_still_expires_at_max_age() -> None:
    eng = Engine(policy(suspended=True, queue={"max_age": "1h"}), seed=2)
    prime(eng, ttl=300.0)
    fx = eng.handle(submit(1, at=100.0))
    assert SetTimer(timer=("maint", PATH), at=3700.0) in fx
    fx = eng.handle(TimerFired(at=3700.0, timer=("maint", PATH)))
    assert [r["type"] for r in records(fx)] == ["Expiration"]
    assert eng.ready_depths() == {PATH: 0} and eng.queued_count == 0


def test_timer_not_armed_is_a_protocol_error_and_changes_nothing() -> None:
    eng = Engine(policy(), seed=1)
    eng.handle(submit(1))
    before = eng.snapshot()
    with pytest.raises(ProtocolError, match=r"^engine cannot handle TimerFired\(\('idle', 7\)\) "
                                            r"in state NOT_ARMED$"):
        eng.handle(TimerFired(at=1.0, timer=("idle", 7)))
    assert eng.snapshot() == before
