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
from functools import lru_cache
from typing import Any

from engine import lookups, metrics, records
from engine.core import Core
from engine.dispatch import pump
from engine.domains import DomainState
from engine.effects import Log, Resolve
from engine.errors import ProtocolError
from engine.events import MessageSubmitted, trusted_factory
from engine.lifecycle import expire
from engine.lookups import path_config, pick_source
from engine.message import PARKED, READY, Message, queue_name
from engine.ready import CONFIG_REFRESH, ReadyQueue
from engine.reply import Reply
from engine.retry import iso

RECEIVED = Reply(code=250, text="")
_Reply = trusted_factory(Reply)  # (code, text, enhanced): for replies made here
_Log = trusted_factory(Log)


@lru_cache(maxsize=4096)
def _iso_second(second: float) -> str:
    return iso(0.0, second)


def _iso(epoch: float, at: float) -> str:
    """`engine.retry.iso`, memoised by whole second: a full ready queue re-delays
    every message it turns away with a ``next due at`` text, and formatting a
    datetime costs more than the rest of that record.  Exactly `iso`: the
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
    ds = None if q is None else eng.domains.get(q.routing_domain or q.domain)
    if q is None or (ds is not None and ds.site is not None and ds.expires > now
                     and not lookups.paths_known(eng, q.pool, ds.site)):
        staged = lookups.Staged(eng)  # something to ask the policy first
        q = staged.queue(ev)
        ds = eng.domains.get(q.routing_domain or q.domain)
        if ds is not None and ds.site is not None and ds.expires > now:
            staged.need_path(q, ds.site, now)
        staged.commit()
    rcpts = ev.recipients
    msg = Message(mid, eng.intern(ev.sender), rcpts[0] if len(rcpts) == 1 else rcpts,
                  ev.size, q, now)
    eng.ids.add(mid)
    q.count += 1
    eng.queued += 1
    eng.metrics.totals[metrics.RECEIVED] += 1
    eng.out.append(_Log(records.make_record(records.RECEPTION, msg, now, eng.epoch,
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
    dom = q.routing_domain or q.domain
    ds = eng.domains.get(dom)
    if ds is None or ds.site is None or ds.expires <= now:
        park(eng, msg, dom, ds)
        return
    thr = q.throttle
    if thr is not None:
        wait = thr.check(now)
        if wait > 0.0:
            throttled(eng, msg, now, wait)
            return
    rq = path_for(eng, msg, ds, now)
    enqueue_ready(eng, rq, msg, now)


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
    reply = _Reply(400, f"Delayed due to MessageRateThrottle on {q.name}; "
                        f"next due at {_iso(eng.epoch, due)}", None)
    eng.out.append(_Log(records.make_record(records.DELAYED, msg, now, eng.epoch, reply)))
    eng.metrics.totals[metrics.RATE_THROTTLED] += 1
    eng.sched.add(msg, due)


def park(eng: Core, msg: Message, dom: str, ds: DomainState | None) -> None:
    """Hold `msg` until its domain's MX set is known; ask for it once."""
    if ds is None:
        ds = DomainState()
        eng.domains[dom] = ds
    msg._w = PARKED
    ds.parked.append(msg)
    if not ds.resolving:
        ds.resolving = True
        eng.out.append(Resolve(domain=dom))


def path_for(eng: Core, msg: Message, ds: DomainState, now: float) -> ReadyQueue:
    """The ready queue ``source->site`` for `msg`, created on first use (from the
    config staged for it, see `engine.lookups`)."""
    source = pick_source(eng, msg.queue.pool)
    site = ds.site
    assert site is not None
    key = (source, site)
    path = eng.path_names.get(key)
    if path is None:
        path = eng.intern(f"{source}->{site}")
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
            cfg = eng.policy.egress_path_config(domain, source, site)
        rq = ReadyQueue(path, source, src, site, domain, ds.mx, cfg, cfg_at)
        rq.suspended = path in eng.suspended_paths
        eng.paths[path] = rq
        eng.refresh_throttles(rq, None)
        if cfg_at + CONFIG_REFRESH < eng.refresh_at:
            eng.refresh_at = cfg_at + CONFIG_REFRESH
    else:
        rq.mx = ds.mx
    return rq


def enqueue_ready(eng: Core, rq: ReadyQueue, msg: Message, now: float) -> None:
    """Put `msg` in `rq`, or back to scheduled when the ready queue is full."""
    cfg: Any = rq.cfg if now - rq.cfg_at < CONFIG_REFRESH else path_config(eng, rq, now)
    if len(rq.messages) >= cfg.max_ready:
        due = now + eng.rng.uniform(0.0, 60.0)
        reply = _Reply(400, f"Delayed due to ReadyQueueWasFull on {rq.path}; "
                            f"next due at {_iso(eng.epoch, due)}", None)
        eng.out.append(_Log(records.make_record(
            records.DELAYED, msg, now, eng.epoch, reply, source=rq.source_name)))
        eng.metrics.totals[metrics.READY_FULL] += 1
        eng.sched.add(msg, due)
        return
    rq.messages.append(msg)
    if len(rq.messages) > rq.peak:
        rq.peak = len(rq.messages)
    msg._w = READY
    expiry = msg.created + msg.queue.config.max_age
    if rq.maint_at is None or expiry < rq.maint_at:
        rq.maint_at = expiry
        eng.set_timer(("maint", rq.path), expiry)
    pump(eng, rq, now)


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
    staged = None
    seen: set[tuple[str, str]] = set()
    domains = eng.domains
    for msg in msgs:
        q = msg.queue
        ds = domains.get(q.routing_domain or q.domain)
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
