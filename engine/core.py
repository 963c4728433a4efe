"""The state every decision works on, and the one copy of the timer bookkeeping.

`Core` holds the engine's shared dicts (scheduled queue, ready queues,
connections, domains, caches), its seeded generator and the effect list of the
event being handled.  The decision modules (`flow`, `dispatch`, `outcomes`,
`resolve`, `admin`, `restart`, `lookups`, `lifecycle`) are functions over a
`Core`; `engine.engine.Engine` is a `Core` with the event table on top.  So a
decision imports only what lies below it, never the `Engine`.

Timers: `take_effects` is the only place that records armed timers.  A
`CancelTimer` followed, within the same event, by a `SetTimer` of the same
timer is dropped (the SetTimer re-arms it): its slot becomes None and
`Engine.handle` removes the slots at the end of the event.

A session step's outcomes go to `outcome_handlers`, a table the layer above
fills in (`engine.outcomes`): `dispatch` starts sessions and `outcomes` reacts
to them, and the table keeps that loop out of the imports.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, ClassVar, Final

from engine.admin_rules import AdminRules
from engine.domains import DomainState
from engine.effects import CancelTimer, Effect, SetTimer
from engine.events import Timer
from engine.makers import make_cancel_timer, make_set_timer
from engine.message import QueueInfo
from engine.metrics import Counters
from engine.ready import ConnCtx, ReadyQueue
from engine.scheduled import ScheduledQueues
from engine.shaping_load import combine
from engine.throttle import ThrottleState

__all__ = ["Core", "OutcomeHandler"]

# Final: the compiled build (setup.py) keeps these in C statics instead of
# looking each up in the module's dict at every use.
_SET_TIMER: Final = SetTimer
_CANCEL_TIMER: Final = CancelTimer

OutcomeHandler = Callable[["Core", ConnCtx, Any, float], None]


class Core:
    """The engine's state and the operations every decision shares."""

    # session outcome type -> handler; filled by the class that knows them
    outcome_handlers: ClassVar[dict[type, OutcomeHandler]] = {}
    # class defaults, so an engine restored from a snapshot older than shaping has none
    shaping: Any = None
    automation: Any = None
    # engine.tls_policy's state: path -> until when its TLS is remembered broken;
    # (host, port) -> (why, when) of a TLSA lookup that failed.  Read-only empty
    # defaults here for a snapshot older than them; writers make dicts first.
    # (typed Any: the compiled build checks a class attribute's value against
    # its annotation, and a read-only mapping is not a dict)
    broken_tls: Any = MappingProxyType({})  # dict[str, float] once written
    tlsa_failed: Any = MappingProxyType({})  # dict[tuple[str, int], tuple[str, float]]
    gates: Any = None  # engine.selection.Gates, made at the first gated pick
    curfew_state: Any = None  # engine.curfew_hold.CurfewState, made at first use
    #: The node's UUID text every record carries (`engine.records.fill_records`):
    #: the live spool's persisted id, the simulator's per scenario; None: the nil UUID.
    nodeid: str | None = None
    #: The EHLO name when neither the path nor the source sets ehlo_domain (the
    #: page: "the local machine hostname"): the live driver sets the machine's;
    #: the simulator keeps this fixed name, so its output does not depend on
    #: the machine it runs on.
    hostname: str = "localhost"

    def __init__(self, policy: Any, *, seed: int = 0, epoch: float = 0.0,
                 lazy_redelays: bool = False, shaping: Any = None,
                 brief_records: bool = False) -> None:
        self.policy = policy
        # an engine.shaping.Shaping (or None: no shaping): the policy's (a Lua
        # policy's shaping helper) with the caller's files merged over it
        self.shaping = combine(getattr(policy, "shaping", None), shaping)
        self.automation: Any = None  # engine.shaping_rules' state, made at its first match
        self.seed = seed
        self.rng = random.Random(seed)
        self.epoch = float(epoch)
        self.out: list[Effect] = []
        self.sched = ScheduledQueues()
        self.queues: dict[str, QueueInfo] = {}
        self.domains: dict[str, DomainState] = {}
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
        self.tlsa_failed = {}
        self.broken_tls = {}
        self.extra_conns: dict[str, int] = {}
        self.extra_msg_throttles: dict[str, ThrottleState] = {}
        self.suspended_paths: dict[str, bool] = {}
        self.bounce_on_return: dict[str, str] = {}
        self.admin_rules = AdminRules()  # the admin API's suspensions and bounces
        self.ids: set[str] = set()  # ids of the messages not yet finished
        # path configs asked for before their path exists (see engine.lookups)
        self.path_cfgs: dict[tuple[str, str], tuple[str, Any, float]] = {}
        self.refresh_at = math.inf  # when the oldest path config is due a refresh
        # within one event: (pool, site) whose hook raised -> the error (engine.lookups)
        self.hook_failed: dict[tuple[str, str], str] = {}
        # within one event: timers cancelled (-> index in out), and whether a later
        # SetTimer turned one of those CancelTimers into None
        self.cancelled: dict[Timer, int] = {}
        self.dropped = False
        self.draining = False  # set by Drain: no new connection, no new transaction
        # A full ready queue's re-delays sampled lazily (`engine.backlog`, for the
        # simulator) instead of one by one; counted, never logged.  Off: KumoMTA's
        # per-message rule, a Delayed record each (what live delivery does).
        self.lazy_redelays = lazy_redelays
        self.lazy_redelayed = 0  # re-delays made lazily (no record each)
        # Reception and Delivery records with only what a simulation that writes
        # no record counts (`records.brief_record`); off: KumoMTA's whole record
        self.brief_records = brief_records
        self.silent_redelays: dict[str, int] = {}  # message id -> lazy re-delays, until read
        self.backlog_gen: Any = None  # numpy generator seeded from `rng` at first use
        # idle state is reaped every `reap_after` seconds (None: never; the live
        # service sets it, see engine.lifecycle.reap_idle); when the sweep is armed
        self.reap_after: float | None = None
        self.reap_at: float | None = None
        # engine.shared_limits.SharedLimits when limits are shared between processes
        self.shared: Any = None
        # the names `intern` hands out, each its own key and value
        self.names: dict[str, str] = {}

    def intern(self, s: str) -> str:
        """One shared copy of a queue, path, site or pool name, so a million
        messages share it (and a dict lookup by it finds its key by identity).

        The engine's own table, not `sys.intern`'s: the interpreter's table
        keeps the size it grew to for as long as the process runs, so a burst
        to 10 k domains left 2 MB of it behind; this one is rebuilt by
        `prune_names` when the idle state is reaped."""
        return self.names.setdefault(s, s)

    def prune_names(self) -> None:
        """Keep in `names` only what the state still holds (after a reap sweep),
        in a table sized for them.  A name dropped here while something else
        still holds it costs only a second copy if it is interned again:
        nothing compares names by identity."""
        held: set[str] = set(self.paths)
        held.update(self.path_names.values())
        held.update(self.site_names.values())
        for q in self.queues.values():
            held.update((q.name, q.domain, q.tenant, q.campaign, q.routing_domain, q.pool))
        for ds in self.domains.values():
            if ds.site is not None:
                held.add(ds.site)
        for rq in self.paths.values():
            held.add(rq.site)
            held.add(rq.pool)
        for pool, site in self.path_cfgs:
            held.add(pool)
            held.add(site)
        self.names = {s: s for s in self.names if s in held}

    # -- effects and timers ------------------------------------------------

    def take_effects(self, effects: list[Any]) -> None:
        """Append effects to the event's output, recording the timers they arm.
        (A list, as every session step makes them: compiled, a list is walked
        by index, any other iterable through the iterator protocol.)"""
        out = self.out
        timers = self.timers
        # Any: compiled, a Timer field is kept unboxed and each use of it as a
        # Timer builds a new tuple; as Any it is built once, at the read
        timer: Any
        for e in effects:
            t = type(e)
            if t is _SET_TIMER:
                st: SetTimer = e  # typed: compiled, its fields are read natively
                timer = st.timer
                at = st.at
                armed = timers.get(timer)
                if armed is not None and armed == at:
                    # already armed at that very deadline: nothing to do (MAIL's
                    # and RCPT's replies in a pipelined batch both re-arm the
                    # session's timer, 300 s on by default)
                    continue
                timers[timer] = at
                cancelled = self.cancelled
                if cancelled and timer in cancelled:
                    out[cancelled[timer]] = None  # type: ignore[call-overload]
                    del cancelled[timer]
                    self.dropped = True
            elif t is _CANCEL_TIMER:
                ct: CancelTimer = e
                # `in` and `del` rather than ``pop(timer, None)``: compiled, a
                # dict's pop is a method call by name, `in` and `del` C calls
                timer = ct.timer
                if timer in timers:
                    del timers[timer]
                self.cancelled[timer] = len(out)
            out.append(e)

    def set_timer(self, timer: Timer, at: float) -> None:
        """Arm `timer` at `at`: `take_effects` of one `SetTimer`, spelled out
        (a timer is set or cancelled on nearly every message)."""
        self.timers[timer] = at
        out = self.out
        cancelled = self.cancelled
        if cancelled and timer in cancelled:
            out[cancelled.pop(timer)] = None  # type: ignore[call-overload]
            self.dropped = True
        out.append(make_set_timer(timer, at))

    def cancel_timer(self, timer: Timer) -> None:
        """Disarm `timer` if armed (no effect otherwise); as `set_timer`, the
        one-effect `take_effects` spelled out."""
        timers = self.timers
        if timer in timers:
            del timers[timer]
            out = self.out
            self.cancelled[timer] = len(out)
            out.append(make_cancel_timer(timer))

    def run_step(self, ctx: ConnCtx, step: tuple[list[Any], list[Any]], now: float) -> None:
        """Carry a session step: its effects out, its outcomes to their handlers."""
        effects, outcomes = step
        self.take_effects(effects)
        if outcomes:
            handlers = self.outcome_handlers
            for o in outcomes:
                handlers[type(o)](self, ctx, o, now)

    def run_outcomes(self, ctx: ConnCtx, outcomes: list[Any], now: float) -> None:
        """A step's outcomes to their handlers (`run_step` without the effects, for
        a caller that carries the effects itself)."""
        handlers = self.outcome_handlers
        for o in outcomes:
            handlers[type(o)](self, ctx, o, now)

    # -- throttles ---------------------------------------------------------

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
        """The path's message throttle and its shared additional ones, smallest
        rate first (ties: the path's own, then by name), the order KumoMTA checks
        them in (crates/kumod/src/ready_queue.rs, ``deliver_message``)."""
        found = [] if rq.msg_throttle is None else [rq.msg_throttle]
        extra = rq.cfg.additional_message_rate_throttles
        for name in sorted(extra):
            state = self.extra_msg_throttles.get(name)
            if state is None or state.throttle != extra[name]:
                state = self.extra_msg_throttles[name] = ThrottleState(extra[name])
            found.append(state)
        if len(found) > 1:
            found.sort(key=lambda st: st.throttle.limit / st.throttle.period)
        return found
