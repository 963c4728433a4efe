"""engine.flow: submission and promotion, driven by hand-built events, exact effects."""

from __future__ import annotations

import pytest

from engine.effects import Connect, Log, Resolve, SetTimer
from engine.engine import Engine
from engine.errors import ProtocolError
from engine.events import DnsFailure, Resolved, ResolveFailed, TimerFired
from engine.records import humantime, rfc3339
from tests.support.engine_harness import MX, PATH, World, of, policy, prime, records, submit


def test_submission_logs_reception_and_asks_for_mx_once() -> None:
    eng = Engine(policy(), seed=1, epoch=1_700_000_000.0)
    fx1 = eng.handle(submit(1, at=5.0, tenant="acme", campaign="spring"))
    fx2 = eng.handle(submit(2, at=6.0, tenant="acme", campaign="spring"))
    assert of(fx1, Resolve) == [Resolve(domain="example.com")]
    assert of(fx2, Resolve) == []
    rec = records(fx1)[0]
    assert rec == {
        "type": "Reception", "id": "m1", "sender": "s@sender.org",
        "recipient": "u@example.com", "queue": "spring:acme@example.com", "site": "",
        "size": 100,
        "response": {"code": 250, "enhanced_code": None, "content": "", "command": None},
        "peer_address": None, "timestamp": 1_700_000_005,
        "event_time": "2023-11-14T22:13:25Z", "created": 1_700_000_005,
        "created_time": "2023-11-14T22:13:25Z", "num_attempts": 0,
        "bounce_classification": "Uncategorized", "egress_pool": None,
        "egress_source": None, "source_address": None, "feedback_report": None,
        "meta": {}, "headers": {}, "delivery_protocol": None, "reception_protocol": "ESMTP",
        "nodeid": "00000000-0000-0000-0000-000000000000",
    }
    assert eng.queued_count == 2 and eng.scheduled_count == 0


def test_retry_promotes_again_when_due_and_resolves_once_more_after_ttl() -> None:
    eng = Engine(policy(suspended=True, queue={"retry_interval": "10min"}), seed=3)
    eng.handle(submit(1))
    fx = eng.handle(ResolveFailed(at=0.0, domain="example.com", kind=DnsFailure.TIMEOUT))
    due = of(fx, SetTimer)[0].at
    fx = eng.handle(TimerFired(at=due, timer=("promote", "")))
    assert fx == [Resolve(domain="example.com")]
    eng.handle(Resolved(at=due, domain="example.com", mx=MX, ttl=10.0))
    assert eng.ready_depths() == {PATH: 1} and eng.scheduled_count == 0


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0s"), (9420.0, "2h 37m"), (0.032, "32ms"), (41.250007, "41s 250ms 7us"),
    (86_400.0 + 61.0, "1day 1m 1s"), (2 * 86_400.0, "2days"),
    (31_557_600.0 + 2 * 2_630_016.0, "1year 2months"),
])
def test_durations_in_kumomta_texts_are_written_as_humantime_writes_them(
        seconds: float, text: str) -> None:
    # the humantime crate's format_duration (its own doc examples: "2h 37m", "32ms")
    assert humantime(seconds) == text


def test_ready_queue_full_delays_0_to_60s_without_counting_an_attempt() -> None:
    eng = Engine(policy(suspended=True, max_ready=2), seed=9, epoch=0.0)
    prime(eng, ttl=300.0)
    eng.handle(submit(1))
    eng.handle(submit(2))
    fx = eng.handle(submit(3, at=10.0))
    [rec] = records(fx, "Delayed")
    [timer] = of(fx, SetTimer)
    assert 10.0 <= timer.at <= 70.0
    assert rec["num_attempts"] == 0 and rec["site"] == ""
    assert rec["response"]["code"] == 400 and rec["response"]["enhanced_code"] is None
    # KumoMTA's text (crates/kumod/src/queue/queue.rs, did_insert_delayed) and
    # fields: no source or pool; the ready queue is named beside the record
    assert rec["response"]["content"] == (
        f"Context: Received, ReadyQueueWasFull. Next due in {humantime(timer.at - 10.0)} "
        f"at {rfc3339(timer.at)}")
    assert rec["egress_source"] is None and rec["egress_pool"] is None
    [log] = [e for e in fx if isinstance(e, Log) and e.record is rec]
    assert log.where == PATH
    assert eng.counters["delayed_due_to_ready_queue_full"] == 1
    assert eng.ready_depths() == {PATH: 2} and eng.scheduled_count == 1


def test_first_connect_carries_path_and_source() -> None:
    eng = Engine(policy(), seed=1)
    w = World(eng, auto_connect=False)
    fx = w.feed(submit(1))
    assert of(fx, Connect) == [Connect(conn=1, host="mx1.example.com", address="192.0.2.1",
                                       port=25, source="unspecified", path=PATH)]


def test_queue_max_message_rate_holds_messages_in_scheduled_without_an_attempt() -> None:
    eng = Engine(policy(suspended=True, queue={"max_message_rate": "2/min"}), seed=1)
    prime(eng)
    for i in (1, 2):
        eng.handle(submit(i))
    fx = eng.handle(submit(3)) + eng.handle(submit(4))
    recs = records(fx, "Delayed")
    assert [(r["id"], r["num_attempts"], r["site"]) for r in recs] == [
        ("m3", 0, ""), ("m4", 0, "")]
    # the burst of 2 is spent; the held messages get their turns one interval apart
    assert recs[0]["response"] == {
        "code": 400, "enhanced_code": None, "command": None,
        "content": "Delayed due to MessageRateThrottle on example.com; "
                   "next due at 1970-01-01T00:00:30Z"}
    assert recs[1]["response"]["content"].endswith("next due at 1970-01-01T00:01:00Z")
    assert eng.counters["delayed_due_to_message_rate_throttle"] == 2
    assert eng.ready_depths() == {PATH: 2} and eng.scheduled_count == 2
    eng.handle(TimerFired(at=30.0, timer=("promote", "")))
    assert eng.ready_depths() == {PATH: 3} and eng.scheduled_count == 1
    eng.handle(TimerFired(at=60.0, timer=("promote", "")))
    assert eng.ready_depths() == {PATH: 4} and eng.scheduled_count == 0
    assert eng.counters["delayed_due_to_message_rate_throttle"] == 2


@pytest.mark.parametrize(("queue_rate", "path_rate"), [("1/min", "10/min"), ("10/min", "1/min")])
def test_queue_and_path_message_rates_apply_independently_the_lower_wins(
        queue_rate: str, path_rate: str) -> None:
    eng = Engine(policy(queue={"max_message_rate": queue_rate}, max_message_rate=path_rate,
                        idle_timeout="10min"), seed=1)
    w = World(eng)
    fx = []
    for i in range(4):
        fx += w.feed(submit(i))
    fx += w.run(1000.0)
    times = sorted(r["timestamp"] for r in records(fx, "Delivery"))
    assert times == [0, 60, 120, 180]
    assert all(r["num_attempts"] == 0 for r in records(fx, "Delivery"))  # first tries


def test_duplicate_message_id_is_a_protocol_error_and_changes_nothing() -> None:
    eng = Engine(policy(suspended=True), seed=1)
    eng.handle(submit(1))
    before = eng.snapshot()
    with pytest.raises(ProtocolError, match=r"^engine cannot handle MessageSubmitted\('m1'\) "
                                            r"in state QUEUED: message id 'm1' is already "
                                            r"queued$"):
        eng.handle(submit(1, at=5.0, rcpts=("other@example.com",)))
    assert eng.snapshot() == before
    assert eng.queued_count == 1


def test_a_finished_message_id_may_be_submitted_again() -> None:
    eng = Engine(policy(), seed=1)
    w = World(eng)
    w.feed(submit(1))
    assert eng.queued_count == 0 and eng.counters["total_messages_delivered"] == 1
    w.feed(submit(1, at=1.0))
    assert eng.counters["total_messages_delivered"] == 2


def test_reception_names_the_queue_pool_and_no_source_yet() -> None:
    # KumoMTA picks the egress source at promotion; its SMTP listener logs
    # Reception with egress_pool and egress_source null (crates/kumod/src/smtp_server.rs)
    from engine.config import make_egress_path
    from engine.policy import Policy
    from engine.queue_config import make_egress_pool, make_queue_config

    p = Policy()
    p.on("get_queue_config")(lambda *a: make_queue_config(egress_pool="bulk"))
    p.on("get_egress_pool")(lambda name: make_egress_pool(name, entries=[{"name": "ip-1"}]))
    p.on("get_egress_path_config")(lambda *a: make_egress_path(enable_mta_sts=False,
                                                               suspended=True))
    eng = Engine(p, seed=1)
    [rec] = records(eng.handle(submit(1)), "Reception")
    assert (rec["egress_pool"], rec["egress_source"], rec["site"]) == (None, None, "")
    eng.handle(Resolved(at=0.0, domain="example.com", mx=MX))
    assert eng.ready_depths() == {"ip-1->(mx1|mx2).example.com@smtp_client": 1}


def _two_source_engine(max_ready: int, *, lazy: bool = False) -> Engine:
    from engine.config import make_egress_path
    from engine.policy import Policy
    from engine.queue_config import make_egress_pool, make_queue_config

    p = Policy()
    p.on("get_queue_config")(lambda *a: make_queue_config(egress_pool="bulk"))
    p.on("get_egress_pool")(lambda name: make_egress_pool(
        name, entries=[{"name": "ip-1", "weight": 3}, {"name": "ip-2", "weight": 1}]))
    p.on("get_egress_path_config")(lambda *a: make_egress_path(
        enable_mta_sts=False, suspended=True, max_ready=max_ready))
    eng = Engine(p, seed=1, lazy_redelays=lazy)
    prime(eng)
    return eng


def test_full_ready_queue_tries_the_pools_other_sources_before_redelaying() -> None:
    # KumoMTA's select_and_insert drops a full source's ready queue and selects
    # again; only when every source's is full is the message re-delayed
    eng = _two_source_engine(2)
    fx = []
    for i in range(6):
        fx += eng.handle(submit(i))
    assert eng.ready_depths() == {"ip-1->(mx1|mx2).example.com@smtp_client": 2,
                                  "ip-2->(mx1|mx2).example.com@smtp_client": 2}
    delayed = records(fx, "Delayed")
    assert [r["id"] for r in delayed] == ["m4", "m5"]
    assert all("ReadyQueueWasFull" in r["response"]["content"] for r in delayed)


def test_lazy_redelays_keep_multi_source_pools_per_message() -> None:
    # a message re-delayed from a pool of several sources may come back on
    # another path: the lazy backlog leaves it to the per-message rule
    eng = _two_source_engine(1, lazy=True)
    fx = []
    for i in range(4):
        fx += eng.handle(submit(i))
    assert len(records(fx, "Delayed")) == 2
    assert eng.overflow_depths() == {}


def test_lazy_redelays_are_counted_and_come_back_on_the_backlog_timer() -> None:
    eng = Engine(policy(suspended=True, max_ready=2), seed=9, lazy_redelays=True)
    prime(eng, ttl=300.0)
    fx = []
    for i in range(5):
        fx += eng.handle(submit(i))
    assert records(fx, "Delayed") == []  # counted, not logged
    assert eng.counters["delayed_due_to_ready_queue_full"] == 3
    assert eng.ready_depths() == {PATH: 2} and eng.overflow_depths() == {PATH: 3}
    assert eng.scheduled_count == 3
    [timer] = [t for t in eng.armed_timers() if t[0] == "backlog"]
    assert timer == ("backlog", PATH) and 1.0 <= eng.armed_timers()[timer] <= 61.0
    # two leave the ready queue (as if taken); the backlog's due messages fill it
    eng.paths[PATH].messages.clear()
    t = eng.armed_timers()[timer]
    while eng.overflow_depths()[PATH] and t < 200.0:
        eng.handle(TimerFired(at=t, timer=timer))
        eng.paths[PATH].messages.clear()
        t = eng.armed_timers().get(timer, 1e9)
    assert eng.overflow_depths() == {PATH: 0}
    assert sum(eng.silent_redelays.values()) == eng.counters["delayed_due_to_ready_queue_full"]


def test_a_message_turned_away_again_when_due_says_its_due_time_was_reached() -> None:
    # KumoMTA's maintainer inserts a due message with DueTimeWasReached: the
    # context of its next full-queue record starts there, not at Received
    eng = Engine(policy(suspended=True, max_ready=1), seed=9, epoch=0.0)
    prime(eng, ttl=300.0)
    eng.handle(submit(1))
    fx = eng.handle(submit(2, at=5.0))
    [first] = records(fx, "Delayed")
    assert first["response"]["content"].startswith("Context: Received, ReadyQueueWasFull. ")
    due = eng.armed_timers()[("promote", "")]
    [again] = records(eng.handle(TimerFired(at=due, timer=("promote", ""))), "Delayed")
    assert again["response"]["content"].startswith(
        "Context: DueTimeWasReached, ReadyQueueWasFull. Next due in ")
    assert again["num_attempts"] == 0


@pytest.mark.parametrize(("queue", "path"), [
    (None, {}),  # the lazy backlog
    ({"max_message_rate": "1000/s"}, {}),  # a queue throttle: per message
    (None, {"source_selection_rate": "1000/s"}),  # a gated source: per message
    (None, {"additional_source_selection_rates": {"sel": "1000/s"}}),
])
def test_lazy_redelays_only_where_promotion_would_find_the_same_path(
        queue: dict[str, str] | None, path: dict[str, object]) -> None:
    # promotion turns a message away lazily only when re-running it would give
    # the same answer: no max_message_rate on its queue, a source not gated by
    # a selection rate; otherwise KumoMTA's per-message rule, a Delayed record each
    eng = Engine(policy(queue, suspended=True, max_ready=1, **path), seed=9,
                 lazy_redelays=True)
    prime(eng, ttl=300.0)
    fx = []
    for i in range(4):
        fx += eng.handle(submit(i))
    assert eng.counters["delayed_due_to_ready_queue_full"] == 3
    lazy = queue is None and not path
    assert len(records(fx, "Delayed")) == (0 if lazy else 3)
    assert eng.overflow_depths() == ({PATH: 3} if lazy else {})
