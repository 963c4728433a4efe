"""The shared store's answers (`LimitAnswered`) and the ("shared", path) timer.

The asks are made in `engine.shared_limits` (below `dispatch`); their answers
resume what waited for them, which takes `dispatch`, so they are handled here,
beside the other event decisions.
"""

from __future__ import annotations

from engine import dispatch, shared_limits
from engine.core import Core
from engine.effects import ReleaseLease
from engine.errors import ProtocolError
from engine.events import LimitAnswered, TimerFired

__all__ = ["answered", "shared_timer"]


def answered(eng: Core, ev: LimitAnswered) -> None:
    """Resume the path or connection that waited for this answer."""
    sh = eng.shared
    if sh is None or ev.request not in sh.pending:
        raise ProtocolError(f"LimitAnswered(request={ev.request}) answers nothing asked")
    what, subject = sh.pending.pop(ev.request)
    lease = sh.lease_names.pop(ev.request, "")
    now = ev.at
    if ev.error:
        shared_limits.store_failed(eng, now, ev.error)
    else:
        shared_limits.store_answered(eng, now)
    if what == "msg":
        _message_answer(eng, subject, ev, now)
        return
    path: str = subject
    sh.asking.pop(path, None)
    rq = eng.paths.get(path)
    if rq is None:
        if lease and not ev.error and ev.wait == 0.0:
            eng.out.append(ReleaseLease(key=f"{sh.cfg.prefix}:conn:{path}", lease=lease))
        return
    if not ev.error:
        if ev.wait > 0.0:
            # refused: other nodes release leases without telling us, so look again
            # no later than lease_poll
            wait = ev.wait if what == "rate" else min(ev.wait, sh.cfg.lease_poll)
            eng.set_timer(("shared", path), now + wait)
            return
        if what == "rate":
            sh.rate_ok[path] = True
        else:
            sh.granted[path] = (shared_limits.conn_key(sh, rq), lease)
    dispatch.pump(eng, rq, now)
    shared_limits.unused(eng, rq)


def _message_answer(eng: Core, conn: int, ev: LimitAnswered, now: float) -> None:
    sh = eng.shared
    waiting = sh.msg_waiting.get(conn)
    if waiting is None:
        return
    waiting[0] -= 1
    if ev.wait > waiting[1]:
        waiting[1] = ev.wait
    if ev.error:
        waiting[1] = -1.0  # the store failed: decide again under the fallback mode
    if waiting[0] > 0:
        return
    del sh.msg_waiting[conn]
    ctx = eng.conns.get(conn)
    if ctx is None or ctx.msg is None or ctx.closing or ctx.started:
        return
    wait = waiting[1]
    if wait == 0.0:
        sh.msg_ok[conn] = True
        dispatch.start(eng, ctx, now)
    elif wait < 0.0:
        dispatch.start(eng, ctx, now)
    else:
        dispatch.rate_wait(eng, ctx, now, wait)


def shared_timer(eng: Core, ev: TimerFired) -> None:
    """("shared", path): a refused lease or throttle may be asked for again."""
    del eng.timers[ev.timer]
    rq = eng.paths.get(str(ev.timer[1]))
    if rq is not None:
        dispatch.pump(eng, rq, ev.at)
        shared_limits.unused(eng, rq)
