"""dispatcher_progress_watchdog_timeout: abort a connection that made no progress.

KumoMTA's maintainer aborts a dispatcher task whose ``last_activity`` is older
than the path's ``dispatcher_progress_watchdog_timeout``
(crates/kumod/src/ready_queue.rs ``check_dispatcher_progress``); dropping the
dispatcher puts its message back in the scheduled queue without counting an
attempt, with a Delayed record ``451 4.4.1 dispatcher watchdog aborted task;
... time_in_phase=...`` (``impl Drop for Dispatcher``), and counts
``dispatcher_watchdog_aborted_total{service}``
(crates/kumod/src/metrics_helper.rs).

In egress progress is an event on the connection (a reply, TLS, the
connection itself), noted in ``ConnCtx.progress`` by the engine.  The timer
``("watchdog", conn)`` is armed once the connection is up and checked
lazily: when it fires early relative to the last progress it is re-armed, so
a busy connection costs one timer per period, not one per reply.  Only a path
that sets the key is watched: left unset, KumoMTA derives a threshold of at
least twice the longest transaction timeout, which the engine's own per-phase
timers (each at most that long) always beat, so the derived watchdog could
only cut an idle connection whose idle_timeout exceeds it.
"""

from __future__ import annotations

from engine import metrics, records
from engine.core import Core
from engine.dispatch import mark_closing, pump, release
from engine.effects import Close, Log
from engine.events import TimerFired
from engine.lifecycle import retry_later
from engine.ready import ConnCtx
from engine.reply import Reply

__all__ = ["arm", "fired"]

WATCHDOG = "watchdog"


def arm(eng: Core, ctx: ConnCtx, now: float) -> None:
    """The connection is up: watch it when its path asks for a watchdog."""
    limit = ctx.rq.cfg.dispatcher_progress_watchdog_timeout
    if limit is not None:
        eng.set_timer((WATCHDOG, ctx.conn), now + limit)


def fired(eng: Core, ev: TimerFired) -> None:
    """``("watchdog", conn)``: abort the connection if it made no progress for
    the path's threshold, else look again when it could have gone that long."""
    timer = ev.timer
    eng.timers.pop(timer, None)
    ctx = eng.conns.get(timer[1])  # type: ignore[arg-type]
    if ctx is None:
        return  # closed meanwhile: a stale firing
    limit = ctx.rq.cfg.dispatcher_progress_watchdog_timeout
    if limit is None:
        return  # the refreshed config no longer asks for one
    now = ev.at
    if now - ctx.progress < limit:
        eng.set_timer(timer, ctx.progress + limit)
        return
    _abort(eng, ctx, now)


def _abort(eng: Core, ctx: ConnCtx, now: float) -> None:
    conn = ctx.conn
    rq = ctx.rq
    eng.out.append(Close(conn=conn))
    for name in ("conn", "idle", "msgrate"):
        if (name, conn) in eng.timers:
            eng.cancel_timer((name, conn))
    mark_closing(eng, ctx)
    release(eng, ctx)
    rq.conns.pop(conn, None)
    eng.conns.pop(conn, None)
    ctx.idle = False
    eng.metrics.bump(metrics.WATCHDOG_ABORTED, rq.path)
    msg, ctx.msg = ctx.msg, None
    if msg is not None:
        state = getattr(ctx.session, "state", None)
        phase = state.name if state is not None else "?"
        reply = Reply.make(451, "4.4.1", f"dispatcher watchdog aborted task; phase={phase} "
                                         f"time_in_phase={_human(now - ctx.progress)}")
        eng.out.append(Log(record=records.make_record(
            records.DELAYED, msg, now, eng.epoch, reply, site=rq.path, source=rq.source_name,
            session_id=records.session_of(eng.seed, ctx))))
        if eng.bounce_on_return and msg.id in eng.bounce_on_return:
            retry_later(eng, msg, now)
        else:
            eng.sched.add(msg, now)  # IncrementAttempts::No: back at once
    pump(eng, rq, now)


def _human(seconds: float) -> str:
    """humantime's form, as KumoMTA formats the elapsed time: ``1m 5s 250ms``."""
    millis = round(seconds * 1000)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"
