"""Where a message goes when an attempt ends: finished, expired, bounced,
retried later, or back to the head of its ready queue.

Every decision above (promotion, dispatch, session outcomes, DNS answers,
admin commands) ends a message's turn through these functions, so each record
kind (TransientFailure, Bounce, Expiration, AdminBounce) is written in one
place.

`reap_idle` is the other end of a path's or queue's life: what holds nothing
is dropped, so state stays proportional to what is queued, not to every
domain ever seen.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from engine import curfew_hold, metrics, records, selection
from engine.core import Core
from engine.effects import Log
from engine.makers import make_discard, make_log
from engine.message import DONE, HELD, READY, Message
from engine.ready import CONFIG_REFRESH, ReadyQueue, config_due
from engine.reply import Reply
from engine.retry import expiry_text, retry_delay

__all__ = [
    "admin_bounce_one",
    "bounce",
    "compact",
    "drain_ready",
    "expire",
    "finish",
    "hook_failed",
    "reap_idle",
    "retry_later",
    "return_to_ready",
    "transient",
]


def return_to_ready(eng: Core, rq: ReadyQueue, msg: Message) -> None:
    """A held message that was never attempted goes back to the head of its queue."""
    rq.messages.appendleft(msg)
    if len(rq.messages) > rq.peak:
        rq.peak = len(rq.messages)
    msg._w = READY


def drain_ready(eng: Core, rq: ReadyQueue) -> list[Message]:
    """Take every waiting message out of `rq` (for bulk failures and push-backs)."""
    taken = list(rq.messages)
    rq.messages.clear()
    for msg in taken:
        msg._w = HELD
    return taken


def finish(eng: Core, msg: Message) -> None:
    """The message is done: every recipient delivered, bounced or expired."""
    msg._w = DONE
    eng.ids.discard(msg.id)
    if eng.bounce_on_return:
        eng.bounce_on_return.pop(msg.id, None)
    msg.queue.count -= 1
    eng.queued -= 1
    eng.out.append(make_discard(msg.id))


def expire(eng: Core, msg: Message, now: float, next_due: float,
           rq: ReadyQueue | None = None) -> None:
    """Expiration record ``551 5.4.7`` and the message is finished.  `rq` is the
    ready queue it expired in; from the scheduled queue KumoMTA logs site "" and
    no egress source (crates/kumod/src/queue/queue.rs), and so do we."""
    expires = msg.created + msg.queue.config.max_age
    reply = Reply.make(551, "5.4.7", expiry_text(eng.epoch, next_due, expires))
    eng.out.append(make_log(records.make_record(
        records.EXPIRATION, msg, now, eng.epoch, reply,
        site=rq.path if rq is not None else "",
        source=rq.source_name if rq is not None else None)))
    eng.metrics.totals[metrics.EXPIRED] += 1
    finish(eng, msg)


def admin_bounce_one(eng: Core, msg: Message, now: float, reason: str,
                     rq: ReadyQueue | None = None) -> None:
    """One AdminBounce record and the message is finished.  Wherever the message
    was (`rq` or the scheduled queue), KumoMTA writes site "localhost" and no
    egress source (crates/kumod/src/http_server/admin_bounce_v1.rs)."""
    reply = Reply.make(551, "5.7.1", f"Administrator bounced with reason: {reason}")
    eng.out.append(Log(record=records.make_record(
        records.ADMIN_BOUNCE, msg, now, eng.epoch, reply, site="localhost", source=None)))
    eng.metrics.totals[metrics.ADMIN_BOUNCED] += 1
    finish(eng, msg)


def retry_later(eng: Core, msg: Message, now: float) -> None:
    """After a transient failure: the retry schedule, or expiry when the next
    attempt would be past max_age.  A message an admin Bounce waited for is
    bounced now instead.

    The attempt is counted here, on requeue, as KumoMTA counts it
    (crates/kumod/src/queue/queue.rs, ``increment_attempts_and_update_delay``:
    the delay from the count before, then the increment, then the expiry
    check), so a record written before the requeue (TransientFailure), or of
    a first try (Delivery), shows the attempts before this one."""
    if eng.bounce_on_return and msg.id in eng.bounce_on_return:
        admin_bounce_one(eng, msg, now, eng.bounce_on_return.pop(msg.id))
        return
    cfg = msg.queue.config
    due = now + retry_delay(cfg.retry_interval, cfg.max_retry_interval, msg.attempts, eng.rng)
    msg.attempts += 1
    if due > msg.created + cfg.max_age:
        expire(eng, msg, now, due)
        return
    eng.sched.add(msg, due)


def transient(eng: Core, msg: Message, now: float, reply: Reply, *,
              rq: ReadyQueue | None = None, peer: tuple[str, str] | None = None,
              session_id: str | None = None) -> None:
    """A message-level transient failure outside a transaction (DNS, no host
    answered): one TransientFailure record, then the retry schedule (which
    counts the attempt)."""
    path = rq.path if rq is not None else ""
    provider = rq.cfg.provider_name if rq is not None else None
    eng.out.append(make_log(records.make_record(
        records.TRANSIENT, msg, now, eng.epoch, reply, site=path,
        source=rq.source_name if rq is not None else None, peer=peer, provider=provider,
        session_id=session_id)))
    eng.metrics.bump(metrics.TRANSFAIL, path, provider)
    retry_later(eng, msg, now)


def bounce(eng: Core, msg: Message, now: float, reply: Reply, *,
           rq: ReadyQueue | None = None, peer: tuple[str, str] | None = None) -> None:
    """A permanent failure of every pending recipient: Bounce record, finished."""
    path = rq.path if rq is not None else ""
    provider = rq.cfg.provider_name if rq is not None else None
    eng.out.append(make_log(records.make_record(
        records.BOUNCE, msg, now, eng.epoch, reply, site=path,
        source=rq.source_name if rq is not None else None, peer=peer, provider=provider)))
    eng.metrics.bump(metrics.FAIL, path, provider)
    finish(eng, msg)


def hook_failed(eng: Core, msg: Message, now: float, error: str) -> None:
    """A policy hook its promotion needed raised (`engine.lookups`): a
    TransientFailure record ``451 4.3.0`` naming the hook and its error, then
    the retry schedule, at whose end the hook is asked again."""
    transient(eng, msg, now, Reply.make(451, "4.3.0", f"policy {error}"))


def _holding(states: tuple[object, ...], now: float) -> bool:
    """True while a throttle still remembers recent use (its GCRA TAT is ahead of
    now): dropping it would forget that and let a burst through."""
    return any(st is not None and st.tat > now for st in states)  # type: ignore[attr-defined]


def reap_idle(eng: Core, now: float) -> None:
    """Drop the state that holds nothing (the ("reap", "") timer, issue 13.6).

    A ready queue with no message, no connection, no connection-rate wait and
    no throttle still holding goes, with its maint timer and its per-path
    metrics; a scheduled queue with no message and no throttle holding; a
    domain no queue routes to, with nothing parked and no lookup under way
    (its MX answer is asked again next time); the site names, staged path
    configs and MTA-STS answers nothing uses any more, and the interned names
    none of them holds (`Core.prune_names`).  Everything dropped is
    made again on demand, as on first use.  The sweep depends only on the
    state and `now`, so replaying its TimerFired reaps the same things."""
    paths = eng.paths
    reaped: set[str] = set()
    for path, rq in list(paths.items()):
        if rq.messages or rq.conns or rq.open or rq.ready_timer is not None \
                or _holding((rq.conn_throttle, rq.msg_throttle), now):
            continue
        del paths[path]
        key = (rq.source_name, rq.site)
        if eng.path_names.get(key) == path:
            del eng.path_names[key]
        eng.cancel_timer(("maint", path))
        rq.maint_at = None
        reaped.add(path)
    if reaped:
        by_path = eng.metrics.by_path
        for key2 in [k for k in by_path if k[1] in reaped]:
            del by_path[key2]
    routed: set[str] = set()
    for name, q in list(eng.queues.items()):
        if q.count == 0 and not _holding((q.throttle,), now):
            del eng.queues[name]
        else:
            routed.add(q.routing_domain or q.domain)
    if eng.metrics.by_queue:
        eng.metrics.prune_queues(eng.queues)
    for dom, ds in list(eng.domains.items()):
        if not ds.parked and not ds.resolving and dom not in routed:
            del eng.domains[dom]
    sites = {ds.site for ds in eng.domains.values()} | {rq.site for rq in paths.values()}
    for mx, site in list(eng.site_names.items()):
        if site not in sites:
            del eng.site_names[mx]
    for key3, (_, cfg, cfg_at) in list(eng.path_cfgs.items()):
        if now >= min(config_due(cfg, cfg_at), cfg_at + CONFIG_REFRESH):
            del eng.path_cfgs[key3]
    for dom, (_, expires) in list(eng.sts.items()):
        if expires <= now:
            del eng.sts[dom]
    selection.reap(eng, now)
    curfew_hold.reap(eng)
    eng.prune_names()
    for table in (paths, eng.path_names, eng.queues, eng.domains, eng.site_names,
                  eng.path_cfgs, eng.sts, eng.timers, eng.metrics.by_path, eng.ids):
        compact(table)


# A table is rebuilt when it takes more than this many bytes plus this many per
# entry: about four times what a table built for its entries takes.
_SLACK_BYTES: Final = 4096
_SLACK_PER_ENTRY: Final = 256


def compact(table: dict[Any, Any] | set[Any]) -> None:
    """Rebuild `table` in place when it is mostly empty slots.

    CPython never shrinks a dict's or set's table when entries are deleted
    (only an insertion that finds it full resizes it), so a dict that held
    10 k paths keeps 300 KB of table after they are reaped, for as long as
    nothing is added.  Clearing frees the table; adding the survivors back
    sizes a new one for them, in the same order (so replay is unchanged)."""
    if sys.getsizeof(table) <= _SLACK_BYTES + _SLACK_PER_ENTRY * len(table):
        return
    kept = table.copy()
    table.clear()
    table.update(kept)  # type: ignore[arg-type]
