"""Admin events: Suspend, Resume, Bounce, Drain, and KumoMTA's admin API as rules.

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
- The HTTP API's entries (`engine.admin_rules`), each with an id and an
  absolute expiry armed as the timer ``("admin", id)``:
  ``AdminSuspend`` holds the messages of matching scheduled queues (those in
  ready queues go back to scheduled, newly promoted ones are held on
  promotion: `engine.admin_hold.intercept`) until it ends, then releases them
  at once; ``AdminSuspendReadyQ`` is ``Suspend`` of one ready queue with an
  expiry; ``AdminBounceRule`` bounces matching mail now and newly promoted
  mail until it ends; ``AdminCancel`` ends any of them early.
- ``PolicyReloaded``: the driver installed a new policy; every path and queue
  config is asked again at once (KumoMTA's config epoch), all answers taken
  before any is installed.  Shaping files the new policy carries (re-read by
  the driver) replace the engine's; the shaping values and the automation's
  overrides in force stay on top of the new answers.
"""

from __future__ import annotations

import math
from typing import Any

from engine.admin_hold import bounce_where, hold_matching, release
from engine.admin_rules import BOUNCE, SUSPEND, SUSPEND_READY_Q, Rule
from engine.core import Core
from engine.dispatch import pump, quit_session
from engine.errors import ProtocolError
from engine.events import (
    AdminBounceRule,
    AdminCancel,
    AdminSuspend,
    AdminSuspendReadyQ,
    Bounce,
    Drain,
    PolicyReloaded,
    Resume,
    Suspend,
)
from engine.lookups import DEFAULT_POOL
from engine.message import Message
from engine.ready import canonical_path, config_due
from engine.shaping_paths import shaped
from engine.throttle import ThrottleState

__all__ = ["admin_bounce_rule", "admin_cancel", "admin_suspend", "admin_suspend_ready_q",
           "bounce", "drain", "expired", "policy_reloaded", "resume", "suspend"]


def suspend(eng: Core, ev: Suspend) -> None:
    path = canonical_path(ev.path)
    eng.suspended_paths[path] = True
    rq = eng.paths.get(path)
    if rq is not None:
        rq.suspended = True


def resume(eng: Core, ev: Resume) -> None:
    path = canonical_path(ev.path)
    eng.suspended_paths.pop(path, None)
    rq = eng.paths.get(path)
    if rq is not None:
        rq.suspended = False
        pump(eng, rq, ev.at)


def bounce(eng: Core, ev: Bounce) -> None:
    domain = ev.domain.lower()
    queue = ev.queue

    def hit(msg: Message) -> bool:
        return (not domain or msg.queue.domain == domain) and (not queue or
                                                               msg.queue.name == queue)

    bounce_where(eng, hit, ev.reason, ev.at)


def drain(eng: Core, ev: Drain) -> None:
    eng.draining = True
    for ctx in list(eng.conns.values()):
        if ctx.idle and not ctx.closing:
            quit_session(eng, ctx, ev.at)


# -- KumoMTA's admin API entries (engine.admin_rules) ------------------------------


def _new_rule(eng: Core, rule: Rule) -> None:
    if rule.id in eng.admin_rules.rules:
        raise ProtocolError(f"engine cannot handle an admin entry {rule.id!r} in state "
                            f"IN_FORCE: the id is already in use") from None
    eng.admin_rules.add(rule)
    eng.set_timer(("admin", rule.id), rule.expires)


def admin_suspend(eng: Core, ev: AdminSuspend) -> None:
    """Hold the matching scheduled queues; their ready messages go back to scheduled."""
    rule = Rule(ev.id, SUSPEND, ev.reason, ev.at, ev.expires, domain=ev.domain.lower(),
                tenant=ev.tenant, campaign=ev.campaign, queue_names=ev.queue_names)
    _new_rule(eng, rule)
    hold_matching(eng, rule, ev.at)


def admin_suspend_ready_q(eng: Core, ev: AdminSuspendReadyQ) -> None:
    _new_rule(eng, Rule(ev.id, SUSPEND_READY_Q, ev.reason, ev.at, ev.expires, name=ev.name))
    suspend(eng, Suspend(at=ev.at, path=ev.name))


def admin_bounce_rule(eng: Core, ev: AdminBounceRule) -> None:
    """Bounce what matches now; `intercept` bounces what arrives until it ends."""
    rule = Rule(ev.id, BOUNCE, ev.reason, ev.at, ev.expires, domain=ev.domain.lower(),
                tenant=ev.tenant, campaign=ev.campaign,
                routing_domain=ev.routing_domain.lower(), queue_names=ev.queue_names,
                suppress_logging=ev.suppress_logging)
    _new_rule(eng, rule)
    bounce_where(eng, lambda m: rule.matches(m.queue), ev.reason, ev.at, rule)


def admin_cancel(eng: Core, ev: AdminCancel) -> None:
    if ev.id not in eng.admin_rules.rules:
        raise ProtocolError(f"engine cannot handle AdminCancel({ev.id!r}) in state UNKNOWN: "
                            "no admin entry has that id") from None
    eng.cancel_timer(("admin", ev.id))
    _end(eng, ev.id, ev.at)


def expired(eng: Core, rule_id: str, now: float) -> None:
    """The ("admin", id) timer: the entry's expiry is reached."""
    _end(eng, rule_id, now)


def _end(eng: Core, rule_id: str, now: float) -> None:
    rules = eng.admin_rules
    rule = rules.remove(rule_id)
    if rule is None:
        return
    if rule.kind == SUSPEND:
        release(eng, rule, now)
    elif rule.kind == SUSPEND_READY_Q and not rules.ready_q_suspended(rule.name):
        resume(eng, Resume(at=now, path=rule.name))


def policy_reloaded(eng: Core, ev: PolicyReloaded) -> None:
    """Ask every path and queue config of the (new) policy, then install them all."""
    policy = eng.policy
    paths = [(rq, policy.egress_path_config(rq.domain, rq.source_name, rq.site))
             for rq in eng.paths.values()]
    queues = [(q, policy.queue_config(q.domain, q.tenant, q.campaign, q.routing_domain))
              for q in eng.queues.values()]
    now = ev.at
    shaping = getattr(policy, "shaping", None)
    if shaping is not None:  # shaping files re-read with the policy replace the old ones
        eng.shaping = shaping
        if eng.automation is not None:
            eng.automation.rules.clear()
    if eng.shaping is not None:  # the files' values and the overrides in force stay on top
        paths = [(rq, shaped(eng, cfg, rq.domain, rq.source_name, rq.site)) for rq, cfg in paths]
    eng.path_cfgs.clear()
    eng.pools.clear()
    eng.sources.clear()
    for q, qcfg in queues:
        if qcfg != q.config:
            rate: Any = getattr(qcfg, "max_message_rate", None)
            if rate != getattr(q.config, "max_message_rate", None):
                q.throttle = None if rate is None else ThrottleState(rate)
            q.config = qcfg
            q.pool = eng.intern(qcfg.egress_pool or DEFAULT_POOL)
    for rq, cfg in paths:
        old = rq.cfg
        rq.cfg = cfg
        rq.cfg_at = now
        if cfg != old:
            eng.refresh_throttles(rq, old)
    eng.refresh_at = min((config_due(cfg, now) for _, cfg in paths), default=math.inf)
    for rq, _ in paths:
        pump(eng, rq, now)
