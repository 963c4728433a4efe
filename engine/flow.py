"""A message's lifecycle: received, promoted, ready, retried, expired, finished.

Functions over the `Engine`'s state (they take the engine as first argument,
so `engine.py` stays the thin event -> handler table).  Each appends the
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
from typing import TYPE_CHECKING, Any

from engine import lookups, metrics, records
from engine.effects import Discard, Log, Resolve
from engine.errors import ProtocolError
from engine.events import MessageSubmitted, trusted_factory
from engine.message import DONE, HELD, PARKED, READY, Message, queue_name
from engine.pools import WeightedRoundRobin
from engine.ready import CONFIG_REFRESH, ReadyQueue
from engine.reply import Reply
from engine.retry import expiry_text, iso, retry_delay

if TYPE_CHECKING:
    from engine.config import EgressPathConfig
    from engine.engine import Engine
    from engine.resolve import DomainState

RECEIVED = Reply(code=250, text="")
_Reply = trusted_factory(Reply)  # (code, text, enhanced): for replies made here
_Log = trusted_factory(Log)
_Discard = trusted_factory(Discard)
DEFAULT_POOL = lookups.DEFAULT_POOL


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


def submit(eng: Engine, ev: MessageSubmitted) -> None:
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


def pick_source(eng: Engine, pool: str) -> str:
    """The next egress source of `pool` (smooth weighted round robin)."""
    rr = eng.pools.get(pool)
    if rr is None:  # not staged (a caller outside the promotion handlers)
        rr = WeightedRoundRobin(eng.policy.egress_pool(pool).entries)
        eng.pools[pool] = rr
    return rr.pick()


def promote(eng: Engine, msg: Message, now: float) -> None:
    """The message is due: find its ready queue (resolving first if needed).

    The scheduled queue's own ``max_message_rate`` is checked here, as KumoMTA
    checks it when moving a message to its ready queue: a wait keeps the message
    scheduled (no attempt counted, a Delayed record)."""
    q = msg.queue
    if now >= msg.created + q.config.max_age:
        expire(eng, msg, now, now)
        return
    if eng.admin_rules.active:  # an admin suspension or bounce of scheduled queues
        from engine.admin import intercept

        if intercept(eng, msg, now):
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


def throttled(eng: Engine, msg: Message, now: float, wait: float) -> None:
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


def park(eng: Engine, msg: Message, dom: str, ds: DomainState | None) -> None:
    """Hold `msg` until its domain's MX set is known; ask for it once."""
    from engine.resolve import DomainState

    if ds is None:
        ds = DomainState()
        eng.domains[dom] = ds
    msg._w = PARKED
    ds.parked.append(msg)
    if not ds.resolving:
        ds.resolving = True
        eng.out.append(Resolve(domain=dom))


def path_for(eng: Engine, msg: Message, ds: DomainState, now: float) -> ReadyQueue:
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


def path_config(eng: Engine, rq: ReadyQueue, now: float) -> EgressPathConfig:
    """The path's config, re-asked of the policy when older than CONFIG_REFRESH."""
    if now - rq.cfg_at >= CONFIG_REFRESH:
        old = rq.cfg
        rq.cfg = eng.policy.egress_path_config(rq.domain, rq.source_name, rq.site)
        rq.cfg_at = now
        if rq.cfg != old:
            eng.refresh_throttles(rq, old)
    return rq.cfg


def enqueue_ready(eng: Engine, rq: ReadyQueue, msg: Message, now: float) -> None:
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
    eng.pump(rq, now)


def return_to_ready(eng: Engine, rq: ReadyQueue, msg: Message) -> None:
    """A held message that was never attempted goes back to the head of its queue."""
    rq.messages.appendleft(msg)
    if len(rq.messages) > rq.peak:
        rq.peak = len(rq.messages)
    msg._w = READY


def finish(eng: Engine, msg: Message) -> None:
    """The message is done: every recipient delivered, bounced or expired."""
    msg._w = DONE
    eng.ids.discard(msg.id)
    if eng.bounce_on_return:
        eng.bounce_on_return.pop(msg.id, None)
    msg.queue.count -= 1
    eng.queued -= 1
    eng.out.append(_Discard(msg.id))


def expire(eng: Engine, msg: Message, now: float, next_due: float,
           rq: ReadyQueue | None = None) -> None:
    """Expiration record ``551 5.4.7`` and the message is finished.  `rq` is the
    ready queue it expired in; from the scheduled queue KumoMTA logs site "" and
    no egress source (crates/kumod/src/queue/queue.rs), and so do we."""
    expires = msg.created + msg.queue.config.max_age
    reply = Reply.make(551, "5.4.7", expiry_text(eng.epoch, next_due, expires))
    eng.out.append(_Log(records.make_record(
        records.EXPIRATION, msg, now, eng.epoch, reply,
        site=rq.path if rq is not None else "",
        source=rq.source_name if rq is not None else None)))
    eng.metrics.totals[metrics.EXPIRED] += 1
    finish(eng, msg)


def retry_later(eng: Engine, msg: Message, now: float) -> None:
    """After a transient failure (attempts already counted): the retry schedule,
    or expiry when the next attempt would be past max_age."""
    if eng.bounce_on_return and msg.id in eng.bounce_on_return:
        from engine.admin import admin_bounce_one

        admin_bounce_one(eng, msg, now, eng.bounce_on_return.pop(msg.id))
        return
    cfg = msg.queue.config
    due = now + retry_delay(cfg.retry_interval, cfg.max_retry_interval, msg.attempts - 1,
                            eng.rng)
    if due > msg.created + cfg.max_age:
        expire(eng, msg, now, due)
        return
    eng.sched.add(msg, due)


def transient(eng: Engine, msg: Message, now: float, reply: Reply, *,
              rq: ReadyQueue | None = None, peer: tuple[str, str] | None = None,
              count_attempt: bool = True) -> None:
    """A message-level transient failure outside a transaction (DNS, no host
    answered): one TransientFailure record, attempts + 1, the retry schedule."""
    if count_attempt:
        msg.attempts += 1
    path = rq.path if rq is not None else ""
    provider = rq.cfg.provider_name if rq is not None else None
    eng.out.append(_Log(records.make_record(
        records.TRANSIENT, msg, now, eng.epoch, reply, site=path,
        source=rq.source_name if rq is not None else None, peer=peer, provider=provider)))
    eng.metrics.bump(metrics.TRANSFAIL, path, provider)
    retry_later(eng, msg, now)


def bounce(eng: Engine, msg: Message, now: float, reply: Reply, *,
           rq: ReadyQueue | None = None, peer: tuple[str, str] | None = None) -> None:
    """A permanent failure of every pending recipient: Bounce record, finished."""
    path = rq.path if rq is not None else ""
    provider = rq.cfg.provider_name if rq is not None else None
    eng.out.append(_Log(records.make_record(
        records.BOUNCE, msg, now, eng.epoch, reply, site=path,
        source=rq.source_name if rq is not None else None, peer=peer, provider=provider)))
    eng.metrics.bump(metrics.FAIL, path, provider)
    finish(eng, msg)


def drain_ready(eng: Engine, rq: ReadyQueue) -> list[Message]:
    """Take every waiting message out of `rq` (for bulk failures and push-backs)."""
    taken = list(rq.messages)
    rq.messages.clear()
    for msg in taken:
        msg._w = HELD
    return taken


def stage_due(eng: Engine, now: float) -> list[Message]:
    """The messages due by `now` (left scheduled), with every policy answer their
    promotion needs already asked for (see `engine.lookups`)."""
    due = eng.sched.peek_due(now)
    stage_paths(eng, due, now)
    return due


def promote_due(eng: Engine, due: list[Message], now: float) -> None:
    """The ("promote", "") timer: the messages `stage_due` returned are promoted."""
    eng.sched.pop_count(len(due))
    for msg in due:
        promote(eng, msg, now)


def stage_paths(eng: Engine, msgs: list[Message], now: float) -> None:
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
