"""engine.admin: Suspend, Resume, Bounce and Drain."""

from __future__ import annotations

from engine.effects import CancelTimer, Connect, Discard, Log, Send, SetTimer, SmtpCommand, Verb
from engine.events import (
    Bounce,
    Connected,
    ConnectFailed,
    Drain,
    Response,
    Restarted,
    Resume,
    Suspend,
)
from engine.reply import Reply
from tests.support.engine_harness import EHLO_CAPS, PATH, of, records, resolved_engine, submit


def test_suspend_keeps_messages_and_resume_sends() -> None:
    eng, w = resolved_engine()
    w.feed(Suspend(at=0.0, path=PATH))
    fx = w.feed(submit(1))
    assert of(fx, Connect) == [] and eng.ready_depths() == {PATH: 1}
    fx = w.feed(Resume(at=1.0, path=PATH))
    assert len(of(fx, Connect)) == 1


def test_admin_bounce_scheduled_and_ready_not_in_flight_until_it_returns() -> None:
    eng, w = resolved_engine(connection_limit=1)
    w.feed(submit(1))  # held by conn 1
    w.feed(submit(2))  # waits in ready
    w.feed(submit(3, rcpts=("x@other.test",)))  # parked on DNS: other domain
    fx = w.feed(Bounce(at=5.0, domain="example.com", reason="cleanup"))
    [rec] = records(fx, "AdminBounce")
    assert rec["id"] == "m2" and rec["response"]["code"] == 551
    assert rec["response"]["content"] == "Administrator bounced with reason: cleanup"
    fx = w.feed(ConnectFailed(at=6.0, conn=1, reason="x"))
    fx += w.feed(ConnectFailed(at=6.0, conn=2, reason="x"))
    assert [r["id"] for r in records(fx, "AdminBounce")] == ["m1"]
    assert Discard(message_id="m1") in fx and eng.queued_count == 1


def test_drain_quits_idle_sessions_and_opens_nothing_after() -> None:
    eng, w = resolved_engine(idle_timeout=300)
    w.auto_connect = True
    w.feed(submit(1, at=1.0))  # delivered; the session waits under its idle timer
    assert eng.handle(Drain(at=2.0)) == [
        CancelTimer(timer=("idle", 1)),
        Send(conn=1, commands=(SmtpCommand(verb=Verb.QUIT),)),
        SetTimer(timer=("conn", 1), at=302.0),  # QUIT waits idle_timeout
    ]
    fx = eng.handle(submit(2, at=3.0))
    assert [type(e) for e in fx] == [Log]  # the Reception record: no Connect
    assert eng.ready_depths() == {PATH: 1}


def test_drain_lets_the_transaction_on_the_wire_finish_and_starts_no_other() -> None:
    eng, _ = resolved_engine(connection_limit=1)
    eng.handle(submit(1, at=1.0))  # conn 1 holds m1
    eng.handle(submit(2, at=1.0))  # m2 waits in the ready queue
    eng.handle(Connected(at=2.0, conn=1))
    eng.handle(Response(at=2.0, conn=1, reply=Reply.make(220, None, "hi")))
    fx = eng.handle(Response(at=2.0, conn=1, reply=Reply(code=250, text=EHLO_CAPS)))
    assert [c.verb for c in of(fx, Send)[0].commands] == [Verb.MAIL, Verb.RCPT, Verb.DATA]
    assert eng.handle(Drain(at=3.0)) == []  # nothing idle, nothing to stop
    for code in (250, 250, 354):
        eng.handle(Response(at=4.0, conn=1, reply=Reply.make(code, None, "ok")))
    fx = eng.handle(Response(at=5.0, conn=1, reply=Reply.make(250, "2.0.0", "queued")))
    assert [r["type"] for r in records(fx)] == ["Delivery"]
    assert of(fx, Discard) == [Discard(message_id="m1")]
    assert [c.verb for s in of(fx, Send) for c in s.commands] == [Verb.QUIT]  # not MAIL
    assert of(fx, Connect) == [] and eng.ready_depths() == {PATH: 1}


def test_drain_hands_a_held_message_back_unattempted_and_restart_lifts_it() -> None:
    eng, _ = resolved_engine()
    eng.handle(submit(1, at=1.0))  # conn 1 connects, holding m1
    eng.handle(Drain(at=2.0))
    eng.handle(Connected(at=3.0, conn=1))
    eng.handle(Response(at=3.0, conn=1, reply=Reply.make(220, None, "hi")))
    fx = eng.handle(Response(at=3.0, conn=1, reply=Reply(code=250, text=EHLO_CAPS)))
    assert [c.verb for s in of(fx, Send) for c in s.commands] == [Verb.QUIT]
    assert records(fx) == [] and eng.ready_depths() == {PATH: 1}
    fx = eng.handle(Restarted(at=4.0))
    assert [c.conn for c in of(fx, Connect)] == [2]


def test_drain_abandons_the_next_address_of_a_failed_host() -> None:
    eng, _ = resolved_engine()
    eng.handle(submit(1, at=1.0))
    eng.handle(Drain(at=2.0))
    fx = eng.handle(ConnectFailed(at=3.0, conn=1, reason="refused"))
    assert of(fx, Connect) == [] and records(fx) == []
    assert eng.ready_depths() == {PATH: 1} and eng.connection_counts() == {PATH: 0}
