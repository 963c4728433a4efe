"""Shared limits: connection limits and throttles held for several processes at once.

KumoMTA shares every throttle and connection limit through Redis once
``kumo.configure_redis_throttles`` is called, unless the limit is written
``local:``.  Here the core stays pure: it *asks* with an effect and is
*answered* with a `LimitAnswered` event (`engine.shared_answers` handles it).

* A connection takes a **lease** (`AcquireLease`; KumoMTA's sorted set: prune
  expired members, count, add) before it opens, extends it before each message
  (`ExtendLease`, sent with that message's throttle check so the driver makes
  one round trip) and gives it back when it closes (`ReleaseLease`).  A refused
  lease is asked for again after ``min(wait, lease_poll)``: other nodes release
  leases without telling us.
* A shared **throttle** (``max_message_rate``, ``max_connection_rate``, the
  additional message-rate throttles) is one GCRA check in the store
  (`CheckThrottle`).  While an answer is pending the path or connection simply
  waits: no timer, no busy loop; the answer resumes it.

When the store cannot answer, the configuration chooses: ``"stop"``
(KumoMTA's behaviour: shared paths open and start nothing; asked again after
``retry`` seconds) or ``"local"`` (each node enforces 1/``nodes`` of every shared
limit by itself until the store answers again).  A `Log` record of type
``SharedLimits`` marks each change of mode, and the metrics carry it
(``shared_limits_mode{mode="shared|stopped|local"}`` 1 or 0,
``total_shared_limit_errors``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.core import Core
from engine.effects import AcquireLease, CheckThrottle, ExtendLease, Log, ReleaseLease
from engine.errors import ConfigError
from engine.ready import ConnCtx, ReadyQueue
from engine.throttle import Throttle, ThrottleState, format_throttle

__all__ = ["SharedLimits", "SharedLimitsConfig", "configure"]

SHARED, STOPPED, LOCAL = "shared", "stopped", "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedLimitsConfig:
    """How limits are shared.  `node` names this process's leases (unique per
    process); `nodes` is how many share each limit (the 1/N of the fallback)."""

    node: str = "node"
    nodes: int = 1
    on_unavailable: str = "stop"  # "stop" (KumoMTA) or "local" (1/nodes each)
    lease_ttl: float = 60.0
    lease_poll: float = 0.5
    retry: float = 1.0
    prefix: str = "egress"
    # "first-come" (KumoMTA): a node takes any free lease, and idle sessions keep
    # theirs until idle_timeout, so a busy node can starve another.  "even": a node
    # holds at most ceil(limit / nodes) connections, for nodes that share the
    # traffic evenly (egress deliver --workers behind one SO_REUSEPORT port).
    share: str = "first-come"

    def __post_init__(self) -> None:
        if self.on_unavailable not in ("stop", "local"):
            raise ConfigError(f"on_unavailable: {self.on_unavailable!r} is not valid; "
                              "expected 'stop' or 'local'")
        if self.share not in ("first-come", "even"):
            raise ConfigError(f"share: {self.share!r} is not valid; expected 'first-come' or "
                              "'even'")
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise ConfigError(f"nodes: {self.nodes!r} is not valid; expected an integer >= 1")
        for key in ("lease_ttl", "lease_poll", "retry"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{key}: {value!r} is not valid; expected seconds > 0")


_Plan = tuple[Any, tuple[Any, ...], tuple[tuple[str, Throttle], ...]]


class SharedLimits:
    """The engine's side of the shared store: what was asked and what is held."""

    def __init__(self, cfg: SharedLimitsConfig) -> None:
        self.cfg = cfg
        self.mode = SHARED
        self.down_until = -math.inf  # the store failed: ask nothing before this
        self.next_request = 1
        self.next_lease = 1
        self.pending: dict[int, tuple[str, Any]] = {}  # request -> ("conn"|"rate", path)
        self.asking: dict[str, int] = {}  # path -> its pending lease or conn-rate request
        self.rate_ok: dict[str, bool] = {}  # path -> its connection-rate event was counted
        self.granted: dict[str, tuple[str, str]] = {}  # path -> lease granted, not yet used
        self.lease_names: dict[int, str] = {}  # pending lease request -> the lease's name
        self.leases: dict[int, tuple[str, str]] = {}  # conn -> (key, lease) it holds
        self.msg_waiting: dict[int, list[float]] = {}  # conn -> [answers due, longest wait]
        self.msg_ok: dict[int, bool] = {}  # conn -> its message's shared throttles counted
        self.fallback: dict[str, ThrottleState] = {}  # key -> the 1/nodes local state
        self.plans: dict[str, _Plan] = {}


def configure(eng: Core, cfg: SharedLimitsConfig) -> None:
    """Make the engine's limits shared (before its first event)."""
    eng.shared = SharedLimits(cfg)
    _gauge(eng, SHARED)


def reset(eng: Core) -> None:
    """After a restart: the store's answers to the old process never come."""
    sh: SharedLimits | None = eng.shared
    if sh is not None:
        eng.shared = SharedLimits(sh.cfg)


def _ask(sh: SharedLimits, what: str, subject: Any) -> int:
    request = sh.next_request
    sh.next_request += 1
    sh.pending[request] = (what, subject)
    return request


def _down(sh: SharedLimits, now: float) -> bool:
    return now < sh.down_until


def conn_key(sh: SharedLimits, rq: ReadyQueue) -> str:
    return f"{sh.cfg.prefix}:conn:{rq.path}"


def _rate_key(sh: SharedLimits, name: str, t: Throttle) -> str:
    # the throttle's parameters are in the key, as KumoMTA advises: two
    # configurations never share one bucket with different arithmetic
    return f"{sh.cfg.prefix}:rate:{name}:{format_throttle(t)}"


def _fallback(sh: SharedLimits, key: str, t: Throttle) -> ThrottleState:
    """The local stand-in for a shared throttle: 1/nodes of its rate and burst."""
    state = sh.fallback.get(key)
    if state is None:
        n = sh.cfg.nodes
        share = Throttle(limit=t.limit, period=t.period * n, max_burst=max(1, t.burst // n))
        state = sh.fallback[key] = ThrottleState(share)
    return state


def _check_throttle(eng: Core, request: int, key: str, t: Throttle) -> None:
    eng.out.append(CheckThrottle(request=request, key=key, limit=t.limit, period=t.period,
                                 burst=t.burst))


# -- connections --------------------------------------------------------------


def may_open(eng: Core, rq: ReadyQueue, cfg: Any, now: float) -> bool:
    """Whether `rq` may open a connection now.  False: an ask is pending (its
    answer pumps the queue) or a ("shared", path) timer will."""
    sh: SharedLimits = eng.shared
    path = rq.path
    limit = cfg.connection_limit
    conn_shared = not getattr(limit, "local", False)
    rate = cfg.max_connection_rate
    rate_shared = rate is not None and not rate.local
    if not (conn_shared or rate_shared):
        return True
    if path in sh.granted:
        return True
    if conn_shared and sh.cfg.share == "even" and rq.open >= -(-int(limit) // sh.cfg.nodes):
        return False  # this node's even share is open; a closing one pumps again
    if path in sh.asking or ("shared", path) in eng.timers:
        return False
    if _down(sh, now):
        if sh.cfg.on_unavailable == "stop":
            eng.set_timer(("shared", path), sh.down_until)
            return False
        if conn_shared and rq.open >= max(1, limit // sh.cfg.nodes):
            return False
        if rate_shared:
            wait = _fallback(sh, _rate_key(sh, f"conn:{path}", rate), rate).check(now)
            if wait > 0.0:
                eng.set_timer(("shared", path), now + wait)
                return False
        return True
    if rate_shared and not sh.rate_ok.get(path):
        request = sh.asking[path] = _ask(sh, "rate", path)
        _check_throttle(eng, request, _rate_key(sh, f"conn:{path}", rate), rate)
        return False
    if conn_shared:
        request = sh.asking[path] = _ask(sh, "conn", path)
        lease = sh.lease_names[request] = f"{sh.cfg.node}:{sh.next_lease}"
        sh.next_lease += 1
        eng.out.append(AcquireLease(request=request, key=conn_key(sh, rq), limit=int(limit),
                                    lease=lease, ttl=sh.cfg.lease_ttl))
        return False
    sh.rate_ok.pop(path, None)
    return True


def bind(eng: Core, ctx: ConnCtx) -> None:
    """A connection opened on a granted lease holds it (and used the rate count)."""
    sh: SharedLimits = eng.shared
    path = ctx.rq.path
    held = sh.granted.pop(path, None)
    if held is not None:
        sh.leases[ctx.conn] = held
        sh.rate_ok.pop(path, None)


def hand_over(eng: Core, old: ConnCtx, new: ConnCtx) -> None:
    """`new` replaces `old` (next MX host, reconnect in clear): it keeps the lease."""
    sh: SharedLimits | None = eng.shared
    if sh is not None and old.conn in sh.leases:
        sh.leases[new.conn] = sh.leases.pop(old.conn)


def release(eng: Core, ctx: ConnCtx) -> None:
    """The connection is gone: its lease goes back to the store."""
    sh: SharedLimits = eng.shared
    held = sh.leases.pop(ctx.conn, None)
    sh.msg_ok.pop(ctx.conn, None)
    if held is not None:
        eng.out.append(ReleaseLease(key=held[0], lease=held[1]))


def unused(eng: Core, rq: ReadyQueue) -> None:
    """A granted lease that no connection took (the queue emptied meanwhile)."""
    sh: SharedLimits = eng.shared
    held = sh.granted.pop(rq.path, None)
    if held is not None:
        eng.out.append(ReleaseLease(key=held[0], lease=held[1]))


# -- messages -----------------------------------------------------------------


def _plan(eng: Core, rq: ReadyQueue) -> _Plan:
    """The path's message throttles split into local states and shared (key, throttle)."""
    sh: SharedLimits = eng.shared
    plan = sh.plans.get(rq.path)
    if plan is not None and plan[0] is rq.msg_throttles:
        return plan
    local: list[ThrottleState] = []
    shared: list[tuple[str, Throttle]] = []
    for state in rq.msg_throttles:
        t = state.throttle
        if t.local:
            local.append(state)
            continue
        name = f"msg:{rq.path}"
        if state is not rq.msg_throttle:
            name = next(n for n, s in eng.extra_msg_throttles.items() if s is state)
        shared.append((_rate_key(sh, name, t), t))
    plan = sh.plans[rq.path] = (rq.msg_throttles, tuple(local), tuple(shared))
    return plan


def local_throttles(eng: Core, rq: ReadyQueue, now: float) -> tuple[Any, ...]:
    """The message throttles this process enforces itself now: the ``local:`` ones,
    plus the 1/nodes stand-ins of the shared ones while the store is down."""
    sh: SharedLimits = eng.shared
    _, local, shared = _plan(eng, rq)
    if shared and _down(sh, now) and sh.cfg.on_unavailable == "local":
        return local + tuple(_fallback(sh, key, t) for key, t in shared)
    return local


def may_start(eng: Core, ctx: ConnCtx, now: float) -> float | None:
    """The shared throttles' verdict on the connection's message: 0.0 go on, a
    positive wait, or None while the store's answers are pending."""
    sh: SharedLimits = eng.shared
    conn = ctx.conn
    shared = _plan(eng, ctx.rq)[2]
    if conn in sh.msg_ok:
        return 0.0  # asked for this message already (its lease extended then)
    if not shared:
        # no throttle to ask, but the lease is still extended before each
        # message: a connection busy longer than lease_ttl would lose it, and
        # other nodes would open one more each
        held = sh.leases.get(conn)
        if held is not None and not _down(sh, now):
            eng.out.append(ExtendLease(key=held[0], lease=held[1], ttl=sh.cfg.lease_ttl))
        return 0.0
    if conn in sh.msg_waiting:
        return None
    if _down(sh, now):
        return sh.down_until - now if sh.cfg.on_unavailable == "stop" else 0.0
    held = sh.leases.get(conn)
    if held is not None:
        eng.out.append(ExtendLease(key=held[0], lease=held[1], ttl=sh.cfg.lease_ttl))
    sh.msg_waiting[conn] = [float(len(shared)), 0.0]
    for key, t in shared:
        _check_throttle(eng, _ask(sh, "msg", conn), key, t)
    return None


def started(eng: Core, ctx: ConnCtx) -> None:
    """The message's transaction started: its shared count is spent."""
    eng.shared.msg_ok.pop(ctx.conn, None)


# -- the store's health ---------------------------------------------------------


def store_failed(eng: Core, now: float, error: str) -> None:
    """The store did not answer: no asks for `retry` seconds; a record on a change."""
    sh: SharedLimits = eng.shared
    sh.down_until = now + sh.cfg.retry
    totals = eng.metrics.totals
    totals["total_shared_limit_errors"] = totals.get("total_shared_limit_errors", 0) + 1
    mode = STOPPED if sh.cfg.on_unavailable == "stop" else LOCAL
    if sh.mode != mode:
        sh.mode = mode
        _record(eng, now, mode, error)


def store_answered(eng: Core, now: float) -> None:
    """The store answered: back to shared limits if they were not."""
    sh: SharedLimits = eng.shared
    if sh.mode != SHARED:
        sh.mode = SHARED
        sh.fallback.clear()
        _record(eng, now, SHARED, "")


def _gauge(eng: Core, mode: str) -> None:
    """``shared_limits_mode{mode="..."}``: 1 for the mode in force, 0 for the others."""
    for m in (SHARED, STOPPED, LOCAL):
        eng.metrics.totals[f'shared_limits_mode{{mode="{m}"}}'] = int(m == mode)


def _record(eng: Core, now: float, mode: str, error: str) -> None:
    _gauge(eng, mode)
    eng.out.append(Log(record={
        "type": "SharedLimits", "mode": mode, "reason": error,
        "timestamp": eng.epoch + now, "created": eng.epoch + now,
    }))
