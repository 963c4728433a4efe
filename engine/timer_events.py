"""What each kind of timer does when it fires (`TimerFired`).

A timer is named ``(kind, key)``; `fired` checks it is armed (a ``reap``
sweep is harmless at any time) and hands it to its kind's handler in
`_TIMERS`: the session's own deadline, the scheduled queue's head, a
connection-rate wait, the ready messages' expiry, the lazy backlog's tick,
an idle session's QUIT, a message-rate wait, an admin entry's expiry, the
idle-state sweep, and those whose modules keep their own (shared limits,
shaping, curfews, the watchdog).  Split from `engine.engine`, which routes
every event; each handler appends its effects to ``eng.out``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from engine import (
    admin,
    curfew_hold,
    dispatch,
    flow,
    lifecycle,
    shaping_rules,
    shared_answers,
    watchdog,
)
from engine.core import Core
from engine.errors import ProtocolError
from engine.events import Timer, TimerFired

__all__ = ["REAP", "fired"]

#: the idle-state sweep, armed by `Engine` after any event that leaves state
REAP: Final[Timer] = ("reap", "")


def fired(eng: Core, ev: TimerFired) -> None:
    """TimerFired: an armed timer's deadline came; its kind's handler acts."""
    timer = ev.timer
    if timer not in eng.timers and timer != REAP:  # a sweep is harmless at any time
        raise ProtocolError(f"engine cannot handle TimerFired({timer!r}) in state NOT_ARMED")
    _TIMERS[timer[0]](eng, ev)


def _conn_timer(eng: Core, ev: TimerFired) -> None:
    """("conn", id): the session's own deadline (a reply not come in time)."""
    key = ev.timer[1]
    ctx = eng.conns.get(key)  # type: ignore[arg-type]
    if ctx is None or ctx.session is None:
        raise ProtocolError(f"session {key} cannot handle TimerFired in state UNKNOWN")
    step = ctx.session.handle(ev)
    eng.timers.pop(ev.timer, None)
    eng.run_step(ctx, step, ev.at)


def _promote_timer(eng: Core, ev: TimerFired) -> None:
    """("promote", ""): the scheduled queue's head is due."""
    now = ev.at
    due = flow.stage_due(eng, now)  # asks the policy: before any change
    del eng.timers[ev.timer]
    eng.promote_at = None
    flow.promote_due(eng, due, now)
    eng.sched.low = eng.sched.next_due()  # re-arm at the new head, if any


def _ready_timer(eng: Core, ev: TimerFired) -> None:
    """("ready", path): a connection-rate wait ended."""
    del eng.timers[ev.timer]
    rq = eng.paths[ev.timer[1]]  # type: ignore[index]
    rq.ready_timer = None
    dispatch.pump(eng, rq, ev.at)


def _maint_timer(eng: Core, ev: TimerFired) -> None:
    """("maint", path): expire ready messages past max_age (a stalled queue must
    not keep them), then re-arm at the next deadline."""
    del eng.timers[ev.timer]
    now = ev.at
    rq = eng.paths[ev.timer[1]]  # type: ignore[index]
    rq.maint_at = None
    keep = []
    for msg in rq.messages:
        if now >= msg.created + msg.queue.config.max_age:
            lifecycle.expire(eng, msg, now, now, rq)
        else:
            keep.append(msg)
    if len(keep) != len(rq.messages):
        rq.messages.clear()
        rq.messages.extend(keep)
    if keep:
        rq.maint_at = min(m.created + m.queue.config.max_age for m in keep)
        eng.set_timer(("maint", rq.path), rq.maint_at)


def _backlog_timer(eng: Core, ev: TimerFired) -> None:
    """("backlog", path): the path's lazily re-delayed messages are due."""
    del eng.timers[ev.timer]
    flow.backlog_due(eng, eng.paths[ev.timer[1]], ev.at)  # type: ignore[index]


def _idle_timer(eng: Core, ev: TimerFired) -> None:
    """("idle", conn): a session had nothing to send for idle_timeout: QUIT."""
    del eng.timers[ev.timer]
    ctx = eng.conns[ev.timer[1]]  # type: ignore[index]
    ctx.idle = False
    dispatch.quit_session(eng, ctx, ev.at)


def _msgrate_timer(eng: Core, ev: TimerFired) -> None:
    """("msgrate", conn): a message-rate wait ended: the held message's turn."""
    del eng.timers[ev.timer]
    dispatch.next_message(eng, eng.conns[ev.timer[1]], ev.at)  # type: ignore[index]


def _connrate_timer(eng: Core, ev: TimerFired) -> None:
    """("connrate", conn): a max_connection_rate wait before a reconnect ended."""
    del eng.timers[ev.timer]
    dispatch.reattempt(eng, eng.conns[ev.timer[1]], ev.at)  # type: ignore[index]


def _admin_timer(eng: Core, ev: TimerFired) -> None:
    """("admin", id): an admin API entry's expiry is reached."""
    del eng.timers[ev.timer]
    admin.expired(eng, ev.timer[1], ev.at)  # type: ignore[arg-type]


def _reap_timer(eng: Core, ev: TimerFired) -> None:
    """("reap", ""): drop the idle state (`lifecycle.reap_idle`), then sweep again
    in `reap_after` seconds while anything is left.  Accepted even when not
    armed: a journal written with another ``--reap-after`` replays unchanged."""
    eng.timers.pop(ev.timer, None)
    eng.reap_at = None
    lifecycle.reap_idle(eng, ev.at)


_TIMERS: Final[dict[str, Callable[[Core, TimerFired], None]]] = {
    "conn": _conn_timer,
    "promote": _promote_timer,
    "ready": _ready_timer,
    "maint": _maint_timer,
    "idle": _idle_timer,
    "msgrate": _msgrate_timer,
    "admin": _admin_timer,
    "backlog": _backlog_timer,
    "reap": _reap_timer,
    "shared": shared_answers.shared_timer,
    "shaping": shaping_rules.lapse,
    "curfew": curfew_hold.started,
    "watchdog": watchdog.fired,
    "connrate": _connrate_timer,
}
