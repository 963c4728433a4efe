"""Tests for engine.restart: the `Restarted` event after a crash or stop."""

from __future__ import annotations

from engine.codec import decode_event, encode_event
from engine.effects import Connect, FetchMtaSts, Resolve, Send, SetTimer, Verb
from engine.engine import Engine
from engine.events import Connected, Response, Restarted
from engine.reply import Reply
from tests.support.engine_harness import World, of, policy, records, submit


def _mid_transaction() -> tuple[Engine, World]:
    """One message whose DATA was sent on conn 1 and never answered."""
    eng = Engine(policy())
    world = World(eng, auto_connect=False)
    world.feed(submit(1))
    (connect,) = of(world.effects, Connect)
    world.auto_connect = True
    world.feed(Connected(at=0.0, conn=connect.conn))
    eng.handle(Response(at=0.0, conn=connect.conn, reply=Reply.make(220, None, "hi")))
    eng.handle(Response(at=0.0, conn=connect.conn, reply=Reply(code=250, text="mx\nPIPELINING")))
    return eng, world


def test_restart_drops_the_session_and_retries_its_message_at_once() -> None:
    eng, _ = _mid_transaction()
    (ctx,) = eng.conns.values()
    assert ctx.started is True
    attempts = ctx.msg.attempts
    fx = eng.handle(Restarted(at=5.0))
    # the old connection is forgotten and a new one opened for the same message
    connects = of(fx, Connect)
    assert [c.conn for c in connects] == [2]
    assert list(eng.conns) == [2]
    assert eng.conns[2].msg.id == "m1"
    assert eng.conns[2].msg.attempts == attempts == 0  # the cut-off attempt does not count
    assert records(fx) == []  # no record: the drop is not a delivery attempt
    assert ("conn", 1) not in eng.timers
    assert eng.queued_count == 1


def test_restart_re_emits_armed_timers_and_pending_lookups() -> None:
    eng = Engine(policy(enable_mta_sts=True))
    fx = eng.handle(submit(1))
    assert of(fx, Resolve) == [Resolve(domain="example.com")]
    eng.handle(submit(2, at=1.0, rcpts=("u@example.net",)))
    armed = eng.armed_timers()
    fx = eng.handle(Restarted(at=2.0))
    assert sorted(r.domain for r in of(fx, Resolve)) == ["example.com", "example.net"]
    assert of(fx, FetchMtaSts) == []
    assert {(t.timer, t.at) for t in of(fx, SetTimer)} == set(armed.items())


def test_restart_re_asks_a_pending_mta_sts_policy() -> None:
    eng = Engine(policy(enable_mta_sts=True))
    world = World(eng, auto_dns=False)
    world.feed(submit(1))
    from engine.events import Resolved
    from tests.support.engine_harness import MX

    fx = world.feed(Resolved(at=0.0, domain="example.com", mx=MX, ttl=1e9))
    assert of(fx, FetchMtaSts) == [FetchMtaSts(domain="example.com")]
    fx = eng.handle(Restarted(at=1.0))
    assert of(fx, FetchMtaSts) == [FetchMtaSts(domain="example.com")]
    assert of(fx, Connect) == []


def test_restart_is_journaled_like_any_event_and_replays_to_the_same_state() -> None:
    ev = Restarted(at=12.5)
    assert decode_event(encode_event(ev)) == ev
    eng1, _ = _mid_transaction()
    fx1 = eng1.handle(Restarted(at=5.0))
    eng2, _ = _mid_transaction()
    fx2 = eng2.handle(Restarted(at=5.0))
    assert fx1 == fx2
    assert eng1.snapshot() == eng2.snapshot()


def test_restart_then_delivery_completes_with_one_delivery_record() -> None:
    eng, world = _mid_transaction()
    world.open.clear()
    fx = world.feed(Restarted(at=5.0))
    sends = [c.verb for s in of(fx, Send) for c in s.commands]
    assert Verb.BODY in sends
    deliveries = records(fx, "Delivery")
    assert [(r["id"], r["recipient"]) for r in deliveries] == [("m1", "u@example.com")]
    assert eng.queued_count == 0
