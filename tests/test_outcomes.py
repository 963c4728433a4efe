"""engine.outcomes: what follows a session's outcomes (records per recipient, the
next address, the whole queue delayed after consecutive failures)."""

from __future__ import annotations

from engine.effects import Connect, Discard
from engine.engine import Engine
from engine.events import Connected, ConnectFailed, Response
from engine.reply import Reply
from tests.support.engine_harness import PATH, World, of, policy, records, resolved_engine, submit


def test_host_failure_tries_next_address_then_transient_failure() -> None:
    """Every address failed: the held message's record is KumoMTA's internal
    transient, 400 with no enhanced code and no peer, naming every failure
    (crates/kumod/src/ready_queue.rs, Dispatcher::run)."""
    eng, w = resolved_engine()
    w.feed(submit(1))
    fx = w.feed(ConnectFailed(at=1.0, conn=1, reason="refused"))
    assert of(fx, Connect) == [Connect(conn=2, host="mx2.example.com", address="192.0.2.2",
                                       port=25, source="unspecified", path=PATH)]
    fx = w.feed(ConnectFailed(at=2.0, conn=2, reason="reset"))
    [rec] = records(fx, "TransientFailure")
    # KumoMTA counts attempts on requeue (crates/kumod/src/queue/queue.rs): the
    # record of the first failure, written before the requeue, shows 0
    assert rec["num_attempts"] == 0
    assert (rec["response"]["code"], rec["response"]["enhanced_code"]) == (400, None)
    assert rec["response"]["content"] == (
        "KumoMTA internal: failed to connect to any candidate hosts: "
        "connect to mx1.example.com [192.0.2.1]:25 failed: refused, "
        "connect to mx2.example.com [192.0.2.2]:25 failed: reset")
    assert rec["peer_address"] is None and rec["site"] == PATH
    assert rec["egress_source"] == "unspecified"
    assert eng.paths[PATH].failures == 1


def test_consecutive_failures_past_threshold_delay_whole_ready_queue() -> None:
    """crates/kumod/src/ready_queue.rs: the held message always gets the internal
    400; past the threshold (``fetch_add(1) > ...before_delay``) the rest of the
    ready queue is delayed with the page's 451 4.4.1."""
    eng, w = resolved_engine(connection_limit=1, consecutive_connection_failures_before_delay=1)
    for i in range(4):
        w.feed(submit(i))
    conn = 1
    outcomes = []
    for _round in range(3):
        fx = w.feed(ConnectFailed(at=1.0, conn=conn, reason="x"))
        fx += w.feed(ConnectFailed(at=1.0, conn=conn + 1, reason="x"))
        outcomes.append([(r["id"], r["response"]["code"])
                         for r in records(fx, "TransientFailure")])
        conn += 2
    # failures 0 -> 1, 1 -> 2 (held only); then 2 > 1: the held one, then a bulk delay
    assert outcomes[0] == [("m0", 400)] and outcomes[1] == [("m1", 400)]
    assert outcomes[2] == [("m2", 400), ("m3", 451)]
    bulk = [r for r in records(fx, "TransientFailure") if r["id"] == "m3"]
    assert bulk[0]["response"]["content"] == "No answer from any hosts listed in MX"
    assert eng.ready_depths() == {PATH: 0} and eng.scheduled_count == 4


def test_only_an_established_session_resets_the_failure_counter() -> None:
    """KumoMTA resets consecutive_connection_failures after attempt_connection
    succeeds (banner, EHLO, TLS, AUTH), not at TCP connect
    (crates/kumod/src/ready_queue.rs): a banner 554 counts as a failure."""
    eng, w = resolved_engine()
    w.feed(submit(1))
    w.feed(ConnectFailed(at=1.0, conn=1, reason="x"))
    w.feed(ConnectFailed(at=1.0, conn=2, reason="x"))
    assert eng.paths[PATH].failures == 1
    w.feed(submit(2, at=2.0))
    w.feed(Connected(at=3.0, conn=3))
    assert eng.paths[PATH].failures == 1  # connected is not established
    w.feed(Response(at=3.0, conn=3, reply=Reply.make(554, "5.7.1", "go away")))
    w.feed(Connected(at=3.0, conn=4))
    fx = w.feed(Response(at=3.0, conn=4, reply=Reply.make(554, "5.7.1", "go away")))
    assert eng.paths[PATH].failures == 2
    [rec] = records(fx, "TransientFailure")
    assert rec["response"]["code"] == 400 and "554 5.7.1 go away" in rec["response"]["content"]
    eng.handle(submit(3, at=4.0))  # by hand from here: the world would answer EHLO
    eng.handle(Connected(at=5.0, conn=5))
    eng.handle(Response(at=5.0, conn=5, reply=Reply.make(220, None, "hi")))
    assert eng.paths[PATH].failures == 2  # banner only: EHLO still to come
    eng.handle(Response(at=5.0, conn=5, reply=Reply(code=250, text="mx\nPIPELINING")))
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
