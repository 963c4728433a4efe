"""What the engine does with a session's outcomes.

A `Session` (engine.session) reports what happened as outcomes; this module
decides what follows, as KumoMTA's dispatcher does:

- ``SessionReady``: give it its held or the next message, or idle, or quit
  after ``max_deliveries_per_connection`` (and let a replacement open).
- ``RecipientResult``: counted; delivered and bounced recipients are done.
- ``TransactionDone``: a Delivery / Bounce / TransientFailure record per
  distinct response of the transaction; the message is finished when no
  recipient is left, its excess recipients go next on the same connection,
  else it goes onto the retry schedule with its pending recipients.
- ``HostFailed``: the next address of the plan (a new connection); the plan
  exhausted gives the held message ``400 KumoMTA internal: failed to connect
  to any candidate hosts: ...`` and counts a consecutive failure; past the
  threshold the rest of the ready queue is delayed with ``451 4.4.1 No answer
  from any hosts listed in MX``.  The count restarts at 0 once a session is
  established (``SessionReady``), not at TCP connect.
- ``ReconnectInClear``: the same address again, TLS disabled.
- ``TlsBroken``: the site skips STARTTLS for a while (`engine.tls_policy`).
- ``SessionClosed``: forget the connection; an unattempted held message goes
  back to the head of the ready queue.

`HANDLERS` maps each outcome type to its handler; `Engine` installs it as
`Core.outcome_handlers`, so `Core.run_step` reaches it without an import.
"""

from __future__ import annotations

from typing import Any, Final

from engine import dispatch, metrics, records, shaping_rules, shared_limits, tls_policy
from engine.config import ReconnectStrategy
from engine.core import Core, OutcomeHandler
from engine.lifecycle import finish, retry_later, return_to_ready, transient
from engine.makers import make_log
from engine.message import HELD, Message, compact_recipients, rcpt_tuple
from engine.ready import ConnCtx
from engine.reply import Reply
from engine.session import Session
from engine.session_model import (
    HostFailed,
    RecipientResult,
    ReconnectInClear,
    SessionClosed,
    SessionReady,
    State,
    TlsBroken,
    TransactionDone,
)

__all__ = ["HANDLERS"]

NO_ANSWER: Final = Reply.make(451, "4.4.1", "No answer from any hosts listed in MX")
CLOSED_MID_TXN: Final = Reply.make(451, "4.4.2", "connection closed during the transaction")


def session_ready(eng: Core, ctx: ConnCtx, o: Any, now: float) -> None:
    # A session is established (banner, EHLO, TLS, AUTH all passed): only now
    # do the consecutive connection failures start again from 0, as KumoMTA
    # resets them after attempt_connection succeeds (crates/kumod/src/ready_queue.rs).
    ctx.rq.failures = 0
    ctx.established = True
    if ctx.closing:
        return
    dispatch.next_message(eng, ctx, now)


def recipient_result(eng: Core, ctx: ConnCtx, o: Any, now: float) -> None:
    """Kept until the transaction ends (`_log_results`): a process that stops
    before then has written no record of it and still holds every recipient."""
    msg = ctx.msg
    assert msg is not None and msg.id == o.message_id, (ctx.conn, o)
    ctx.results.append(o)


def transaction_done(eng: Core, ctx: ConnCtx, o: Any, now: float) -> None:
    msg = ctx.msg
    done: TransactionDone = o  # typed, as the session below: read natively, compiled
    assert msg is not None and msg.id == done.message_id, (ctx.conn, o)
    # logged while the connection still holds it: a shaping rule the records
    # fire sees it in hand (a Bounce bounces it when it comes back)
    again = _log_results(eng, ctx, msg, now)
    ctx.msg = None
    ctx.started = False
    ctx.deliveries += 1
    excess, ctx.excess = ctx.excess, ()
    if not msg.recipients:
        finish(eng, msg)
        return
    # crates/kumod/src/smtp_dispatcher.rs, ``deliver_message``: recipients past
    # max_recipients_per_batch go at once on the same connection, first in the
    # list (the batch's deferred ones after them), with no record of their own
    session: Session = ctx.session
    alive = session.state is State.IDLE
    if (excess or again) and alive:
        rest = rcpt_tuple(msg.recipients)
        later = set(excess)
        msg.recipients = compact_recipients(
            tuple(r for r in rest if r in later) + tuple(r for r in rest if r not in later))
        ctx.msg = msg  # SessionReady follows: the same connection starts it
        return
    # ... and with try_next_host_on_transport_error, a transaction that broke the
    # connection (a 421, a timeout, the connection lost) is tried again at once
    # on the next host of the plan, as the reconnect_strategy picks it
    if not alive and ctx.rq.cfg.try_next_host_on_transport_error \
            and _next_index(ctx) is not None and not eng.draining:
        ctx.carry = msg
        return
    retry_later(eng, msg, now)


_KINDS: Final = {"delivered": (records.DELIVERY, metrics.DELIVERED),
          "permanent": (records.BOUNCE, metrics.FAIL),
          "transient": (records.TRANSIENT, metrics.TRANSFAIL)}


_NO, _MAYBE, _YES = 0, 1, 2


def _too_many_class(reply: Reply, command: str) -> int:
    """KumoMTA's ``is_too_many_recipients`` (crates/rfc5321/src/client_types.rs):
    only for RCPT; enhanced code 4.5.3 is Yes, a 452 or 552 without an enhanced
    code Maybe (KumoMTA then asks its bounce classifier; egress has none wired
    here, which is KumoMTA's ``Uncategorized``: Maybe stays Maybe)."""
    if not command.startswith("RCPT"):
        return _NO
    e = reply.enhanced
    if e is not None:
        return _YES if (e.klass, e.subject, e.detail) == (4, 5, 3) else _NO
    return _MAYBE if reply.code in (452, 552) else _NO


def _too_many(ctx: ConnCtx, msg_id: str, rcpt: str, cls: int) -> bool:
    """Whether a Yes/Maybe refusal counts as too many recipients
    (crates/kumod/src/smtp_dispatcher.rs, ``deliver_message``): never for the
    batch's first recipient; a Maybe only for a recipient that was not in the
    connection's previous transaction (``recips_last_txn``)."""
    if cls == _NO or rcpt == ctx.txn_rcpts[0]:
        return False
    if cls == _YES:
        return True
    last_id, last = ctx.last_txn
    return last_id != msg_id or rcpt not in last


def _log_results(eng: Core, ctx: ConnCtx, msg: Message, now: float) -> bool:
    """The transaction's records: one per distinct response (reply and the
    command it answered), ``recipient`` a list when it names several, as
    KumoMTA's ``by_status`` grouping writes them (crates/kumod/src/smtp_dispatcher.rs,
    ``deliver_message``), in the order the responses first came; counted per
    recipient, as KumoMTA counts.  Delivered and bounced recipients are done.
    A too-many-recipients refusal (`_too_many`) is deferred without a record;
    True when there was one, so the message goes again at once on this
    connection."""
    # typed: the compiled build reads each result's fields natively
    results: list[RecipientResult] = ctx.results
    ctx.results = []
    if not results:
        return False
    again = False
    # (reply, command, status, recipients) in the order the responses first
    # came; the common case without a dict (a reply's hash and a tuple key's)
    groups: list[tuple[Any, str, str, list[str]]]
    if len(results) == 1 and results[0].status == "delivered":  # the common case
        o = results[0]
        groups = [(o.reply, o.command, o.status, [o.recipient])]
    else:
        by_response: dict[tuple[Any, str], tuple[str, list[str]]] = {}
        for o in results:
            status: str = o.status
            cls = _NO if status == "delivered" else _too_many_class(o.reply, o.command)
            if cls != _NO:
                status = "transient"  # a Yes or Maybe is a TransientFailure, 552 too
                if _too_many(ctx, msg.id, o.recipient, cls):
                    again = True
                    eng.metrics.bump(metrics.TRANSFAIL, ctx.rq.path, ctx.rq.cfg.provider_name)
                    continue
            group = by_response.get((o.reply, o.command))
            if group is None:
                by_response[(o.reply, o.command)] = (status, [o.recipient])
            else:
                group[1].append(o.recipient)
        groups = [(r, c, s, rs) for (r, c), (s, rs) in by_response.items()]
    ctx.last_txn = (msg.id, ctx.txn_rcpts)
    rq = ctx.rq
    provider = rq.cfg.provider_name
    done: set[str] = set()
    sid = ctx.sid  # records.session_of, read natively
    if sid is None and groups:
        sid = ctx.sid = records.session_id(eng.seed, ctx.conn)
    for reply, command, status, rcpts in groups:
        kind, counter = _KINDS[status]
        if kind is records.DELIVERY and eng.brief_records:
            eng.out.append(make_log(records.brief_record(
                kind, msg, rq.path, rcpts[0] if len(rcpts) == 1 else rcpts)))
        else:
            eng.out.append(make_log(records.make_record(
                kind, msg, now, eng.epoch, reply,
                recipient=rcpts[0] if len(rcpts) == 1 else rcpts,
                site=rq.path, source=rq.source_name, peer=(ctx.host, ctx.address),
                command=command, tls=ctx.tls, provider=provider,
                source_address=ctx.local or None, session_id=sid)))
        eng.metrics.bump(counter, rq.path, provider, len(rcpts))
        if eng.shaping is not None:
            shaping_rules.observe(eng, rq, msg, reply, now)
        if kind is not records.TRANSIENT:
            for r in rcpts:  # not update(): compiled, add is a C call per item
                done.add(r)
    if done:
        rcpts_now = msg.recipients
        if type(rcpts_now) is str:
            msg.recipients = () if rcpts_now in done else rcpts_now
        else:
            msg.recipients = compact_recipients(tuple(r for r in rcpts_now if r not in done))
    return again


def _next_index(ctx: ConnCtx) -> int | None:
    """The plan index a lost session goes on with, as KumoMTA's
    ``update_state_for_reconnect`` (crates/kumod/src/smtp_dispatcher.rs):
    ConnectNextHost the next address (none past the last), ReconnectSameHost
    the same one, TerminateSession none."""
    strategy = ctx.rq.cfg.reconnect_strategy
    if strategy == ReconnectStrategy.ConnectNextHost:
        nxt = ctx.plan_index + 1
        return nxt if nxt < len(ctx.plan) else None
    if strategy == ReconnectStrategy.ReconnectSameHost:
        return ctx.plan_index
    return None


def _go_on(eng: Core, ctx: ConnCtx, now: float) -> bool:
    """An established session ended by the peer (not by our QUIT): KumoMTA's
    dispatcher keeps its session and connects again as the reconnect_strategy
    says, with a carried message or the ready queue's next one.  False when
    it does not (no message, no address left, draining)."""
    rq = ctx.rq
    msg, ctx.carry = ctx.carry, None
    index = _next_index(ctx) if ctx.established and not eng.draining else None
    if index is None or (msg is None and not rq.messages):
        if msg is not None:
            retry_later(eng, msg, now)
        return False
    if msg is None:
        msg = rq.messages.popleft()
        msg._w = HELD
    nxt = dispatch.new_conn(eng, rq, ctx.plan, index)
    shared_limits.hand_over(eng, ctx, nxt)
    nxt.msg = msg
    dispatch.reattempt(eng, nxt, now)
    return True


def host_failed(eng: Core, ctx: ConnCtx, o: Any, now: float) -> None:
    dispatch.mark_closing(eng, ctx)
    rq = ctx.rq
    msg, ctx.msg = ctx.msg, None
    ctx.last_reply = o.reply
    if msg is None:
        return
    failed = (*ctx.failed, o.reason)
    if ctx.plan_index + 1 < len(ctx.plan):
        nxt = dispatch.new_conn(eng, rq, ctx.plan, ctx.plan_index + 1)
        shared_limits.hand_over(eng, ctx, nxt)
        nxt.msg = msg
        nxt.failed = failed
        nxt.sid = records.session_of(eng.seed, ctx)  # one dispatcher, one session_id
        dispatch.reattempt(eng, nxt, now)
        return
    # Every address failed: the held message gets KumoMTA's internal transient
    # (400, no peer), then past the threshold the rest of the ready queue is
    # delayed in bulk (crates/kumod/src/ready_queue.rs, Dispatcher::run).
    before = rq.failures
    rq.failures += 1
    reply = Reply.make(400, None, "KumoMTA internal: failed to connect to any candidate "
                                  "hosts: " + ", ".join(failed))
    transient(eng, msg, now, reply, rq=rq, session_id=records.session_of(eng.seed, ctx))
    if eng.shaping is not None:  # the rules see the host's own reply
        shaping_rules.observe(eng, rq, msg, o.reply, now)
    if before > rq.cfg.consecutive_connection_failures_before_delay:
        dispatch.fail_queue(eng, rq, now, NO_ANSWER)
    else:
        dispatch.pump(eng, rq, now)


def reconnect_in_clear(eng: Core, ctx: ConnCtx, o: Any, now: float) -> None:
    dispatch.mark_closing(eng, ctx)
    msg, ctx.msg = ctx.msg, None
    nxt = dispatch.new_conn(eng, ctx.rq, ctx.plan, ctx.plan_index)
    shared_limits.hand_over(eng, ctx, nxt)
    nxt.msg = msg
    nxt.failed = ctx.failed
    nxt.tls_disabled = True
    nxt.sid = records.session_of(eng.seed, ctx)
    dispatch.reattempt(eng, nxt, now)


def session_closed(eng: Core, ctx: ConnCtx, o: Any, now: float) -> None:
    ours = ctx.closing  # QUIT sent or the host failed: the dispatcher ends
    dispatch.mark_closing(eng, ctx)
    rq = ctx.rq
    rq.conns.pop(ctx.conn, None)
    eng.conns.pop(ctx.conn, None)
    for name in ("idle", "msgrate"):
        if (name, ctx.conn) in eng.timers:
            eng.cancel_timer((name, ctx.conn))
    ctx.idle = False
    msg, ctx.msg = ctx.msg, None
    if msg is not None:
        if ctx.started:  # no TransactionDone came: a failed attempt
            transient(eng, msg, now, CLOSED_MID_TXN, rq=rq, peer=(ctx.host, ctx.address))
        elif eng.bounce_on_return and msg.id in eng.bounce_on_return:
            retry_later(eng, msg, now)
        else:
            return_to_ready(eng, rq, msg)
    if not ours:
        _go_on(eng, ctx, now)
    elif ctx.carry is not None:
        retry_later(eng, ctx.carry, now)
        ctx.carry = None
    dispatch.release(eng, ctx)
    dispatch.pump(eng, rq, now)


HANDLERS: dict[type, OutcomeHandler] = {
    SessionReady: session_ready,
    RecipientResult: recipient_result,
    TransactionDone: transaction_done,
    HostFailed: host_failed,
    ReconnectInClear: reconnect_in_clear,
    TlsBroken: tls_policy.remember_broken_tls,
    SessionClosed: session_closed,
}
