"""Submission and promotion: a message from MessageSubmitted to its ready queue.

Functions over the engine's state (`engine.core.Core`); each appends the
effects it causes to ``eng.out``.  The shape follows KumoMTA's two tiers:
a message is *scheduled* until due, then *promoted*: its egress source is
picked from the queue's pool, its domain's MX set (cached by TTL; unknown ->
the message is parked and one `Resolve` goes out) names the site, and the
message joins the ready queue ``source->site`` unless that is full
(``max_ready``: back to scheduled after a uniform 0-60 s, a `Delayed` record,
no attempt counted).
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache
from typing import Any, Final

from engine import curfew_hold, lifecycle, lookups, metrics, records, selection
from engine.admin_hold import intercept
from engine.backlog import Backlog
from engine.core import Core
from engine.dispatch import pump
from engine.domains import STATIC_TTL, DomainState, lookup, static_mx
from engine.errors import ProtocolError
from engine.events import MessageSubmitted
from engine.full_queue import arm_backlog, backlog_redelay, gated_lazy, lazy_ok, redelay
from engine.lifecycle import expire
from engine.lookups import path_config, pick_source
from engine.makers import make_log, make_reply
from engine.message import HELD, PARKED, READY, Message, QueueInfo, queue_name
from engine.ready import CONFIG_REFRESH, ReadyQueue, config_due, ready_queue_name
from engine.reply import Reply
from engine.retry import iso

# Final: C statics in the compiled build (setup.py), not a dict lookup per use
RECEIVED: Final = Reply(code=250, text="")
_intern: Final = sys.intern  # senders: the interpreter's table (Core.intern holds names)


@lru_cache(maxsize=4096)
def _iso_second(second: float) -> str:
    return iso(0.0, second)


def forget_due_texts() -> None:
    """Empty `_iso`'s memo.  The live service calls this when idle state is
    reaped, as it does `records.forget_texts`: a throttled burst fills it with
    a text per second, up to 4,096, and each entry kept would pin the
    allocator page it was made in (`engine.live.memory`)."""
    _iso_second.cache_clear()


def _iso(epoch: float, at: float) -> str:
    """`engine.retry.iso`, memoised by whole second: a scheduled queue's message
    rate re-delays every message it holds back with a ``next due at`` text, and
    formatting a datetime costs more than the rest of that record.  Exactly `iso`: the
    text shows whole seconds, and a time within a microsecond of the next
    second (which `datetime` would round up) is formatted directly."""
    t = epoch + at
    whole = math.floor(t)
    if t - whole < 0.999999:
        return _iso_second(float(whole))
    return iso(epoch, at)


def submit(eng: Core, ev: MessageSubmitted) -> None:
    """MessageSubmitted: a Reception record, then promotion (due now).

    A duplicate id is refused before anything changes, and every policy answer
    the promotion may need is asked for first (see `engine.lookups`)."""
    mid = ev.id
    if mid in eng.ids:
        raise ProtocolError(f"engine cannot handle MessageSubmitted({mid!r}) in state QUEUED: "
                            f"message id {mid!r} is already queued") from None
    now = ev.at
    q = eng.queues.get(queue_name(ev.domain, ev.tenant, ev.campaign))
    ds = None if q is None else (eng.domains.get(q.route) or destination(eng, q))
    if q is None or (ds is not None and ds.site is not None and ds.expires > now
                     and not lookups.paths_known(eng, q.pool, ds.site)):
        staged = lookups.Staged(eng)  # something to ask the policy first
        q = staged.queue(ev)
        ds = destination(eng, q)
        if ds is not None and ds.site is not None and ds.expires > now:
            staged.need_path(q, ds.site, now)
        staged.commit()
    rcpts = ev.recipients
    msg = Message(mid, _intern(ev.sender), rcpts[0] if len(rcpts) == 1 else rcpts,
                  ev.size, q, now)
    eng.ids.add(mid)
    q.count += 1
    eng.queued += 1
    eng.metrics.totals[metrics.RECEIVED] += 1
    if eng.brief_records:  # a simulation that writes no record (engine.records)
        eng.out.append(make_log(records.brief_record(records.RECEPTION, msg, "")))
    elif ev.peer_addr or ev.session_id:  # received over SMTP (engine.live.listener)
        eng.out.append(make_log(records.make_record(
            records.RECEPTION, msg, now, eng.epoch, RECEIVED,
            peer=(ev.peer_name, ev.peer_addr) if ev.peer_addr else None,
            session_id=ev.session_id or None)))
    else:
        eng.out.append(make_log(records.make_record(records.RECEPTION, msg, now, eng.epoch,
                                                      RECEIVED)))
    promote(eng, msg, now)


def promote(eng: Core, msg: Message, now: float) -> None:
    """The message is due: find its ready queue (resolving first if needed).

    The scheduled queue's own ``max_message_rate`` is checked here, as KumoMTA
    checks it when moving a message to its ready queue: a wait keeps the message
    scheduled (no attempt counted, a Delayed record)."""
    q = msg.queue
    if now >= msg.created + q.config.max_age:
        expire(eng, msg, now, now)
        return
    if eng.admin_rules.active and intercept(eng, msg, now):
        return  # held or bounced by an admin suspension or bounce of scheduled queues
    if eng.shaping is not None and curfew_hold.active(eng) and curfew_hold.hold(eng, msg, now):
        return  # a curfew holds it until it ends (engine.curfew_hold)
    ds = eng.domains.get(q.route) or destination(eng, q)
    if ds is None or ds.site is None or ds.expires <= now:
        park(eng, msg, q.route, ds)
        return
    if eng.hook_failed:  # a hook this promotion needs raised (engine.lookups)
        error = lookups.hook_error(eng, q.pool, ds.site)
        if error is not None:
            lifecycle.hook_failed(eng, msg, now, error)
            return
    thr = q.throttle
    if thr is not None:
        wait = thr.check(now)
        if wait > 0.0:
            throttled(eng, msg, now, wait)
            return
    # path_for, its usual case (the pool and the path exist) spelled out
    rr = eng.pools.get(q.pool)
    if rr is None:
        source = pick_source(eng, q.pool)
    else:  # a one-source pool's pick is that source
        source = rr.names[0] if len(rr.names) == 1 else rr.pick()
    path = eng.path_names.get((source, ds.site))  # type: ignore[arg-type]
    rq = None if path is None else eng.paths.get(path)
    if rq is None:
        rq = path_for(eng, msg, ds, now, source)
    else:
        rq.mx = ds.mx
    cfg: Any = rq.cfg
    if cfg.source_selection_rate is not None or cfg.additional_source_selection_rates \
            or (eng.shaping is not None and selection.gated(eng, rq)):  # selection.gated
        chosen = _select_gated(eng, msg, ds, rq, now)
        if chosen is None:
            return
        enqueue_ready(eng, chosen, msg, now)
        return
    if now - rq.cfg_at >= CONFIG_REFRESH:
        cfg = path_config(eng, rq, now)
    if len(rq.messages) >= cfg.max_ready:
        sources = len(eng.pools[q.pool].names)
        if sources > 1:
            enqueue_ready(eng, _source_with_room(eng, msg, ds, rq, now), msg, now)
        elif eng.lazy_redelays and sources == 1 and thr is None and not gated_lazy(eng, rq):
            backlog_redelay(eng, rq, msg, now)  # enqueue_ready's full half, lazy_ok known
        else:
            redelay(eng, rq, msg, now)
        return
    admit(eng, rq, msg)  # enqueue_ready's not-full half
    pump(eng, rq, now)


def _max_ready(eng: Core, rq: ReadyQueue, now: float) -> int:
    cfg: Any = rq.cfg if now - rq.cfg_at < CONFIG_REFRESH else path_config(eng, rq, now)
    return cfg.max_ready  # type: ignore[no-any-return]


def _source_with_room(eng: Core, msg: Message, ds: DomainState, full: ReadyQueue,
                      now: float) -> ReadyQueue:
    """The picked source's ready queue is full: KumoMTA tries the pool's other
    sources before re-delaying (``select_and_insert`` in
    crates/kumod/src/egress_source.rs drops the full one and selects again).
    Here the others are tried in pool order; `full` if none has room."""
    for source in eng.pools[msg.queue.pool].names:
        if source == full.source_name:
            continue
        rq = path_for(eng, msg, ds, now, source)
        if len(rq.messages) < _max_ready(eng, rq, now) \
                and (not selection.gated(eng, rq) or selection.admit(eng, rq, now)):
            return rq
    return full


def _select_gated(eng: Core, msg: Message, ds: DomainState, rq: ReadyQueue,
                  now: float) -> ReadyQueue | None:
    """KumoMTA's ``select_and_insert`` (crates/kumod/src/egress_source.rs) when
    the picked source is gated (`engine.selection`): a source whose ready queue
    is full, or whose selection rate or warm-up cap is spent, is dropped and the
    round robin picks again among the rest.  None eligible: the first full
    queue if one was full (re-delayed as ReadyQueueWasFull), else KumoMTA's
    TransientFailure ``451 4.4.4 ... no sources ... are eligible for selection
    at this time`` and the retry schedule (None returned)."""
    q = msg.queue
    rr = eng.pools[q.pool]
    left = set(rr.names)
    full = None
    while True:
        if len(rq.messages) >= _max_ready(eng, rq, now):
            full = full or rq
        elif not selection.gated(eng, rq) or selection.admit(eng, rq, now):
            return rq
        left.discard(rq.source_name)
        source = rr.pick_among(left)
        if source is None:
            break
        rq = path_for(eng, msg, ds, now, source)
    if full is not None:
        return full
    lifecycle.transient(eng, msg, now, Reply.make(451, "4.4.4", (
        f"KumoMTA internal: no sources for {q.name} pool=`{q.pool}` are eligible for "
        "selection at this time")))
    return None


def throttled(eng: Core, msg: Message, now: float, wait: float) -> None:
    """The scheduled queue's throttle said wait: back to scheduled until the
    message's turn.  Messages held back together are spread one emission
    interval apart (each one's turn under the GCRA), so they do not all wake at
    once only for all but one to be held back again."""
    q = msg.queue
    thr = q.throttle
    assert thr is not None
    due = max(now + wait, q.throttle_next + thr.interval)
    q.throttle_next = due
    reply = make_reply(400, f"Delayed due to MessageRateThrottle on {q.name}; "
                       f"next due at {_iso(eng.epoch, due)}", None)
    eng.out.append(make_log(records.make_record(records.DELAYED, msg, now, eng.epoch, reply)))
    eng.metrics.delayed(metrics.RATE_THROTTLED, q.name)
    eng.sched.add(msg, due)


def destination(eng: Core, q: QueueInfo) -> DomainState | None:
    """The state of `q`'s destination (see `engine.domains`), made at once when
    it is known without DNS: a domain literal, or smart hosts with addresses."""
    key = q.route
    ds = eng.domains.get(key)
    if ds is not None:
        return ds
    smart = getattr(q.config, "mx_list", None)
    try:
        mx = static_mx(key, smart)
    except ValueError:
        return None  # a malformed literal: its lookup fails, a transient failure
    if mx is None:
        return None
    ds = DomainState(smart)
    ds.mx = mx
    ds.site = eng.intern(key if smart is not None else mx[0].host)
    ds.expires = STATIC_TTL
    eng.domains[key] = ds
    return ds


def park(eng: Core, msg: Message, key: str, ds: DomainState | None) -> None:
    """Hold `msg` until its destination's MX set is known; ask for it once."""
    if ds is None:
        ds = DomainState(getattr(msg.queue.config, "mx_list", None))
        eng.domains[key] = ds
    msg._w = PARKED
    ds.parked.append(msg)
    if not ds.resolving:
        ds.resolving = True
        eng.out.append(lookup(key, ds))


def path_for(eng: Core, msg: Message, ds: DomainState, now: float,
             source: str | None = None) -> ReadyQueue:
    """The ready queue ``source->site`` for `msg` (`source`: the pool's next
    pick if None), created on first use (from the config staged for it, see
    `engine.lookups`)."""
    if source is None:
        source = pick_source(eng, msg.queue.pool)
    site = ds.site
    assert site is not None
    key = (source, site)
    path = eng.path_names.get(key)
    if path is None:
        path = eng.intern(ready_queue_name(source, site))
        eng.path_names[key] = path
    rq = eng.paths.get(path)
    if rq is None:
        src = eng.sources.get(source)
        if src is None:
            src = eng.sources[source] = eng.policy.egress_source(source)
        staged = eng.path_cfgs.pop(key, None)
        if staged is not None:
            domain, cfg, cfg_at = staged
        else:
            domain, cfg_at = msg.queue.domain, now
            cfg = lookups.ask_path_config(eng, domain, source, site)
        rq = ReadyQueue(path, source, src, site, domain, ds.mx, cfg, cfg_at)
        rq.suspended = path in eng.suspended_paths
        rq.pool = msg.queue.pool
        rq.mta_sts = ds.expires != STATIC_TTL and ds.smart is None
        eng.paths[path] = rq
        eng.refresh_throttles(rq, None)
        due = config_due(cfg, cfg_at)
        if due < eng.refresh_at:
            eng.refresh_at = due
    else:
        rq.mx = ds.mx
    return rq


def enqueue_ready(eng: Core, rq: ReadyQueue, msg: Message, now: float) -> None:
    """Put `msg` in `rq`, or back to scheduled when the ready queue is full."""
    cfg: Any = rq.cfg if now - rq.cfg_at < CONFIG_REFRESH else path_config(eng, rq, now)
    if len(rq.messages) >= cfg.max_ready:
        if eng.lazy_redelays and lazy_ok(eng, msg) and not gated_lazy(eng, rq):
            backlog_redelay(eng, rq, msg, now)
        else:
            redelay(eng, rq, msg, now)
        return
    admit(eng, rq, msg)
    pump(eng, rq, now)


def admit(eng: Core, rq: ReadyQueue, msg: Message) -> None:
    """The non-full half of `enqueue_ready`: `msg` joins `rq` (no pump)."""
    rq.messages.append(msg)
    if len(rq.messages) > rq.peak:
        rq.peak = len(rq.messages)
    msg._w = READY
    expiry = msg.created + msg.queue.config.max_age
    if rq.maint_at is None or expiry < rq.maint_at:
        rq.maint_at = expiry
        eng.set_timer(("maint", rq.path), expiry)


def backlog_due(eng: Core, rq: ReadyQueue, now: float) -> None:
    """The ("backlog", path) timer: the path's lazily re-delayed messages due by
    `now` fill its free slots (each promoted as it would be: a stale MX answer
    parks it), those past max_age expire, the rest are re-delayed again; then
    one pump, and the timer re-armed."""
    bl: Backlog = rq.backlog
    bl.timer_at = None
    cfg: Any = rq.cfg if now - rq.cfg_at < CONFIG_REFRESH else path_config(eng, rq, now)
    free = max(0, cfg.max_ready - len(rq.messages))
    admitted, counts, expired, again = bl.tick(now, free)
    silent = eng.silent_redelays
    for msg, n in expired:
        msg._w = HELD
        silent[msg.id] = silent.get(msg.id, 0) + n
        expire(eng, msg, now, now)
    if again:  # lazily: counted by path, not by each message's queue
        eng.metrics.totals[metrics.READY_FULL] += again
        eng.metrics.by_path[(metrics.READY_FULL_SVC, rq.path)] = \
            eng.metrics.by_path.get((metrics.READY_FULL_SVC, rq.path), 0) + again
        eng.lazy_redelayed += again
    domains = eng.domains
    m: Message  # typed (the backlog holds Any): compiled, its fields read natively
    for m, n in zip(admitted, counts, strict=True):
        mid = m.id
        silent[mid] = silent.get(mid, 0) + n
        q = m.queue
        dom = q.routing_domain or q.domain
        ds = domains.get(dom)
        if ds is None or ds.site is None or ds.expires <= now:
            park(eng, m, dom, ds)
        else:
            rq.mx = ds.mx
            admit(eng, rq, m)
    if admitted:
        pump(eng, rq, now)
    arm_backlog(eng, rq, bl)


def stage_due(eng: Core, now: float) -> list[Message]:
    """The messages due by `now` (left scheduled), with every policy answer their
    promotion needs already asked for (see `engine.lookups`)."""
    due = eng.sched.peek_due(now)
    stage_paths(eng, due, now)
    return due


def promote_due(eng: Core, due: list[Message], now: float) -> None:
    """The ("promote", "") timer: the messages `stage_due` returned are promoted."""
    eng.sched.pop_count(len(due))
    for msg in due:
        promote(eng, msg, now)


def stage_paths(eng: Core, msgs: list[Message], now: float) -> None:
    """Ask the policy, before any change, for every path `msgs` may be promoted to."""
    if len(msgs) == 1:  # the usual promote timer: one message, its paths known
        q = msgs[0].queue
        ds = eng.domains.get(q.route)
        if ds is None or ds.site is None or ds.expires <= now \
                or lookups.paths_known(eng, q.pool, ds.site):
            return
    staged = None
    seen: set[tuple[str, str]] = set()
    domains = eng.domains
    for msg in msgs:
        q = msg.queue
        ds = domains.get(q.route)
        if ds is None or ds.site is None or ds.expires <= now:
            continue
        key = (q.pool, ds.site)
        if key in seen:
            continue
        seen.add(key)
        if lookups.paths_known(eng, q.pool, ds.site):
            continue  # everything known: nothing to ask
        if staged is None:
            staged = lookups.Staged(eng)
        staged.need_path(q, ds.site, now)
    if staged is not None:
        staged.commit()
