"""engine.outcomes: what follows a session's outcomes (records per recipient, the
next address, the whole queue delayed after consecutive failures)."""

from __future__ import annotations

from engine.effects import Connect, Discard
from engine.engine import Engine
from engine.events import ConnectFailed
from engine.reply import Reply
from tests.support.engine_harness import PATH, World, of, policy, records, resolved_engine, submit


def test_host_failure_tries_next_address_then_transient_failure() -> None:
    eng, w = resolved_engine()
    w.feed(submit(1))
    fx = w.feed(ConnectFailed(at=1.0, conn=1, reason="refused"))
    assert of(fx, Connect) == [Connect(conn=2, host="mx2.example.com", address="192.0.2.2",
                                       port=25, source="unspecified", path=PATH)]
    fx = w.feed(ConnectFailed(at=2.0, conn=2, reason="refused"))
    [rec] = records(fx, "TransientFailure")
    # KumoMTA counts attempts on requeue (crates/kumod/src/queue/queue.rs): the
    # record of the first failure, written before the requeue, shows 0
    assert rec["num_attempts"] == 0 and rec["response"]["code"] == 421
    assert rec["peer_address"] == {"name": "mx2.example.com", "addr": "192.0.2.2"}
    assert "refused" in rec["response"]["content"]
    assert eng.paths[PATH].failures == 1


def test_consecutive_failures_past_threshold_delay_whole_ready_queue() -> None:
    eng, w = resolved_engine(connection_limit=1, consecutive_connection_failures_before_delay=1)
    for i in range(4):
        w.feed(submit(i))
    conn = 1
    outcomes = []
    for _round in range(3):
        fx = w.feed(ConnectFailed(at=1.0, conn=conn, reason="x"))
        fx += w.feed(ConnectFailed(at=1.0, conn=conn + 1, reason="x"))
        outcomes.append(sorted(r["id"] for r in records(fx, "TransientFailure")))
        conn += 2
    # failures 0 -> 1, 1 -> 2 (held only); then 2 > 1: bulk delay of everything left
    assert outcomes[0] == ["m0"] and outcomes[1] == ["m1"]
    assert outcomes[2] == ["m2", "m3"]
    bulk = records(fx, "TransientFailure")
    assert {r["response"]["content"] for r in bulk} == {"No answer from any hosts listed in MX"}
    assert eng.ready_depths() == {PATH: 0} and eng.scheduled_count == 4


def test_successful_connect_resets_the_failure_counter() -> None:
    eng, w = resolved_engine()
    w.feed(submit(1))
    w.feed(ConnectFailed(at=1.0, conn=1, reason="x"))
    w.feed(ConnectFailed(at=1.0, conn=2, reason="x"))
    assert eng.paths[PATH].failures == 1
    w.feed(submit(2, at=2.0))
    from engine.events import Connected
    w.feed(Connected(at=3.0, conn=3))
    assert eng.paths[PATH].failures == 0


def test_per_recipient_outcomes_keep_only_pending_recipients() -> None:
    eng = Engine(policy(queue={"retry_interval": "10min"}), seed=5)
    w = World(eng)
    answers = {"a@example.com": Reply.make(250, "2.1.5", "ok"),
               "b@example.com": Reply.make(451, "4.2.1", "later"),
               "c@example.com": Reply.make(550, "5.1.1", "no such user")}
    w.rcpt_reply = lambda r: answers[r]
    fx = w.feed(submit(1, rcpts=("a@example.com", "b@example.com", "c@example.com")))
    got = {r["recipient"]: (r["type"], r["num_attempts"]) for r in records(fx)
           if r["type"] != "Reception"}
    # a first try logs 0: KumoMTA counts attempts on requeue
    # (crates/kumod/src/queue/queue.rs, increment_attempts_and_update_delay)
    assert got == {"a@example.com": ("Delivery", 0), "b@example.com": ("TransientFailure", 0),
                   "c@example.com": ("Bounce", 0)}
    assert of(fx, Discard) == [] and eng.scheduled_count == 1
    answers["b@example.com"] = Reply.make(250, "2.1.5", "ok")
    fx = w.run(2000.0)
    delivered = records(fx, "Delivery")
    assert [(r["recipient"], r["num_attempts"]) for r in delivered] == [("b@example.com", 1)]
    assert of(fx, Discard) == [Discard(message_id="m1")] and eng.queued_count == 0
