"""What a full ready queue does with a message it turns away.

KumoMTA's rule (`redelay`): back to scheduled after the message's own uniform
0-60 s draw, a ``Delayed`` record naming ``ReadyQueueWasFull``, no attempt
counted; what live delivery does.  The simulator's fast path
(`backlog_redelay`): the same rule sampled lazily by the path's
`engine.backlog.Backlog`, counted instead of logged, where re-running
promotion would always find the same path (`lazy_ok`, `gated_lazy`).
`engine.flow` decides which when a promotion meets a full ready queue, and
runs the backlog's ticks (`flow.backlog_due`), which promote again.
"""

from __future__ import annotations

from typing import Any

from engine import curfew_hold, metrics, records, selection
from engine.backlog import Backlog
from engine.core import Core
from engine.makers import make_log, make_reply
from engine.message import OVERFLOW, Message
from engine.ready import ReadyQueue
from engine.reply import Reply


def redelay(eng: Core, rq: ReadyQueue, msg: Message, now: float) -> None:
    """KumoMTA's rule for a message a full ready queue turns away: back to
    scheduled after its own uniform 0-60 s draw, a Delayed record, no attempt."""
    due = now + eng.rng.uniform(0.0, 60.0)
    eng.out.append(make_log(records.make_record(
        records.DELAYED, msg, now, eng.epoch, _full_reply(eng, msg, now, due)), rq.path))
    eng.metrics.delayed(metrics.READY_FULL, msg.queue.name, rq.path)
    eng.sched.add(msg, due)


def _full_reply(eng: Core, msg: Message, now: float, due: float) -> Reply:
    """KumoMTA's text for a message a full ready queue turned away
    (crates/kumod/src/queue/queue.rs, ``did_insert_delayed``): ``Context:``
    the reasons it was inserted for (``Received`` when it came in at this
    instant, else ``DueTimeWasReached``: its scheduled time came), then
    ``ReadyQueueWasFull``; ``Next due in <humantime> at <time>``.  Code 400,
    no enhanced code; the record names no site, source or pool, as KumoMTA's."""
    came = "Received" if now == msg.created and not msg.attempts else "DueTimeWasReached"
    return make_reply(400, f"Context: {came}, ReadyQueueWasFull. Next due in "
                      f"{records.humantime(due - now)} at {records.rfc3339(eng.epoch + due)}",
                      None)


def lazy_ok(eng: Core, msg: Message) -> bool:
    """Whether re-running promotion for `msg` would always find the same path,
    so its re-delays may be sampled lazily: a one-source pool and no
    ``max_message_rate`` on its scheduled queue.  (A stale MX answer is the
    one case left: the backlog's admitted messages are checked for it.)"""
    q = msg.queue
    if q.throttle is not None:
        return False
    rr = eng.pools.get(q.pool)
    return rr is not None and len(rr.names) == 1


def gated_lazy(eng: Core, rq: ReadyQueue) -> bool:
    """A lazy backlog admits its messages without promoting them again, so it
    would pass by a curfew or a gated source's selection: not for those."""
    if eng.shaping is None:  # no curfew, no warm-up plan: `selection.gated`'s first half
        cfg: Any = rq.cfg
        return cfg.source_selection_rate is not None \
            or bool(cfg.additional_source_selection_rates)
    return curfew_hold.active(eng) or selection.gated(eng, rq)


def backlog_redelay(eng: Core, rq: ReadyQueue, msg: Message, now: float) -> None:
    """A full ready queue turns `msg` away, re-delayed lazily (`engine.backlog`):
    counted, no record, the path's one ("backlog", path) timer armed."""
    bl: Backlog | None = rq.backlog  # typed: compiled, a native call
    if bl is None:
        if eng.backlog_gen is None:
            import numpy as np  # only a simulation that asks for lazy re-delays needs it

            eng.backlog_gen = np.random.default_rng(eng.rng.getrandbits(64))
        bl = rq.backlog = Backlog(eng.backlog_gen)
    bl.add(msg, msg.created + msg.queue.config.max_age, now, eng.rng)
    msg._w = OVERFLOW
    eng.metrics.delayed(metrics.READY_FULL, msg.queue.name, rq.path)
    eng.lazy_redelayed += 1
    arm_backlog(eng, rq, bl)


def arm_backlog(eng: Core, rq: ReadyQueue, bl: Backlog) -> None:
    due = bl.next_due()
    if due is not None and (bl.timer_at is None or due < bl.timer_at):
        bl.timer_at = due
        eng.set_timer(("backlog", rq.path), due)
