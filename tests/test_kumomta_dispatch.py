"""KumoMTA's dispatcher where egress follows it (docs/KUMOMTA.md, rows 3c, 3d,
9a, 9b, 10b, 11, 12d, 12e): events in, effects out, each test citing the file
of KumoCorp/kumomta it follows (paths under ``crates/``)."""

from __future__ import annotations

import pytest

from engine.effects import Connect, Log, Resolve, Send, Verb
from engine.engine import Engine
from engine.events import (
    Bounce,
    Connected,
    ConnectFailed,
    MtaStsPolicy,
    MtaStsResolved,
    Resolved,
    Response,
    Restarted,
    Resume,
    Suspend,
)
from engine.ready import canonical_path
from engine.reply import Reply
from tests.support.engine_harness import (
    MX,
    PATH,
    World,
    of,
    policy,
    prime,
    records,
    resolved_engine,
    submit,
)


def test_admin_bounce_wording_site_and_source_as_kumomta() -> None:
    """crates/kumod/src/http_server/admin_bounce_v1.rs: ``551 5.7.1
    Administrator bounced with reason: <r>``, site "localhost", no egress
    source or pool, whether the message was scheduled or ready."""
    _, w = resolved_engine(connection_limit=1)
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
    _, w = resolved_engine(max_connection_rate="1/s")
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


def _sends(fx: list) -> list[list[str]]:
    """Each Send as its command lines (verb and argument)."""
    return [[f"{c.verb.value} {c.arg}".strip() for c in s.commands] for s in of(fx, Send)]


def test_recipients_past_the_batch_limit_go_at_once_on_the_same_connection() -> None:
    """crates/kumod/src/smtp_dispatcher.rs, ``deliver_message``: the excess of
    max_recipients_per_batch is ``retry_immediately``: sent next on the same
    connection (RSET first, as ``use_rset`` is set after a transaction), with
    no TransientFailure record and no attempt counted."""
    _, w = resolved_engine(max_recipients_per_batch=2)
    w.auto_connect = True
    rcpts = ("a@example.com", "b@example.com", "c@example.com")
    fx = w.feed(submit(1, rcpts=rcpts))
    assert records(fx, "TransientFailure") == []
    # one record per transaction's response (row 12e)
    assert [r["recipient"] for r in records(fx, "Delivery")] == [list(rcpts[:2]), rcpts[2]]
    txns = [s for s in _sends(fx) if "DATA" in s]
    assert txns == [
        ["MAIL FROM s@sender.org", "RCPT TO a@example.com", "RCPT TO b@example.com", "DATA"],
        ["RSET", "MAIL FROM s@sender.org", "RCPT TO c@example.com", "DATA"]]
    assert len(of(fx, Connect)) == 1
    assert {r["num_attempts"] for r in records(fx, "Delivery")} == {0}


def test_batch_deferrals_follow_the_excess_on_the_same_connection() -> None:
    """The same, with a deferred recipient in the first batch: its record is
    written, then the excess goes first and the deferred one after it, all on
    the one connection (the revised recipient list's order)."""
    eng, w = resolved_engine(max_recipients_per_batch=2)
    w.auto_connect = True
    tries: list[str] = []

    def rcpt(r: str) -> Reply:
        tries.append(r)
        if r == "b@example.com" and tries.count(r) == 1:
            return Reply.make(451, "4.2.0", "later")
        return Reply.make(250, "2.1.5", "ok")

    w.rcpt_reply = rcpt
    fx = w.feed(submit(1, rcpts=("a@example.com", "b@example.com", "c@example.com")))
    assert [r["recipient"] for r in records(fx, "TransientFailure")] == ["b@example.com"]
    assert tries == ["a@example.com", "b@example.com", "c@example.com", "b@example.com"]
    assert len(of(fx, Connect)) == 1 and eng.queued_count == 0


def _lost_mid_transaction(strategy: str | None, **keys: object) -> tuple[list, object]:
    """Two messages, one connection to mx1 (of mx1, mx2); the first transaction's
    MAIL gets 421 (the server closes).  The effects from there on."""
    if strategy is not None:
        keys["reconnect_strategy"] = strategy
    eng, w = resolved_engine(connection_limit=1, **keys)
    w.feed(submit(1))
    w.feed(submit(2))
    w.ehlo_caps = "mx hello"  # no PIPELINING: nothing is owed after the 421
    answer = w._reply
    w._reply = lambda cmd: (  # type: ignore[method-assign]
        Reply.make(421, "4.3.2", "closing") if cmd.verb is Verb.MAIL else answer(cmd))
    fx = w.feed(Connected(at=1.0, conn=1))
    fx += w.feed(Response(at=1.0, conn=1, reply=Reply.make(220, None, "hi")))
    return fx, eng


def test_reconnect_strategy_connect_next_host_is_the_default() -> None:
    """crates/kumod/src/smtp_dispatcher.rs, ``update_state_for_reconnect``: a
    session whose connection was lost keeps going: ConnectNextHost (the
    default, crates/kumo-api-types/src/egress_path.rs) connects to the plan's
    next address with the ready queue's next message."""
    fx, _ = _lost_mid_transaction(None)
    assert [r["id"] for r in records(fx, "TransientFailure")] == ["m1"]
    assert [(c.conn, c.host) for c in of(fx, Connect)] == [(2, "mx2.example.com")]


def test_reconnect_strategy_reconnect_same_host() -> None:
    """ReconnectSameHost puts the address back: the same host again."""
    fx, _ = _lost_mid_transaction("ReconnectSameHost")
    assert [(c.conn, c.host) for c in of(fx, Connect)] == [(2, "mx1.example.com")]


def test_reconnect_strategy_terminate_session_starts_a_fresh_plan() -> None:
    """TerminateSession clears the addresses: the session ends, and the ready
    queue's maintainer opens a new one from the top of a fresh plan."""
    fx, eng = _lost_mid_transaction("TerminateSession")
    [c] = of(fx, Connect)
    assert c.conn == 2 and c.host == eng.conns[2].plan[0][0]


def test_try_next_host_on_transport_error_retries_the_message_on_the_next_host() -> None:
    """crates/kumod/src/smtp_dispatcher.rs, ``deliver_message``: with
    try_next_host_on_transport_error, a message whose transaction broke the
    connection (here a 421) is logged TransientFailure and tried again at
    once on the next host, not requeued (attempts unchanged); without it,
    it goes to the retry schedule and the next host gets the next message."""
    fx, eng = _lost_mid_transaction(None, try_next_host_on_transport_error=True)
    [rec] = records(fx, "TransientFailure")
    assert rec["id"] == "m1" and rec["response"]["code"] == 421
    assert [(c.conn, c.host) for c in of(fx, Connect)] == [(2, "mx2.example.com")]
    assert eng.conns[2].msg.id == "m1" and eng.conns[2].msg.attempts == 0
    assert eng.scheduled_count == 0
    fx, eng = _lost_mid_transaction(None)
    assert eng.conns[2].msg.id == "m2" and eng.scheduled_count == 1


def test_mta_sts_enforce_prunes_the_mx_hosts_before_the_site_is_named() -> None:
    """crates/mailexchanger/src/lib.rs: ``apply_mta_sts`` prunes the MX hosts an
    enforcing policy does not allow, then ``factor_names`` names the site from
    the rest.  The first messages wait for the policy in the unpruned path
    (egress fetches it for the path); once it is known, the domain's next
    messages, and every later resolution, go to the pruned site."""
    eng = Engine(policy(enable_mta_sts=True), seed=1)
    w = World(eng, auto_connect=False, auto_dns=False)
    prime(eng)
    w.feed(submit(1))
    assert set(eng.paths) == {PATH}
    enforce = MtaStsPolicy(mode="enforce", mx=("mx2.example.com",))
    w.feed(MtaStsResolved(at=1.0, domain="example.com", policy=enforce))
    w.feed(submit(2, at=2.0))
    assert set(eng.paths) == {PATH, "unspecified->mx2.example.com@smtp_client"}
    # a fresh resolution (the MX answer expired) is pruned before it is named
    eng.domains["example.com"].expires = 0.0
    fx = w.feed(submit(3, at=3.0))
    assert of(fx, Resolve) == [Resolve(domain="example.com")]
    w.feed(Resolved(at=3.0, domain="example.com", mx=MX, ttl=300.0))
    assert eng.domains["example.com"].site == "mx2.example.com"
    assert eng.ready_depths()["unspecified->mx2.example.com@smtp_client"] >= 1


def test_mta_sts_enforce_allowing_no_mx_host_fails_the_resolution() -> None:
    """crates/mailexchanger/src/lib.rs: an enforce policy matching none of the
    MX hosts fails the resolution, so KumoMTA's scheduled queue logs ``451
    4.4.4 failed to resolve queue ...`` (crates/kumod/src/queue/queue.rs) and
    retries."""
    eng = Engine(policy(enable_mta_sts=True), seed=1)
    w = World(eng, auto_connect=False, auto_dns=False)
    w.feed(MtaStsResolved(at=0.0, domain="example.com",
                          policy=MtaStsPolicy(mode="enforce", mx=("*.elsewhere.test",))))
    w.feed(submit(1))
    fx = w.feed(Resolved(at=1.0, domain="example.com", mx=MX, ttl=300.0))
    [rec] = records(fx, "TransientFailure")
    assert rec["response"]["code"] == 451 and rec["response"]["content"].startswith(
        "failed to resolve queue example.com: MTA-STS enforce policy for example.com "
        "permits none of its MX hosts")
    assert eng.paths == {} and eng.scheduled_count == 1


def test_one_record_per_distinct_response_with_the_recipients_listed() -> None:
    """crates/kumod/src/smtp_dispatcher.rs, ``deliver_message``: the outcomes of
    a transaction are grouped by response (its command included) into one
    record each, ``recipient`` a list when several share it
    (crates/kumo-log-types/src/lib.rs: ``OneOrMany``, one is a string).  RCPT
    rejections answer different commands, so each keeps its own record."""
    _, w = resolved_engine()
    w.auto_connect = True
    w.rcpt_reply = lambda r: (Reply.make(550, "5.1.1", "no such user") if r.startswith("x")
                              else Reply.make(250, "2.1.5", "ok"))
    rcpts = ("a@example.com", "x1@example.com", "b@example.com", "x2@example.com",
             "c@example.com")
    fx = w.feed(submit(1, rcpts=rcpts))
    [ok] = records(fx, "Delivery")
    assert ok["recipient"] == ["a@example.com", "b@example.com", "c@example.com"]
    assert ok["response"]["command"] == ".\r\n"
    bounces = records(fx, "Bounce")
    assert [(b["recipient"], b["response"]["command"]) for b in bounces] == [
        ("x1@example.com", "RCPT TO:<x1@example.com>\r\n"),
        ("x2@example.com", "RCPT TO:<x2@example.com>\r\n")]
    # in the order the responses first came: the RCPT refusals, then the dot's
    kinds = [(e.record["type"], e.record["recipient"]) for e in fx
             if isinstance(e, Log) and e.record["type"] in ("Delivery", "Bounce")]
    assert kinds == [("Bounce", "x1@example.com"), ("Bounce", "x2@example.com"),
                     ("Delivery", ["a@example.com", "b@example.com", "c@example.com"])]


def test_a_refused_sender_gives_one_record_for_every_recipient() -> None:
    """The same grouping: MAIL refused answers for the whole batch."""
    eng, w = resolved_engine()
    w.auto_connect = True
    answer = w._reply
    w._reply = lambda cmd: (  # type: ignore[method-assign]
        Reply.make(451, "4.3.0", "later") if cmd.verb is Verb.MAIL else answer(cmd))
    fx = w.feed(submit(1, rcpts=("a@example.com", "b@example.com")))
    [rec] = records(fx, "TransientFailure")
    assert rec["recipient"] == ["a@example.com", "b@example.com"]
    assert eng.scheduled_count == 1


def test_ready_queue_and_record_site_named_as_kumomta_names_them() -> None:
    """crates/kumod/src/ready_queue.rs, ``compute_queue_name``: the ready queue is
    ``<source>-><site>@smtp_client`` and every Delivery, TransientFailure and
    Bounce record carries it as ``site`` (``site: &dispatcher.name``,
    crates/kumod/src/smtp_dispatcher.rs).  The older spelling without the
    suffix is still accepted where a name comes in (a Suspend, an old journal)."""
    eng, w = resolved_engine()
    w.auto_connect = True
    w.feed(Suspend(at=0.0, path="unspecified->(mx1|mx2).example.com"))
    w.feed(submit(1))
    assert eng.ready_depths() == {"unspecified->(mx1|mx2).example.com@smtp_client": 1}
    fx = w.feed(Resume(at=1.0, path="unspecified->(mx1|mx2).example.com@smtp_client"))
    [rec] = records(fx, "Delivery")
    assert rec["site"] == "unspecified->(mx1|mx2).example.com@smtp_client"
    assert canonical_path("a->b") == canonical_path("a->b@smtp_client") == "a->b@smtp_client"


def test_a_restart_mid_transaction_keeps_every_recipient() -> None:
    """The records of a transaction are written when it ends (KumoMTA logs after
    ``send_mail_multi_recip`` returns): a process that stops in the middle has
    logged nothing of it, and the message keeps every recipient for its retry."""
    eng, w = resolved_engine()
    w.feed(submit(1, rcpts=("x@example.com", "b@example.com")))
    eng.handle(Connected(at=1.0, conn=1))
    for reply in (Reply.make(220, None, "hi"), Reply(code=250, text="mx hello"),  # no PIPELINING
                  Reply.make(250, "2.1.0", "ok")):
        eng.handle(Response(at=1.0, conn=1, reply=reply))
    fx = eng.handle(Response(at=2.0, conn=1, reply=Reply.make(550, "5.1.1", "no such user")))
    assert records(fx) == []  # the first RCPT refused: nothing logged yet
    eng.handle(Restarted(at=3.0))  # back to the ready queue, taken by a new connection
    [msg] = [c.msg for c in eng.conns.values() if c.msg is not None]
    assert msg.recipients == ("x@example.com", "b@example.com")


def test_a_too_many_recipients_refusal_goes_again_at_once_without_a_record() -> None:
    """crates/rfc5321/src/client_types.rs (``is_too_many_recipients``) and
    crates/kumod/src/smtp_dispatcher.rs: a RCPT refused with 4.5.3 (not the
    batch's first) is deferred with no record and sent again at once on the
    same connection; a 552 without an enhanced code is a Maybe, which KumoMTA
    logs as a TransientFailure, not a Bounce."""
    _, w = resolved_engine()
    w.auto_connect = True
    seen: list[str] = []

    def rcpt(r: str) -> Reply:
        seen.append(r)
        if r == "b@example.com" and seen.count(r) == 1:
            return Reply.make(452, "4.5.3", "too many recipients")
        if r == "x@example.com":
            return Reply(code=552, text="too many recipients")
        return Reply.make(250, "2.1.5", "ok")

    w.rcpt_reply = rcpt
    fx = w.feed(submit(1, rcpts=("a@example.com", "b@example.com")))
    assert records(fx, "TransientFailure") == []
    assert [r["recipient"] for r in records(fx, "Delivery")] == ["a@example.com",
                                                                  "b@example.com"]
    assert seen == ["a@example.com", "b@example.com", "b@example.com"]
    assert len(of(fx, Connect)) == 1
    fx = w.feed(submit(2, at=1.0, rcpts=("x@example.com",)))
    [rec] = records(fx, "TransientFailure")
    assert rec["recipient"] == "x@example.com" and rec["response"]["code"] == 552
    assert records(fx, "Bounce") == []
