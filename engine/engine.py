"""The engine: one pure, deterministic state machine; events in, effects out.

`Engine.handle` is a table from event type to handler; the handlers live in
topic modules (`flow` for a message's lifecycle, `resolve` for DNS/MTA-STS/
TLSA answers, `dispatch` and `outcomes` for connections and sessions, `admin`
for admin commands) and append effects to ``self.out``.  This class holds the
state they share and the few helpers every one of them needs (timers, the
throttle states), plus read-only inspection.

Protocol errors are raised *before* anything changes: an event for a
connection the engine does not know, a `TimerFired` for a timer that is not
armed, an event the connection's session refuses (the session raises before
it changes), a duplicate message id, an answer to a lookup never asked.
Policy errors (a raising hook) propagate as `PolicyError` naming the hook,
and leave the engine unchanged too: the policy is asked before anything
changes (`engine.lookups`).

Determinism: every random draw comes from ``random.Random(seed)``, ties are
broken by sequence numbers, and iteration is over insertion-ordered dicts or
sorted keys, never over sets or by `id()`.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from typing import Any

from engine import admin, dispatch, flow, lookups, outcomes, resolve, restart
from engine.admin_rules import AdminRules
from engine.effects import CancelTimer, Effect, SetTimer
from engine.errors import ProtocolError
from engine.events import (
    AdminBounceRule,
    AdminCancel,
    AdminSuspend,
    AdminSuspendReadyQ,
    Bounce,
    Closed,
    Connected,
    ConnectFailed,
    ConnEvent,
    Event,
    Malformed,
    MessageSubmitted,
    MtaStsResolved,
    PolicyReloaded,
    Resolved,
    ResolveFailed,
    Response,
    Restarted,
    Resume,
    Suspend,
    Timer,
    TimerFired,
    TlsaResolved,
    TlsEstablished,
    TlsFailed,
    trusted_factory,
)
from engine.message import QueueInfo
from engine.metrics import Counters
from engine.ready import ConnCtx, ReadyQueue
from engine.scheduled import ScheduledQueues
from engine.throttle import ThrottleState

__all__ = ["Engine"]

_PROMOTE: Timer = ("promote", "")
_SetTimer = trusted_factory(SetTimer)
_CancelTimer = trusted_factory(CancelTimer)


class Engine:
    """KumoMTA's egress machinery as a pure state machine.

    ``Engine(policy, seed=0, epoch=0.0)``; ``handle(event) -> list[Effect]``.
    `epoch` is added to event times in log records' ``timestamp``/``created``.
    """

    def __init__(self, policy: Any, *, seed: int = 0, epoch: float = 0.0) -> None:
        self.policy = policy
        self.seed = seed
        self.rng = random.Random(seed)
        self.epoch = float(epoch)
        self.out: list[Effect] = []
        self.sched = ScheduledQueues()
        self.queues: dict[str, QueueInfo] = {}
        self.domains: dict[str, resolve.DomainState] = {}
        self.site_names: dict[tuple[tuple[int, str], ...], str] = {}
        self.path_names: dict[tuple[str, str], str] = {}
        self.paths: dict[str, ReadyQueue] = {}
        self.conns: dict[int, ConnCtx] = {}
        self.timers: dict[Timer, float] = {}
        self.metrics = Counters()
        self.next_conn = 1
        self.queued = 0
        self.promote_at: float | None = None
        self.pools: dict[str, Any] = {}
        self.sources: dict[str, Any] = {}
        self.sts: dict[str, tuple[Any, float]] = {}
        self.sts_pending: dict[str, bool] = {}
        self.tlsa: dict[tuple[str, int], tuple[tuple[Any, ...], bool]] = {}
        self.tlsa_waiting: dict[tuple[str, int], list[int]] = {}
        self.extra_conns: dict[str, int] = {}
        self.extra_msg_throttles: dict[str, ThrottleState] = {}
        self.suspended_paths: dict[str, bool] = {}
        self.bounce_on_return: dict[str, str] = {}
        self.admin_rules = AdminRules()  # the admin API's suspensions and bounces
        self.ids: set[str] = set()  # ids of the messages not yet finished
        # path configs asked for before their path exists (see engine.lookups)
        self.path_cfgs: dict[tuple[str, str], tuple[str, Any, float]] = {}
        self.refresh_at = math.inf  # when the oldest path config is due a refresh
        # within one event: timers cancelled (-> index in out), and whether a later
        # SetTimer turned one of those CancelTimers into None (see handle)
        self.cancelled: dict[Timer, int] = {}
        self.dropped = False

    # -- the one entry point ---------------------------------------------

    def handle(self, event: Event) -> list[Effect]:
        """Apply one event; return the effects for the driver, in order."""
        out: list[Effect] = []
        self.out = out
        if type(event) is Response and event.at < self.refresh_at:
            # The most frequent event (most of a simulation's), taken inline: one
            # reply on a live session, no path config due a refresh.
            ctx = self.conns.get(event.conn)  # type: ignore[attr-defined]
            if ctx is None or ctx.session is None:
                _conn_event(self, event)  # type: ignore[arg-type]  # raises the protocol error
            effects, results = ctx.session.handle(event)  # type: ignore[union-attr]
            # outcomes.run_step without its call: a reply's step nearly always
            # has effects only (the timer re-arm, sometimes a Send), no outcome.
            outcomes.take_effects(self, effects)
            if results:
                outcomes.run_outcomes(self, ctx, results, event.at)  # type: ignore[arg-type]
        else:
            handler = _HANDLERS.get(type(event))
            if handler is None:
                raise ProtocolError(
                    f"engine cannot handle {type(event).__name__} in state RUNNING"
                )
            if event.at >= self.refresh_at:
                undo = lookups.refresh_due(self, event.at)
                try:
                    handler(self, event)
                except ProtocolError:
                    lookups.undo_refresh(self, undo)
                    self.cancelled.clear()
                    raise
            else:
                handler(self, event)
        sched = self.sched
        head = sched.low
        if head is not None:
            sched.low = None
            if self.promote_at is None or head < self.promote_at:
                self.promote_at = head
                self.timers[_PROMOTE] = head
                out.append(_SetTimer(_PROMOTE, head))
        if self.cancelled:
            self.cancelled.clear()
        if self.dropped:  # CancelTimer+SetTimer pairs became one SetTimer
            self.dropped = False
            out = [e for e in out if e is not None]
        self.out = []  # hold no effects (or records) between events
        return out

    # -- shared helpers --------------------------------------------------

    def intern(self, s: str) -> str:
        """Intern a queue/path/site name so a million messages share one copy."""
        return sys.intern(s)

    def set_timer(self, timer: Timer, at: float) -> None:
        self.timers[timer] = at
        cancelled = self.cancelled
        if cancelled and timer in cancelled:
            self.out[cancelled.pop(timer)] = None  # type: ignore[call-overload]
            self.dropped = True
        self.out.append(_SetTimer(timer, at))

    def cancel_timer(self, timer: Timer) -> None:
        if self.timers.pop(timer, None) is not None:
            self.cancelled[timer] = len(self.out)
            self.out.append(_CancelTimer(timer))

    # The modules' functions themselves, as methods (``eng.pump(rq, now)`` is
    # ``dispatch.pump(eng, rq, now)``): for modules that cannot import them, and
    # without a wrapper's extra call on the per-message path.
    pump = dispatch.pump
    attempt = dispatch.attempt
    run_step = outcomes.run_step

    def refresh_throttles(self, rq: ReadyQueue, old: Any) -> None:
        """(Re)build the path's GCRA states when its throttle settings change."""
        cfg = rq.cfg
        if old is None or old.max_connection_rate != cfg.max_connection_rate:
            rate = cfg.max_connection_rate
            rq.conn_throttle = ThrottleState(rate) if rate is not None else None
        if old is None or old.max_message_rate != cfg.max_message_rate:
            rate = cfg.max_message_rate
            rq.msg_throttle = ThrottleState(rate) if rate is not None else None
        rq.msg_throttles = tuple(self.message_throttles(rq))

    def message_throttles(self, rq: ReadyQueue) -> list[ThrottleState]:
        """The path's message throttle and its shared additional ones (by name)."""
        found = [] if rq.msg_throttle is None else [rq.msg_throttle]
        extra = rq.cfg.additional_message_rate_throttles
        for name in sorted(extra):
            state = self.extra_msg_throttles.get(name)
            if state is None or state.throttle != extra[name]:
                state = self.extra_msg_throttles[name] = ThrottleState(extra[name])
            found.append(state)
        return found

    # -- inspection (read-only) ------------------------------------------

    @property
    def counters(self) -> dict[str, int]:
        """Every counter, flat: see `engine.metrics`."""
        return self.metrics.snapshot(self.ready_depths(), self.connection_counts())

    def ready_depths(self) -> dict[str, int]:
        """Messages waiting in each ready queue (not those held by connections)."""
        return {p: len(rq.messages) for p, rq in self.paths.items()}

    def ready_peaks(self) -> dict[str, int]:
        """The deepest each ready queue has ever been (exact, not sampled)."""
        return {p: rq.peak for p, rq in self.paths.items()}

    def connection_counts(self) -> dict[str, int]:
        """Open connections per path (a quitting connection no longer counts)."""
        return {p: rq.open_count() for p, rq in self.paths.items()}

    @property
    def scheduled_count(self) -> int:
        """Messages waiting in scheduled queues."""
        return len(self.sched)

    @property
    def queued_count(self) -> int:
        """Messages accepted and not yet finished (anywhere in the engine)."""
        return self.queued

    @property
    def next_timer_at(self) -> float | None:
        """The earliest armed timer, or None."""
        return min(self.timers.values()) if self.timers else None

    def armed_timers(self) -> dict[Timer, float]:
        """A copy of the armed timers (name -> at)."""
        return dict(self.timers)

    # -- snapshots -------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as versioned bytes (see `engine.snapshot`)."""
        from engine.snapshot import dump

        return dump(self)

    @classmethod
    def restore(cls, data: bytes, policy: Any) -> Engine:
        """An engine from `snapshot()` bytes, with `policy` (not stored) attached."""
        from engine.snapshot import load

        return load(cls, data, policy)


# -- connection events and timers: validate, then route --------------------


def _response(eng: Engine, ev: Response) -> None:
    """The most frequent event: one reply on a connection."""
    ctx = eng.conns.get(ev.conn)
    if ctx is None or ctx.session is None:
        _conn_event(eng, ev)  # raises the protocol error
        return
    outcomes.run_step(eng, ctx, ctx.session.handle(ev), ev.at)


def _conn_event(eng: Engine, ev: ConnEvent) -> None:
    ctx = eng.conns.get(ev.conn)
    if ctx is None or ctx.session is None:
        state = "UNKNOWN" if ctx is None else "AWAIT_TLSA"
        raise ProtocolError(
            f"session {ev.conn} cannot handle {type(ev).__name__} in state {state}"
        ) from None
    step = ctx.session.handle(ev)  # raises ProtocolError, unchanged, if illegal
    if type(ev) is Connected:
        ctx.rq.failures = 0
    elif type(ev) is TlsEstablished:
        ctx.tls = (ev.protocol, ev.cipher, ev.peer_subject)
    outcomes.run_step(eng, ctx, step, ev.at)


def _timer(eng: Engine, ev: TimerFired) -> None:
    timer = ev.timer
    if timer not in eng.timers:
        raise ProtocolError(f"engine cannot handle TimerFired({timer!r}) in state NOT_ARMED")
    kind, key = timer
    if kind == "conn":
        ctx = eng.conns.get(key)  # type: ignore[arg-type]
        if ctx is None or ctx.session is None:
            raise ProtocolError(f"session {key} cannot handle TimerFired in state UNKNOWN")
        step = ctx.session.handle(ev)
        eng.timers.pop(timer, None)
        outcomes.run_step(eng, ctx, step, ev.at)
        return
    now = ev.at
    if kind == "promote":
        due = flow.stage_due(eng, now)  # asks the policy: before any change
        del eng.timers[timer]
        eng.promote_at = None
        flow.promote_due(eng, due, now)
        eng.sched.low = eng.sched.next_due()  # re-arm at the new head, if any
        return
    del eng.timers[timer]
    if kind == "ready":
        rq = eng.paths[key]  # type: ignore[index]
        rq.ready_timer = None
        dispatch.pump(eng, rq, now)
    elif kind == "maint":
        _maintain(eng, eng.paths[key], now)  # type: ignore[index]
    elif kind == "idle":
        ctx = eng.conns[key]  # type: ignore[index]
        ctx.idle = False
        dispatch.quit_session(eng, ctx, now)
    elif kind == "msgrate":
        dispatch.start(eng, eng.conns[key], now)  # type: ignore[index]
    elif kind == "admin":
        admin.expired(eng, key, now)  # type: ignore[arg-type]


def _maintain(eng: Engine, rq: ReadyQueue, now: float) -> None:
    """("maint", path): expire ready messages past max_age (a stalled queue must
    not keep them), then re-arm at the next deadline."""
    rq.maint_at = None
    keep = []
    for msg in rq.messages:
        if now >= msg.created + msg.queue.config.max_age:
            flow.expire(eng, msg, now, now, rq)
        else:
            keep.append(msg)
    if len(keep) != len(rq.messages):
        rq.messages.clear()
        rq.messages.extend(keep)
    if keep:
        rq.maint_at = min(m.created + m.queue.config.max_age for m in keep)
        eng.set_timer(("maint", rq.path), rq.maint_at)


_HANDLERS: dict[type[Event], Callable[[Engine, Any], None]] = {
    MessageSubmitted: flow.submit,
    Resolved: resolve.resolved,
    ResolveFailed: resolve.resolve_failed,
    MtaStsResolved: resolve.mta_sts_resolved,
    TlsaResolved: resolve.tlsa_resolved,
    Connected: _conn_event,
    ConnectFailed: _conn_event,
    TlsEstablished: _conn_event,
    TlsFailed: _conn_event,
    Response: _response,
    Malformed: _conn_event,
    Closed: _conn_event,
    TimerFired: _timer,
    Suspend: admin.suspend,
    Resume: admin.resume,
    Bounce: admin.bounce,
    Restarted: restart.restarted,
    AdminSuspend: admin.admin_suspend,
    AdminSuspendReadyQ: admin.admin_suspend_ready_q,
    AdminBounceRule: admin.admin_bounce_rule,
    AdminCancel: admin.admin_cancel,
    PolicyReloaded: admin.policy_reloaded,
}
