"""The admin API's entries as engine events: suspend, suspend-ready-q, bounce,
cancel, expiry, reload (engine.admin, engine.admin_rules)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.codec import decode_event, encode_event
from engine.effects import Connect, Discard, SetTimer
from engine.engine import Engine
from engine.errors import ProtocolError
from engine.events import (
    AdminBounceRule,
    AdminCancel,
    AdminSuspend,
    AdminSuspendReadyQ,
    PolicyReloaded,
)
from engine.message import queue_name
from tests.support.engine_harness import World, of, policy, prime, records, submit

PATH = "unspecified->(mx1|mx2).example.com@smtp_client"


def engine(**keys: Any) -> tuple[Engine, World]:
    keys.setdefault("connection_limit", 4)
    eng = Engine(policy(**keys), seed=1)
    w = World(eng, auto_connect=False)
    prime(eng)
    return eng, w


def test_every_admin_event_round_trips_through_the_codec() -> None:
    for ev in (AdminSuspend(at=1.0, id="a", reason="r", expires=9.0, domain="x.test",
                            queue_names=("q1", "q2")),
               AdminSuspendReadyQ(at=1.0, id="b", name=PATH, reason="r", expires=2.0),
               AdminBounceRule(at=1.0, id="c", reason="r", expires=3.0, campaign="c1",
                               suppress_logging=True),
               AdminCancel(at=2.0, id="a"), PolicyReloaded(at=3.0)):
        assert decode_event(encode_event(ev)) == ev


def test_admin_events_are_validated() -> None:
    with pytest.raises(ValueError, match="id must not be empty"):
        AdminSuspend(at=0.0, id="", reason="r", expires=1.0)
    with pytest.raises(ValueError, match="expires must be a finite time"):
        AdminBounceRule(at=0.0, id="x", reason="r", expires=float("inf"))


def test_suspend_holds_new_and_ready_mail_until_cancel_then_releases_it() -> None:
    eng, w = engine()
    fx = w.feed(AdminSuspend(at=0.0, id="s1", reason="maint", expires=600.0,
                             domain="example.com"))
    assert SetTimer(timer=("admin", "s1"), at=600.0) in fx
    fx = w.feed(submit(1))
    assert of(fx, Connect) == [] and eng.scheduled_count == 1
    [rec] = records(fx, "Delayed")
    assert "AdminSuspend s1: maint" in rec["response"]["content"]
    fx = w.feed(AdminCancel(at=5.0, id="s1"))
    assert eng.admin_rules.rules == {}
    w.now = 5.0
    fx = w.fire(("promote", ""))
    assert len(of(fx, Connect)) == 1 and eng.scheduled_count == 0


def test_suspend_holds_only_what_matches() -> None:
    eng, w = engine()
    w.feed(AdminSuspend(at=0.0, id="s1", reason="r", expires=600.0, domain="example.com"))
    fx = w.feed(submit(2, rcpts=("u@other.test",)))
    assert records(fx, "Delayed") == [] and eng.scheduled_count == 0


def test_suspend_ends_at_its_expiry_timer() -> None:
    eng, w = engine()
    w.feed(AdminSuspend(at=0.0, id="s1", reason="r", expires=100.0, campaign="c1"))
    w.feed(submit(1, campaign="c1"))
    assert eng.timers[("promote", "")] == 100.0
    fx = w.run(100.0)
    assert eng.admin_rules.rules == {} and len(of(fx, Connect)) == 1


def test_a_message_due_when_its_suspension_expires_is_not_held_again() -> None:
    _eng, w = engine()
    w.feed(AdminSuspend(at=0.0, id="s1", reason="r", expires=100.0))
    w.feed(submit(1))
    # the promote timer fires first, at the expiry, before ("admin", "s1")
    w.timers.pop(("admin", "s1"))
    fx = w.fire(("promote", ""))
    assert records(fx, "Delayed") == [] and len(of(fx, Connect)) == 1


def test_suspend_takes_messages_back_from_the_ready_queue() -> None:
    eng, w = engine(connection_limit=1)
    w.feed(submit(1))  # held by the (unanswered) connection
    w.feed(submit(2))  # waits in the ready queue
    assert eng.ready_depths() == {PATH: 1}
    w.feed(AdminSuspend(at=1.0, id="s", reason="r", expires=50.0, domain="example.com"))
    assert eng.ready_depths() == {PATH: 0} and eng.scheduled_count == 1


def test_bounce_rule_bounces_queued_and_newly_arriving_mail_until_expiry() -> None:
    eng, w = engine(connection_limit=1)
    w.feed(submit(1, campaign="spam"))  # held by the connection
    w.feed(submit(2, campaign="spam"))  # waits in ready
    w.feed(submit(3, campaign="good"))
    fx = w.feed(AdminBounceRule(at=1.0, id="b", reason="oops", expires=60.0, campaign="spam"))
    assert [r["id"] for r in records(fx, "AdminBounce")] == ["m2"]
    fx = w.feed(submit(4, at=2.0, campaign="spam"))
    assert [r["id"] for r in records(fx, "AdminBounce")] == ["m4"]
    assert Discard(message_id="m4") in fx
    rule = eng.admin_rules.rules["b"]
    assert rule.bounced == {queue_name("example.com", "", "spam"): 2}
    w.run(60.0)
    assert eng.admin_rules.rules == {}
    fx = w.feed(submit(5, at=61.0, campaign="spam"))
    assert records(fx, "AdminBounce") == []


def test_suspend_ready_q_with_expiry() -> None:
    eng, w = engine()
    w.feed(AdminSuspendReadyQ(at=0.0, id="r", name=PATH, reason="r", expires=30.0))
    fx = w.feed(submit(1))
    assert of(fx, Connect) == [] and eng.ready_depths() == {PATH: 1}
    fx = w.run(30.0)
    assert len(of(fx, Connect)) == 1


def test_cancel_of_an_unknown_id_is_refused_and_changes_nothing() -> None:
    eng, w = engine()
    with pytest.raises(ProtocolError, match="AdminCancel"):
        eng.handle(AdminCancel(at=0.0, id="nope"))
    w.feed(AdminSuspend(at=0.0, id="s", reason="r", expires=9.0))
    with pytest.raises(ProtocolError, match="already in use"):
        eng.handle(AdminSuspend(at=0.0, id="s", reason="r", expires=9.0))


def test_policy_reloaded_reasks_path_configs_at_once() -> None:
    eng, w = engine(connection_limit=1)
    for i in range(101):
        w.feed(submit(i))
    assert len(of(w.effects, Connect)) == 1
    eng.policy = policy(connection_limit=3)
    fx = w.feed(PolicyReloaded(at=1.0))
    assert eng.paths[PATH].cfg.connection_limit == 3
    assert len(of(fx, Connect)) == 2


def test_rules_survive_a_snapshot() -> None:
    eng, w = engine()
    w.feed(AdminSuspend(at=0.0, id="s", reason="r", expires=9.0))
    back = Engine.restore(eng.snapshot(), eng.policy)
    assert list(back.admin_rules.rules) == ["s"] and back.admin_rules.active
