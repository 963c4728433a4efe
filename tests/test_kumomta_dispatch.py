"""KumoMTA's dispatcher where egress follows it (docs/KUMOMTA.md, rows 3c, 3d,
9a, 9b, 10b, 11, 12d, 12e): events in, effects out, each test citing the file
of KumoCorp/kumomta it follows (paths under ``crates/``)."""

from __future__ import annotations

import pytest

from engine.effects import Connect
from engine.events import Bounce, ConnectFailed
from tests.support.engine_harness import PATH, of, records, resolved_engine, submit


def test_admin_bounce_wording_site_and_source_as_kumomta() -> None:
    """crates/kumod/src/http_server/admin_bounce_v1.rs: ``551 5.7.1
    Administrator bounced with reason: <r>``, site "localhost", no egress
    source or pool, whether the message was scheduled or ready."""
    eng, w = resolved_engine(connection_limit=1)
    w.feed(submit(1))  # held by connection 1
    w.feed(submit(2))  # waits in the ready queue
    w.feed(submit(3, rcpts=("x@other.test",)))  # waits on DNS
    fx = w.feed(Bounce(at=5.0, reason="cleanup"))
    recs = records(fx, "AdminBounce")
    assert {r["id"] for r in recs} == {"m2", "m3"}
    for rec in recs:
        assert (rec["response"]["code"], rec["response"]["enhanced_code"]) == (
            551, {"class": 5, "subject": 7, "detail": 1})
        assert rec["response"]["content"] == "Administrator bounced with reason: cleanup"
        assert rec["site"] == "localhost"
        assert rec["egress_source"] is None and rec["egress_pool"] is None


def test_message_throttles_checked_smallest_rate_first_each_counting_as_it_passes() -> None:
    """crates/kumod/src/ready_queue.rs, ``deliver_message``: the message throttles
    are sorted by rate, smallest first, and ``check_throttle`` is called on each
    in turn: one that passes has counted the message even when a later one
    refuses it, and the wait resumes at the refusing one."""
    eng, w = resolved_engine(connection_limit=1, max_message_rate="10/s,max_burst=0",
                             additional_message_rate_throttles={"slow": "3/min"})
    w.auto_connect = True
    w.feed(submit(1))
    rq = eng.paths[PATH]
    fast, slow = rq.msg_throttle, eng.extra_msg_throttles["slow"]
    assert rq.msg_throttles == (slow, fast)
    w.feed(submit(2))  # connection 1 is busy: m2 waits in the ready queue
    assert len(records(w.effects, "Delivery")) == 1
    # m2: the slow throttle passed (counted), the fast one refused (0.1 s,
    # rounded up to a whole second as KumoMTA's retry_after is)
    assert w.timers[("msgrate", 1)] == pytest.approx(1.0)
    assert slow.tat == pytest.approx(2 * slow.interval)
    fx = w.fire(("msgrate", 1))
    assert [r["id"] for r in records(fx, "Delivery")] == ["m2"]
    assert slow.tat == pytest.approx(2 * slow.interval)  # not counted a second time
    assert fast.tat == pytest.approx(1.0 + fast.interval)


def test_connection_rate_is_checked_before_the_next_address_too() -> None:
    """crates/kumod/src/smtp_dispatcher.rs, ``attempt_connection_impl``: the
    ``{name}-connection-rate`` throttle is checked before every address
    attempt, the next MX host after a failure included; a wait under
    idle_timeout is slept in place, then the throttle is asked again."""
    eng, w = resolved_engine(max_connection_rate="1/s")
    fx = w.feed(submit(1))
    assert [c.host for c in of(fx, Connect)] == ["mx1.example.com"]
    fx = w.feed(ConnectFailed(at=0.5, conn=1, reason="refused"))
    assert of(fx, Connect) == [] and w.timers[("connrate", 2)] == pytest.approx(1.5)
    fx = w.fire(("connrate", 2))
    assert [(c.conn, c.host) for c in of(fx, Connect)] == [(2, "mx2.example.com")]


def test_connection_rate_wait_past_idle_timeout_pushes_the_queue_back() -> None:
    """The same check with a wait of at least idle_timeout: KumoMTA's
    ``throttle_ready_queue`` delays the ready queue by the wait and the
    attempt ends (crates/kumod/src/smtp_dispatcher.rs); the held message goes
    back with the rest."""
    eng, w = resolved_engine(max_connection_rate="1/h", connection_limit=1)
    w.feed(submit(1))
    w.feed(submit(2))
    fx = w.feed(ConnectFailed(at=1.0, conn=1, reason="refused"))
    assert of(fx, Connect) == []
    delayed = records(fx, "Delayed")
    assert [r["id"] for r in delayed] == ["m1", "m2"]
    assert "throttled by max_connection_rate" in delayed[0]["response"]["content"]
    assert eng.ready_depths() == {PATH: 0} and eng.scheduled_count == 2
    assert not eng.conns
