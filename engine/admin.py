"""Admin events: Suspend, Resume, Bounce, Drain.

- ``Suspend(path)`` / ``Resume(path)``: a suspended ready queue opens no
  connection and gives idle sessions nothing (they QUIT); its messages stay.
  A path may be suspended before it exists.  The path config's ``suspended``
  key does the same from the policy.
- ``Bounce(domain, queue)``: every matching queued message (scheduled, parked
  on DNS or ready) gets an ``AdminBounce`` record and is discarded; one held
  by a connection is bounced when it comes back (its transaction runs on).
- ``Drain``: the process is shutting down.  From now on no connection opens
  and no transaction starts; idle sessions QUIT at once, the others when
  their transaction ends; a held message not yet sent goes back to its ready
  queue.  Transactions on the wire finish.  `Restarted` lifts it.
"""

from __future__ import annotations

from engine.core import Core
from engine.dispatch import pump, quit_session
from engine.events import Bounce, Drain, Resume, Suspend
from engine.lifecycle import admin_bounce_one
from engine.message import HELD, Message
from engine.ready import ReadyQueue

__all__ = ["bounce", "drain", "resume", "suspend"]


def suspend(eng: Core, ev: Suspend) -> None:
    eng.suspended_paths[ev.path] = True
    rq = eng.paths.get(ev.path)
    if rq is not None:
        rq.suspended = True


def resume(eng: Core, ev: Resume) -> None:
    eng.suspended_paths.pop(ev.path, None)
    rq = eng.paths.get(ev.path)
    if rq is not None:
        rq.suspended = False
        pump(eng, rq, ev.at)


def bounce(eng: Core, ev: Bounce) -> None:
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
        if rq.backlog is not None and len(rq.backlog):
            for m, n in rq.backlog.remove_if(hit):
                eng.silent_redelays[m.id] = eng.silent_redelays.get(m.id, 0) + n
                m._w = HELD
                victims.append((m, None))
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


def drain(eng: Core, ev: Drain) -> None:
    eng.draining = True
    for ctx in list(eng.conns.values()):
        if ctx.idle and not ctx.closing:
            quit_session(eng, ctx, ev.at)
