"""engine.lifecycle: a message's retry schedule and expiry."""

from __future__ import annotations

from engine.effects import Discard, SetTimer
from engine.engine import Engine
from engine.events import DnsFailure, ResolveFailed, TimerFired
from tests.support.engine_harness import of, policy, records, submit


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
