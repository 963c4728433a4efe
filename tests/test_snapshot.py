"""Snapshot + replay of the tail equals replay of the whole journal; determinism."""

from __future__ import annotations

from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import ConfigError, JournalError
from engine.events import Event, TimerFired
from engine.reply import Reply
from tests.support.engine_harness import World, policy, submit


def journal() -> list[Event]:
    """A recorded run: submissions, DNS, a delivery, timers."""
    eng = Engine(policy(queue={"retry_interval": "1min"}), seed=4)
    w = World(eng)
    recorded: list[Event] = []
    real_handle = eng.handle

    def spy(ev: Event) -> list:
        recorded.append(ev)
        return real_handle(ev)

    eng.handle = spy  # type: ignore[method-assign]
    w.rcpt_reply = lambda r: (Reply.make(451, "4.2.0", "busy") if r.startswith("t")
                              else Reply.make(250, "2.1.5", "ok"))
    for i in range(6):
        w.feed(submit(i, at=float(i), rcpts=("t@example.com",) if i % 2 else ("u@example.com",)))
    w.run(400.0)
    return recorded


def test_same_events_same_effects() -> None:
    events = journal()
    e1 = Engine(policy(queue={"retry_interval": "1min"}), seed=4)
    e2 = Engine(policy(queue={"retry_interval": "1min"}), seed=4)
    fx1 = [e for ev in events for e in e1.handle(ev)]
    fx2 = [e for ev in events for e in e2.handle(ev)]
    assert fx1 == fx2 and repr(fx1) == repr(fx2) and len(fx1) > 50


def test_snapshot_then_tail_equals_whole_replay() -> None:
    events = journal()
    assert len(events) > 40
    cut = len(events) // 2
    pol = policy(queue={"retry_interval": "1min"})
    whole = Engine(pol, seed=4)
    head = [whole.handle(ev) for ev in events[:cut]]
    snap = whole.snapshot()
    tail_whole = [whole.handle(ev) for ev in events[cut:]]
    restored = Engine.restore(snap, pol)
    tail_restored = [restored.handle(ev) for ev in events[cut:]]
    assert head and tail_restored == tail_whole
    assert restored.counters == whole.counters
    assert restored.armed_timers() == whole.armed_timers()
    assert restored.ready_depths() == whole.ready_depths()
    assert restored.scheduled_count == whole.scheduled_count
    assert restored.queued_count == whole.queued_count
    nxt = min(whole.armed_timers().items(), key=lambda kv: kv[1])
    ev = TimerFired(at=max(nxt[1], events[-1].at), timer=nxt[0])
    assert restored.handle(ev) == whole.handle(ev)


def test_snapshot_rejects_foreign_bytes() -> None:
    with pytest.raises(JournalError, match="missing EGSNAP header"):
        Engine.restore(b"not a snapshot", policy())
    with pytest.raises(JournalError, match="version 9 is not supported"):
        Engine.restore(b"EGSNAP\x09", policy())


def _secret_engine(secret: str) -> tuple[Engine, Any]:
    pol = policy(smtp_auth_plain_username="u", smtp_auth_plain_password={"key_data": secret},
                 suspended=True)
    eng = Engine(pol, seed=4)
    w = World(eng)
    w.feed(submit(1, rcpts=("a@example.com",)))
    return eng, pol


def test_an_inline_password_is_not_in_the_snapshot_and_comes_back_from_the_policy() -> None:
    secret = "tiger-Secret-7781"
    eng, pol = _secret_engine(secret)
    [rq] = eng.paths.values()
    assert rq.cfg.smtp_auth_plain_password.resolve() == secret  # the engine does hold it
    snap = eng.snapshot()
    assert secret.encode() not in snap
    restored = Engine.restore(snap, pol)
    [back] = restored.paths.values()
    assert back.cfg == rq.cfg  # the same config, secret included
    assert back.cfg.smtp_auth_plain_password.resolve() == secret


def test_a_sealed_password_the_policy_no_longer_gives_stays_sealed() -> None:
    eng, _ = _secret_engine("first-secret")
    snap = eng.snapshot()
    other = policy(smtp_auth_plain_username="u", smtp_auth_plain_password="/etc/egress/pw",
                   suspended=True)
    restored = Engine.restore(snap, other)
    [rq] = restored.paths.values()
    ks = rq.cfg.smtp_auth_plain_password
    assert ks.withheld and "first-secret" not in repr(ks)
    with pytest.raises(ConfigError, match="was not kept in the snapshot"):
        ks.resolve()


def test_a_snapshot_of_an_earlier_release_restores_its_scheduled_list() -> None:
    """A snapshot written when the scheduled list held ``(due, message)`` pairs
    (a `SortedList`) restores keyed by due time, in its order, and the tail
    replays as on the engine that wrote it."""
    from sortedcontainers import SortedList

    events = journal()
    cut = len(events) // 2
    pol = policy(queue={"retry_interval": "1min"})
    whole = Engine(pol, seed=4)
    for ev in events[:cut]:
        whole.handle(ev)
    assert whole.sched._items, "nothing scheduled at the cut"
    keyed = whole.sched._items
    whole.sched._items = SortedList((m._w, m) for m in keyed)  # the earlier layout
    snap = whole.snapshot()
    whole.sched._items = keyed
    restored = Engine.restore(snap, pol)
    assert [m.id for m in restored.sched] == [m.id for m in whole.sched]
    assert [restored.handle(ev) for ev in events[cut:]] == [whole.handle(ev) for ev in events[cut:]]
