"""Admin events: Suspend, Resume, Bounce.

- ``Suspend(path)`` / ``Resume(path)``: a suspended ready queue opens no
  connection and gives idle sessions nothing (they QUIT); its messages stay.
  A path may be suspended before it exists.  The path config's ``suspended``
  key does the same from the policy.
- ``Bounce(domain, queue)``: every matching queued message (scheduled, parked
  on DNS or ready) gets an ``AdminBounce`` record and is discarded; one held
  by a connection is bounced when it comes back (its transaction runs on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import flow, metrics, records
from engine.effects import Log
from engine.events import Bounce, Resume, Suspend
from engine.message import HELD, Message
from engine.reply import Reply

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.ready import ReadyQueue


def suspend(eng: Engine, ev: Suspend) -> None:
    eng.suspended_paths[ev.path] = True
    rq = eng.paths.get(ev.path)
    if rq is not None:
        rq.suspended = True


def resume(eng: Engine, ev: Resume) -> None:
    eng.suspended_paths.pop(ev.path, None)
    rq = eng.paths.get(ev.path)
    if rq is not None:
        rq.suspended = False
        eng.pump(rq, ev.at)


def admin_bounce_one(eng: Engine, msg: Message, now: float, reason: str,
                     rq: ReadyQueue | None = None) -> None:
    """One AdminBounce record and the message is finished (`rq`: the ready queue
    it was taken from, if any; else site "" as for the scheduled queue)."""
    reply = Reply.make(551, "5.7.1", f"Administrator bounced with: {reason}")
    eng.out.append(Log(record=records.make_record(
        records.ADMIN_BOUNCE, msg, now, eng.epoch, reply,
        site=rq.path if rq is not None else "",
        source=rq.source_name if rq is not None else None)))
    eng.metrics.totals[metrics.ADMIN_BOUNCED] += 1
    flow.finish(eng, msg)


def bounce(eng: Engine, ev: Bounce) -> None:
    domain = ev.domain.lower()
    queue = ev.queue

    def hit(msg: Message) -> bool:
        return (not domain or msg.queue.domain == domain) and (not queue or
                                                               msg.queue.name == queue)

    victims: list[tuple[Message, ReadyQueue | None]] = [
        (m, None) for m in eng.sched.remove_where(hit)]
    for ds in eng.domains.values():
        if ds.parked:
            victims.extend((m, None) for m in ds.parked if hit(m))
            ds.parked = [m for m in ds.parked if not hit(m)]
    for rq in eng.paths.values():
        if rq.messages and any(hit(m) for m in rq.messages):
            victims.extend((m, rq) for m in rq.messages if hit(m))
            keep = [m for m in rq.messages if not hit(m)]
            rq.messages.clear()
            rq.messages.extend(keep)
    for conn in sorted(eng.conns):
        msg = eng.conns[conn].msg
        if msg is not None and msg.where == HELD and hit(msg):
            eng.bounce_on_return[msg.id] = ev.reason
    for msg, in_rq in victims:
        admin_bounce_one(eng, msg, ev.at, ev.reason, in_rq)
