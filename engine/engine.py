"""The engine: one pure, deterministic state machine; events in, effects out.

`Engine.handle` looks the event's type up in one table (`_HANDLERS`); a
`TimerFired` goes to `engine.timer_events`, by its kind.  The handlers live in the
decision modules below (`flow` for submission and promotion, `resolve` for
DNS/MTA-STS/TLSA answers, `dispatch` and `outcomes` for connections and
sessions, `admin` for admin commands and draining, `restart` after a crash)
and append effects to ``eng.out``.  The state they share is `engine.core.Core`;
this class is a `Core` plus the tables and read-only inspection.  See
docs/ARCHITECTURE.md for the layers.

Protocol errors are raised *before* anything changes: an event for a
connection the engine does not know, a `TimerFired` for a timer that is not
armed, an event the connection's session refuses (the session raises before
it changes), a duplicate message id, an answer to a lookup never asked.
A raising hook affects only what it configures (`engine.lookups`): the
messages whose path it configures get a TransientFailure record naming the
hook, a due refresh keeps the path's config; only `queue_config` raising
refuses its submission (`PolicyError`, the engine unchanged: the policy is
asked before anything changes).

Determinism: every random draw comes from ``random.Random(seed)``, ties are
broken by sequence numbers, and iteration is over insertion-ordered dicts or
sorted keys, never over sets or by `id()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from engine import (
    admin,
    flow,
    lookups,
    metrics,
    outcomes,
    records,
    resolve,
    restart,
    scheduled,
    shared_answers,
    snapshot,
    timer_events,
    watchdog,
)
from engine.core import Core
from engine.effects import Close, Effect, SetTimer
from engine.errors import PolicyError, ProtocolError
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
    Drain,
    Event,
    LimitAnswered,
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
)
from engine.makers import make_response
from engine.reply import Reply
from engine.session import REPLY_ROWS, Session

__all__ = ["Engine"]

# Final: C statics in the compiled build (setup.py), not a dict lookup per event
_PROMOTE: Final[Timer] = ("promote", "")
#: `Engine.outcome_handlers`, read as a module constant on the hottest path
_OUTCOME_HANDLERS: Final = outcomes.HANDLERS


class Engine(Core):
    """KumoMTA's egress machinery as a pure state machine.

    ``Engine(policy, seed=0, epoch=0.0)``; ``handle(event) -> list[Effect]``.
    `epoch` is added to event times in log records' ``timestamp``/``created``.
    ``lazy_redelays=True`` (the simulator's default) samples a full ready
    queue's re-delays lazily (`engine.backlog`), counted instead of logged;
    the default is KumoMTA's per-message rule, as live delivery needs.
    The state and the shared operations are `Core`'s; this class adds the
    event table and read-only inspection.
    """

    outcome_handlers = outcomes.HANDLERS

    # -- the one entry point ---------------------------------------------

    def handle(self, event: Event) -> list[Effect]:
        """Apply one event; return the effects for the driver, in order."""
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise ProtocolError(f"engine cannot handle {type(event).__name__} in state RUNNING")
        out: list[Effect] = []
        self.out = out
        self._apply(handler, event)
        return self._effects(out)

    def handle_replies(self, at: float, conn: int, replies: list[Reply]) -> list[Effect]:
        """Apply the replies one read of `conn` returned at `at`, in order: what
        ``handle(Response(at, conn, reply))`` returns for each, concatenated,
        up to the reply whose effects close `conn` (a driver reads no further
        on a connection the engine closed).  One re-arming of `conn`'s command
        timer stands for the earlier ones of the batch (a driver acts on the
        latest arming of a timer only).

        The simulator's path for a pipelined write (RSET, MAIL, RCPT, DATA:
        four replies a message, a timer re-armed by each): one call, the
        session's timer armed once.  Should a reply raise, the effects of the
        replies before it are lost with the call (each reply's own state
        change is kept, as `handle` keeps it): a driver of a run that can go
        on after a protocol error reads replies one `handle` at a time, as the
        live driver does."""
        out: list[Effect] = []
        self.out = out
        # typed as holding None (a dropped effect's slot): compiled, a
        # list[Effect] checks each item it reads or writes is an Effect
        slots: list[Effect | None] = out  # type: ignore[assignment]
        timer = ("conn", conn)
        armed = -1  # where the batch's latest arming of `timer` is in `out`
        for reply in replies:
            start = len(out)
            ev = make_response(at, conn, reply)
            if at < self.refresh_at:  # `_apply`, with `_response` called natively
                _response(self, ev)
                self._settle(at)
            else:
                self._apply(_response, ev)
            closed = False
            for i in range(start, len(out)):
                e: Any = slots[i]  # Any: read as its own class below (native reads, compiled)
                t = type(e)
                if t is SetTimer:
                    st: SetTimer = e  # typed: compiled, its fields are read natively
                    if st.timer == timer:
                        if armed >= 0:
                            slots[armed] = None
                            self.dropped = True
                        armed = i
                elif t is Close:
                    cl: Close = e
                    if cl.conn == conn:
                        closed = True
            if closed:
                break
        return self._effects(out)

    def _apply(self, handler: Callable[[Core, Any], None], event: Event) -> None:
        """Run `handler` on `event` (the effects go to ``self.out``), a due
        policy refresh first; then the timers every event may arm."""
        at = event.at
        if at < self.refresh_at:
            handler(self, event)
        else:
            undo = lookups.refresh_due(self, at)
            try:
                handler(self, event)
            except (ProtocolError, PolicyError):
                lookups.undo_refresh(self, undo)
                self.cancelled.clear()
                raise
        self._settle(at)

    def _settle(self, at: float) -> None:
        """What follows every event: the reap and promote timers armed as the
        state now needs, the event's own bookkeeping cleared."""
        if self.reap_after is not None and self.reap_at is None \
                and (self.queues or self.paths or self.domains):
            self.reap_at = at + self.reap_after
            self.set_timer(timer_events.REAP, self.reap_at)
        sched = self.sched
        head = sched.low
        if head is not None:
            sched.low = None
            if self.promote_at is None or head < self.promote_at:
                self.promote_at = head
                self.set_timer(_PROMOTE, head)
        if self.cancelled:
            self.cancelled.clear()
        if self.hook_failed:
            self.hook_failed.clear()

    def _effects(self, out: list[Effect]) -> list[Effect]:
        """`out`, the slots of dropped effects taken out, records completed."""
        if self.dropped:  # CancelTimer+SetTimer pairs became one SetTimer
            self.dropped = False
            # typed as holding None, or the compiled build checks each item is an Effect
            slots: list[Effect | None] = out  # type: ignore[assignment]
            out = [e for e in slots if e is not None]
        classifier = getattr(self.policy, "bounce_classifier", None)
        if classifier is not None or self.nodeid is not None:
            records.fill_records(out, classifier, self.nodeid)
        self.out = []  # hold no effects (or records) between events
        return out

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
        """Messages waiting in scheduled queues (a lazy backlog's included)."""
        n = len(self.sched)
        if self.lazy_redelays:
            n += sum(self.overflow_depths().values())
        return n

    def overflow_depths(self) -> dict[str, int]:
        """Messages re-delayed lazily behind each path's full ready queue
        (`engine.backlog`; empty unless `lazy_redelays`)."""
        return {p: len(rq.backlog) for p, rq in self.paths.items() if rq.backlog is not None}

    def overflow_peaks(self) -> dict[str, int]:
        """The most messages each path's lazy backlog ever held."""
        return {p: rq.backlog.peak for p, rq in self.paths.items() if rq.backlog is not None}

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
        return snapshot.dump(self)

    @classmethod
    def restore(cls, data: bytes, policy: Any) -> Engine:
        """An engine from `snapshot()` bytes, with `policy` (not stored) attached.
        Shaping files loaded with the policy replace the snapshot's (they are
        reloaded with it); the rules in force keep running to their lapse."""
        eng = snapshot.load(cls, data, policy)
        scheduled.upgrade(eng.sched)  # a snapshot of an earlier release
        shaping = getattr(policy, "shaping", None)
        if shaping is not None:
            eng.shaping = shaping
            if eng.automation is not None:
                eng.automation.rules.clear()
        return eng


# -- connection events and timers: validate, then route --------------------


def _response(eng: Core, ev: Response) -> None:
    """The most frequent event: one reply on a live session.

    `Session.handle` and `Core.run_step` fused for the reply whose row exists
    (the same lookup, handler call and state commit, without two calls and a
    tuple per reply); anything else goes the general way, which raises."""
    conn = ev.conn
    ctx = eng.conns.get(conn)
    if ctx is None or ctx.session is None:
        _conn_event(eng, ev)  # raises the protocol error
        return
    s: Session = ctx.session  # typed: compiled, its fields are read natively
    if conn != s.conn:
        _conn_event(eng, ev)
        return
    row = REPLY_ROWS[s.state][ev.reply.code]
    if row is None:
        s.handle(ev)  # raises the protocol error
        return
    handler, targets = row
    fx: list[Any] = []
    out: list[Any] = []
    at = ev.at
    ctx.progress = at  # engine.watchdog
    nxt = handler(s, at, ev, fx, out)
    if nxt is None:
        nxt = targets[0]
    elif nxt not in targets:
        raise AssertionError(f"{handler.__name__} chose {nxt.name}, not in {targets}")
    s.state = nxt
    eng.take_effects(fx)
    if out:
        handlers = _OUTCOME_HANDLERS
        for o in out:
            handlers[type(o)](eng, ctx, o, at)


def _conn_event(eng: Core, ev: ConnEvent) -> None:
    ctx = eng.conns.get(ev.conn)
    if ctx is None or ctx.session is None:
        state = "UNKNOWN" if ctx is None else "AWAIT_TLSA"
        raise ProtocolError(
            f"session {ev.conn} cannot handle {type(ev).__name__} in state {state}"
        ) from None
    step = ctx.session.handle(ev)  # raises ProtocolError, unchanged, if illegal
    ctx.progress = ev.at  # engine.watchdog
    if type(ev) is TlsEstablished:
        ctx.tls = (ev.protocol, ev.cipher, ev.peer_subject)
    elif type(ev) is Connected:
        ctx.local = ev.local  # type: ignore[attr-defined]
        eng.metrics.bump(metrics.TOTAL_CONN, ctx.rq.path)
        watchdog.arm(eng, ctx, ev.at)
    eng.run_step(ctx, step, ev.at)


_HANDLERS: Final[dict[type[Event], Callable[[Core, Any], None]]] = {
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
    TimerFired: timer_events.fired,
    Suspend: admin.suspend,
    Resume: admin.resume,
    Bounce: admin.bounce,
    Restarted: restart.restarted,
    Drain: admin.drain,
    AdminSuspend: admin.admin_suspend,
    AdminSuspendReadyQ: admin.admin_suspend_ready_q,
    AdminBounceRule: admin.admin_bounce_rule,
    AdminCancel: admin.admin_cancel,
    PolicyReloaded: admin.policy_reloaded,
    LimitAnswered: shared_answers.answered,
}
