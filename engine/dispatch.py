"""Dispatch: how a ready queue turns into connections and transactions.

A session's outcomes come back through `Core.run_step` to `engine.outcomes`,
which calls back into this module; the table on `Core` keeps that loop out
of the imports.  While draining (`engine.admin.drain`) nothing here opens a
connection or starts a transaction.

`pump` is called whenever a ready queue may act (a message arrived, a
connection finished or closed, a throttle wait ended, a suspension lifted).
It first hands waiting messages to idle sessions, then opens connections
while fewer are open than KumoMTA's ideal count (and the additional shared
limits and ``max_connection_rate`` allow).  A new connection *holds* its first
message while it connects, as KumoMTA's dispatcher does.

Throttles follow KumoMTA's idle_timeout rule: a wait shorter than
``idle_timeout`` is spent in place (a ``("ready", path)`` or ``("msgrate",
conn)`` timer); a longer one pushes the whole ready queue back to scheduled
by exactly the wait, no attempt counted, a ``Delayed`` record each.
"""

from __future__ import annotations

from typing import Any

from engine import metrics, records, shared_limits
from engine.core import Core
from engine.lifecycle import bounce, drain_ready, retry_later, return_to_ready, transient
from engine.lookups import path_config, sts_policy
from engine.makers import make_connect, make_log, make_txn_message
from engine.message import HELD
from engine.mxplan import build_plan
from engine.ready import CONFIG_REFRESH, ConnCtx, ReadyQueue, ideal_connections
from engine.reply import Reply
from engine.retry import iso
from engine.session import Session
from engine.tls_policy import tls_for


def suspended(eng: Core, rq: ReadyQueue) -> bool:
    """Admin Suspend or the path config's ``suspended``."""
    return rq.suspended or bool(rq.cfg.suspended)


def pump(eng: Core, rq: ReadyQueue, now: float) -> None:
    """Let `rq` act: feed idle sessions, then open connections up to the ideal."""
    if not rq.messages:
        return
    cfg = rq.cfg if now - rq.cfg_at < CONFIG_REFRESH else path_config(eng, rq, now)
    if rq.suspended or cfg.suspended:
        return
    idle = rq.idle
    while idle and rq.messages:
        ctx = idle.pop(min(idle))  # in opening order
        if ctx.idle and not ctx.closing:
            ctx.idle = False
            eng.cancel_timer(("idle", ctx.conn))
            next_message(eng, ctx, now)
    if rq.ready_timer is not None or not rq.messages or eng.draining:
        return
    if cfg.enable_mta_sts and rq.mta_sts and not sts_policy(eng, rq.domain, now)[0]:
        return
    extra = cfg.additional_connection_limits
    # KumoMTA's maintainer: the target from the depth now, then open the difference
    ideal = ideal_connections(cfg.connection_limit, len(rq.messages))
    while rq.messages:
        if rq.open >= ideal:
            return
        if extra:
            for name in sorted(extra):
                if eng.extra_conns.get(name, 0) >= extra[name]:
                    return
        shared = eng.shared is not None
        if rq.conn_throttle is not None and (not shared or rq.conn_throttle.throttle.local):
            wait = rq.conn_throttle.check(now)
            if wait > 0.0:
                if wait < cfg.idle_timeout:
                    rq.ready_timer = now + wait
                    eng.set_timer(("ready", rq.path), now + wait)
                else:
                    push_back(eng, rq, now, wait, "connection")
                return
        if shared and not shared_limits.may_open(eng, rq, cfg, now):
            return  # asked the shared store; its answer pumps again
        if not open_connection(eng, rq, now):
            return


def fail_queue(eng: Core, rq: ReadyQueue, now: float, reply: Reply,
               held: list[Any] | None = None) -> None:
    """Fail every message of `rq` (and `held`): bounce on 5xx, retry on 4xx."""
    victims = (held or []) + drain_ready(eng, rq)
    for msg in victims:
        if reply.code >= 500:
            bounce(eng, msg, now, reply, rq=rq)
        else:
            transient(eng, msg, now, reply, rq=rq)


def open_connection(eng: Core, rq: ReadyQueue, now: float) -> bool:
    """Open one connection holding the queue's first message; False when the
    plan failed the whole ready queue instead."""
    cfg: Any = rq.cfg
    patterns = None
    if cfg.enable_mta_sts and rq.mta_sts:
        policy = eng.sts.get(rq.domain, (None, 0.0))[0]
        if policy is not None and policy.mode == "enforce":
            patterns = policy.mx
    plan = build_plan(rq.mx, eng.rng, prohibited=cfg.prohibited_hosts, skip=cfg.skip_hosts,
                      sts_patterns=patterns, strategy=cfg.ip_lookup_strategy)
    if isinstance(plan, Reply):
        fail_queue(eng, rq, now, plan)
        return False
    if not plan:
        fail_queue(eng, rq, now, Reply.make(451, "4.4.3", f"no addresses for the MX hosts "
                                                          f"of {rq.domain}"))
        return False
    msg = rq.messages.popleft()
    msg._w = HELD
    ctx = new_conn(eng, rq, plan, 0)
    ctx.msg = msg
    attempt(eng, ctx, now)
    return True


def new_conn(eng: Core, rq: ReadyQueue, plan: tuple[tuple[str, str], ...],
             index: int) -> ConnCtx:
    """A new connection id and its context, counted as open."""
    conn = eng.next_conn
    eng.next_conn += 1
    ctx = ConnCtx(conn, rq, plan)
    ctx.plan_index = index
    rq.conns[conn] = ctx
    rq.open += 1
    eng.conns[conn] = ctx
    ctx.counted = tuple(sorted(rq.cfg.additional_connection_limits))
    for name in ctx.counted:
        eng.extra_conns[name] = eng.extra_conns.get(name, 0) + 1
    if eng.shared is not None:
        shared_limits.bind(eng, ctx)
    return ctx


def mark_closing(eng: Core, ctx: ConnCtx) -> None:
    """The connection takes no new message (QUIT sent, host failed, closed).
    It still counts against the limits until `release`."""
    if not ctx.closing:
        ctx.closing = True
        ctx.rq.idle.pop(ctx.conn, None)


def abandon(eng: Core, ctx: ConnCtx, now: float) -> None:
    """Draining: forget a connection before it opens; its message goes back to
    the ready queue (or to the admin bounce that waits for it)."""
    mark_closing(eng, ctx)
    release(eng, ctx)
    ctx.rq.conns.pop(ctx.conn, None)
    eng.conns.pop(ctx.conn, None)
    msg, ctx.msg = ctx.msg, None
    if msg is not None:
        if eng.bounce_on_return and msg.id in eng.bounce_on_return:
            retry_later(eng, msg, now)
        else:
            return_to_ready(eng, ctx.rq, msg)


def release(eng: Core, ctx: ConnCtx) -> None:
    """The connection is gone: it stops counting against the limits."""
    if ctx.counted is not None:
        ctx.rq.open -= 1
        for name in ctx.counted:
            eng.extra_conns[name] = eng.extra_conns.get(name, 0) - 1
        ctx.counted = None
        if eng.shared is not None:
            shared_limits.release(eng, ctx)


def attempt(eng: Core, ctx: ConnCtx, now: float) -> None:
    """Connect `ctx` to the address at its plan index."""
    if eng.draining:
        abandon(eng, ctx, now)
        return
    rq = ctx.rq
    cfg: Any = rq.cfg
    ctx.host, ctx.address = ctx.plan[ctx.plan_index]
    src = rq.source
    port = src.remote_port if src.remote_port is not None else cfg.smtp_port
    tls = tls_for(eng, ctx, port, now)
    if tls is None:
        return
    ehlo = cfg.ehlo_domain or src.ehlo_domain or eng.hostname
    ctx.session = Session(conn=ctx.conn, host=ctx.host, address=ctx.address, port=port,
                          cfg=cfg, tls=tls.mode, tls_settings=tls.settings, ehlo_domain=ehlo,
                          opened_at=now, tls_defer=tls.defer)
    eng.out.append(make_connect(ctx.conn, ctx.host, ctx.address, port, rq.source_name,
                                src.source_address, rq.path))
    eng.run_step(ctx, ctx.session.connect(now), now)


def reattempt(eng: Core, ctx: ConnCtx, now: float) -> None:
    """Connect `ctx` again (the plan's next address, or a reconnect) once
    ``max_connection_rate`` allows: KumoMTA checks it before every address it
    tries, reconnects included (crates/kumod/src/smtp_dispatcher.rs,
    ``attempt_connection_impl``, the ``{name}-connection-rate`` key).  A
    connection's first attempt was checked by `pump`.  A wait under
    idle_timeout is spent in place (a ``("connrate", conn)`` timer, which
    checks again); a longer one gives the held message back and pushes the
    whole ready queue back by the wait.  A shared (non-``local``) rate is
    asked of the store by `pump` only."""
    rq = ctx.rq
    ct = rq.conn_throttle
    if ct is not None and (eng.shared is None or ct.throttle.local) and not eng.draining:
        wait = ct.check(now)
        if wait > 0.0:
            if wait < rq.cfg.idle_timeout:
                eng.set_timer(("connrate", ctx.conn), now + wait)
            else:
                abandon(eng, ctx, now)
                push_back(eng, rq, now, wait, "connection")
            return
    attempt(eng, ctx, now)


def next_message(eng: Core, ctx: ConnCtx, now: float) -> None:
    """The session is IDLE: give it the next message, quit, or arm the idle timer.
    Draining, it quits and a message it holds goes back to the ready queue."""
    rq = ctx.rq
    cfg: Any = rq.cfg
    if eng.draining:
        msg, ctx.msg = ctx.msg, None
        if msg is not None:
            return_to_ready(eng, rq, msg)
        quit_session(eng, ctx, now)
        return
    if ctx.msg is not None:
        start(eng, ctx, now)
        return
    if ctx.deliveries >= cfg.max_deliveries_per_connection or rq.suspended or cfg.suspended:
        quit_session(eng, ctx, now)
        pump(eng, rq, now)  # a replacement opens at once if the ideal count says so
        return
    if not rq.messages:
        go_idle(eng, ctx, now)
        return
    msg = rq.messages.popleft()
    msg._w = HELD
    ctx.msg = msg
    start(eng, ctx, now)


def start(eng: Core, ctx: ConnCtx, now: float) -> None:
    """Start the held message's transaction once the message-rate throttles allow.

    As KumoMTA (crates/kumod/src/ready_queue.rs, ``deliver_message``): the
    throttles are checked one by one, smallest rate first, each counting as it
    passes; a refusal waits and resumes at that throttle (`ConnCtx.rate_passed`),
    the ones already passed keep their count."""
    rq = ctx.rq
    throttles = rq.msg_throttles
    if eng.shared is not None:
        throttles = shared_limits.local_throttles(eng, rq, now)
        verdict = shared_limits.may_start(eng, ctx, now)
        if verdict is None:
            return  # the shared store's answer calls start again
        if verdict > 0.0:
            rate_wait(eng, ctx, now, verdict)
            return
    if throttles:
        i = ctx.rate_passed
        while i < len(throttles):
            wait = throttles[i].check(now)
            if wait > 0.0:
                ctx.rate_passed = i
                rate_wait(eng, ctx, now, wait)
                return
            i += 1
        ctx.rate_passed = 0
    if eng.shared is not None:
        shared_limits.started(eng, ctx)
    msg = ctx.msg
    assert msg is not None
    ctx.started = True
    stored = msg.recipients
    rcpts: tuple[str, ...] = (stored,) if isinstance(stored, str) else stored  # rcpt_tuple
    ctx.txn_rcpts = rcpts
    limit = rq.cfg.max_recipients_per_batch
    ctx.excess = rcpts[limit:] if len(rcpts) > limit else ()
    txn = make_txn_message(msg.id, msg.sender, rcpts, msg.size)
    s: Session = ctx.session  # typed: compiled, a native call
    fx, out = s.start_transaction(now, txn)  # Core.run_step, spelled out
    eng.take_effects(fx)
    if out:
        eng.run_outcomes(ctx, out, now)


def rate_wait(eng: Core, ctx: ConnCtx, now: float, wait: float) -> None:
    """A message-rate wait: spent in place under ``idle_timeout``, else the ready
    queue goes back to scheduled (KumoMTA's rule)."""
    if wait < ctx.rq.cfg.idle_timeout:
        eng.set_timer(("msgrate", ctx.conn), now + wait)
        return
    msg = ctx.msg
    assert msg is not None
    ctx.msg = None
    ctx.rate_passed = 0  # the message goes back; the next one starts at the first
    if eng.shared is not None:
        eng.shared.msg_ok.pop(ctx.conn, None)
    return_to_ready(eng, ctx.rq, msg)
    push_back(eng, ctx.rq, now, wait, "message")
    go_idle(eng, ctx, now)


def go_idle(eng: Core, ctx: ConnCtx, now: float) -> None:
    """Nothing to send: wait under the idle timer, findable by `pump`."""
    ctx.idle = True
    ctx.rq.idle[ctx.conn] = ctx
    eng.set_timer(("idle", ctx.conn), now + ctx.rq.cfg.idle_timeout)


def quit_session(eng: Core, ctx: ConnCtx, now: float) -> None:
    """Send QUIT; the connection stops counting as open."""
    mark_closing(eng, ctx)
    if ctx.idle:
        ctx.idle = False
        eng.cancel_timer(("idle", ctx.conn))
    eng.run_step(ctx, ctx.session.quit(now), now)


def push_back(eng: Core, rq: ReadyQueue, now: float, wait: float, kind: str) -> None:
    """A throttle wait of at least idle_timeout: the whole ready queue goes back to
    scheduled by exactly `wait`, attempts unchanged, a Delayed record each."""
    due = now + wait
    reply = Reply(code=400, text=f"451 4.4.1 {rq.path} ready queue throttled by "
                                 f"max_{kind}_rate; next due at {iso(eng.epoch, due)}")
    counter = metrics.RATE_THROTTLED if kind == "message" else metrics.CONN_RATE_THROTTLED
    for msg in drain_ready(eng, rq):
        eng.out.append(make_log(records.make_record(
            records.DELAYED, msg, now, eng.epoch, reply, source=rq.source_name)))
        if counter is metrics.RATE_THROTTLED:
            eng.metrics.delayed(counter, msg.queue.name)
        else:
            eng.metrics.totals[counter] += 1
        eng.sched.add(msg, due)

