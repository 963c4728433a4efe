"""engine.lifecycle: a message's retry schedule and expiry."""

from __future__ import annotations

from engine.effects import Discard, SetTimer
from engine.engine import Engine
from engine.events import DnsFailure, ResolveFailed, TimerFired
from engine.reply import Reply
from tests.support.engine_harness import World, of, policy, records, submit


def test_expiry_when_next_delay_passes_max_age() -> None:
    eng = Engine(policy(queue={"retry_interval": "1h", "max_age": "90min"}), seed=2)
    eng.handle(submit(1))
    fx = eng.handle(ResolveFailed(at=0.0, domain="example.com", kind=DnsFailure.SERVFAIL))
    due = of(fx, SetTimer)[0].at  # ~1 h: still within 90 min
    eng.handle(TimerFired(at=due, timer=("promote", "")))
    fx = eng.handle(ResolveFailed(at=due, domain="example.com", kind=DnsFailure.SERVFAIL))
    [exp] = records(fx, "Expiration")
    assert exp["response"]["code"] == 551
    assert exp["response"]["enhanced_code"] == {"class": 5, "subject": 4, "detail": 7}
    assert exp["response"]["content"].startswith("Next delivery time would be at ")
    assert "which exceeds the expiry time 1970-01-01T01:30:00Z" in exp["response"]["content"]
    assert exp["num_attempts"] == 2
    assert of(fx, Discard) == [Discard(message_id="m1")]
    assert eng.counters["total_messages_expired"] == 1 and eng.queued_count == 0


def test_attempts_are_counted_on_requeue_as_kumomta_does() -> None:
    """crates/kumod/src/queue/queue.rs (``increment_attempts_and_update_delay``):
    the delay comes from the count before, the count goes up on requeue, and a
    record written before it shows the attempts before this one: a first-try
    Delivery logs 0, the TransientFailure of a first try 0, the Delivery after
    one requeue 1."""
    eng = Engine(policy(queue={"retry_interval": "10min"}), seed=2)
    w = World(eng)
    fx = w.feed(submit(1))
    assert [r["num_attempts"] for r in records(fx, "Delivery")] == [0]
    w.rcpt_reply = lambda r: Reply.make(451, "4.2.1", "later")
    fx = w.feed(submit(2))
    [tf] = records(fx, "TransientFailure")
    assert tf["num_attempts"] == 0
    [timer] = [t for t in of(fx, SetTimer) if t.timer == ("promote", "")]
    assert 570.0 <= timer.at <= 630.0  # retry_interval * 2**0 (+- jitter)
    w.rcpt_reply = lambda r: Reply.make(250, "2.1.5", "ok")
    fx = w.run(700.0)
    assert [r["num_attempts"] for r in records(fx, "Delivery")] == [1]
