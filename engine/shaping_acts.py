"""What a shaping rule's firing does, and the automation's state.

`engine.shaping_rules` decides when a rule fires and lapses; this module puts
a firing's actions in force and takes them away:

- ``SetConfig {name, value}``: the path's config gets the value;
- ``SetDomainConfig``: the same for every source's path to the site;
- ``Suspend``: the path is suspended (config ``suspended = true``);
- ``Backoff {config, deliveries}``: the config values on the path until the
  rule's duration passes or `deliveries` succeed there (counted by
  `shaping_rules.observe`), PowerMTA's backoff mode;
- ``SuspendTenant`` / ``SuspendCampaign``: a scheduled queue suspension of the
  triggering message's domain and tenant (and campaign), made and ended with
  the admin API's own machinery (`engine.admin_hold`): matching messages are
  held in the scheduled queue, not dropped, and released at the lapse;
- ``Bounce`` / ``BounceTenant`` / ``BounceCampaign``: an admin bounce of the
  domain (and tenant, and campaign): matching queued messages are bounced at
  once, each with an ``AdminBounce`` record, and new ones until the lapse.

These are the scopes KumoMTA's tsa-daemon gives them (crates/tsa-daemon,
``create_tenant_suspension`` and ``create_bounce``); a tenant action on a
message with no tenant does nothing, as there (the record says
``"enforced": false``).  ``AdjustConfig`` is `engine.shaping_ramp`'s.

Each decision is a ``Shaping`` log record (`record`) and a metric.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.admin_hold import bounce_where, hold_matching, release
from engine.admin_rules import BOUNCE, SUSPEND
from engine.admin_rules import Rule as AdminRule
from engine.config import to_plain
from engine.core import Core
from engine.dispatch import pump
from engine.effects import Log
from engine.message import QueueInfo
from engine.ready import ready_queue_name
from engine.shaping import BACKOFF, Action, Adjust, Backoff, Rule
from engine.shaping_paths import ANY_SOURCE, Overrides, reshape

__all__ = ["SHAPING_RECORD", "Automation", "Firing", "Ramp", "admin_actions", "apply", "record",
           "rederive", "restart_backoff", "show"]

SHAPING_RECORD = "Shaping"
_SCHED_SUSPEND = ("SuspendTenant", "SuspendCampaign")
_BOUNCES = ("Bounce", "BounceTenant", "BounceCampaign")


class Firing:
    """One rule in force on one path, until `until`; why (`line`, the matched
    response), the triggering message's queue, the admin entries it made and,
    in backoff mode, the deliveries still to succeed."""

    __slots__ = ("admin", "backoff_left", "enforced", "key", "line", "queue", "rule", "site",
                 "source", "until")

    def __init__(self, key: int, rule: Rule, source: str, site: str, queue: QueueInfo,
                 until: float, line: str) -> None:
        self.key, self.rule, self.source, self.site = key, rule, source, site
        self.queue, self.until, self.line = queue, until, line
        self.admin: list[str] = []  # ids of the admin entries its actions made
        self.backoff_left: int | None = None
        self.enforced = True  # False: a tenant action met a queue with no tenant


class Ramp:
    """One AdjustConfig in force on one path: `value` of config key `name`, stepping
    back up to the base every `adjust.interval` after the last matching response."""

    __slots__ = ("action", "adjust", "index", "key", "last_cut", "line", "name", "next_at",
                 "rule", "site", "source", "value")

    def __init__(self, key: int, rule: Rule, index: int, source: str, site: str,
                 value: int, last_cut: float, line: str) -> None:
        action = rule.actions[index]
        assert isinstance(action.value, Adjust) and action.name is not None
        self.key, self.rule, self.index, self.action = key, rule, index, action
        self.adjust: Adjust = action.value
        self.name: str = action.name
        self.source, self.site, self.value, self.line = source, site, value, line
        self.last_cut = last_cut  # when it was last lowered
        self.next_at = last_cut + self.adjust.interval  # the next ramp step


class Automation:
    """The automation's state: match windows, firings and ramps in force, overrides."""

    __slots__ = ("backoffs", "by_rule", "firings", "next_key", "overrides", "ramp_by", "ramps",
                 "rules", "windows")

    def __init__(self) -> None:
        self.windows: dict[tuple[str, str, str], deque[float]] = {}
        self.by_rule: dict[tuple[str, str, str], int] = {}  # (rule, source, site) -> key
        self.firings: dict[int, Firing] = {}
        self.overrides = Overrides()
        self.rules: dict[tuple[str, str], list[Rule]] = {}  # (domain, site) -> rules
        self.next_key = 1
        # (rule, action index, source, site) -> ramp key; key -> Ramp
        self.ramp_by: dict[tuple[str, int, str, str], int] = {}
        self.ramps: dict[int, Ramp] = {}
        # (source, site) -> keys of the firings in backoff mode there
        self.backoffs: dict[tuple[str, str], list[int]] = {}

    def new_key(self) -> int:
        key = self.next_key
        self.next_key += 1
        return key


def apply(eng: Core, auto: Automation, firing: Firing, now: float, *, on: bool) -> None:
    """Put the firing's actions in force (`on`) or take them away; re-derive the
    configs of the paths they touch."""
    ov = auto.overrides
    touched: set[tuple[str, str]] = set()
    for action in firing.rule.actions:
        vals: dict[str, Any]
        kind = action.kind
        if kind == "Suspend":
            vals, src = {"suspended": True}, firing.source
        elif kind == "SetConfig":
            vals, src = {str(action.name): action.value}, firing.source
        elif kind == "SetDomainConfig":
            vals, src = {str(action.name): action.value}, ANY_SOURCE
        elif kind == BACKOFF:
            assert isinstance(action.value, Backoff)
            vals, src = dict(action.value.config), firing.source
            _backoff_mode(auto, firing, action.value, on)
        else:  # suspensions and bounces: admin_actions, below; AdjustConfig: shaping_ramp
            continue
        slot = ov.by_path.setdefault((src, firing.site), {})
        if on:
            slot.setdefault(firing.key, {}).update(vals)
        else:
            slot.pop(firing.key, None)
            if not slot:
                del ov.by_path[(src, firing.site)]
        touched.add((src, firing.site))
    if on:
        admin_actions(eng, firing, firing.queue, now)
    else:
        for rule_id in firing.admin:
            _end_admin(eng, rule_id, now)
    rederive(eng, touched, now, lifted=not on)


def rederive(eng: Core, touched: set[tuple[str, str]], now: float, *, lifted: bool) -> None:
    """Re-derive the configs of the paths `touched` names; pump them when a limit was
    `lifted` (a lapse or a ramp step may let more go at once)."""
    if not touched:
        return
    ov: Overrides = eng.automation.overrides
    for rq in list(eng.paths.values()):
        if (rq.source_name, rq.site) in touched or (ANY_SOURCE, rq.site) in touched:
            reshape(eng, rq, ov)
            if lifted:
                pump(eng, rq, now)


def _backoff_mode(auto: Automation, firing: Firing, spec: Backoff, on: bool) -> None:
    path = (firing.source, firing.site)
    keys = auto.backoffs.setdefault(path, [])
    if on:
        firing.backoff_left = spec.deliveries
        if spec.deliveries is not None:
            keys.append(firing.key)
    elif firing.key in keys:
        keys.remove(firing.key)
    if not keys:
        del auto.backoffs[path]


def restart_backoff(firing: Firing) -> None:
    """A repeat firing in backoff mode: its deliveries are counted afresh."""
    for action in firing.rule.actions:
        if isinstance(action.value, Backoff) and action.value.deliveries is not None:
            firing.backoff_left = action.value.deliveries


def admin_actions(eng: Core, firing: Firing, queue: QueueInfo, now: float) -> None:
    """The firing's suspensions and bounces for the scope of `queue` (the message
    whose response fired it): a scope already covered is extended to the firing's
    end, a new one (another tenant, say) gets its own entry, as KumoMTA's
    tsa-daemon keys an entry by rule, action and the record's queue."""
    firing.enforced = True
    for rule_id in firing.admin:
        rule = eng.admin_rules.rules.get(rule_id)
        if rule is not None:
            rule.expires = firing.until
    for i, action in enumerate(firing.rule.actions):
        if action.kind in _SCHED_SUSPEND or action.kind in _BOUNCES:
            firing.enforced &= _admin_entry(eng, firing, i, action.kind, queue, now)


def _admin_entry(eng: Core, firing: Firing, index: int, kind: str, q: QueueInfo,
                 now: float) -> bool:
    """A scheduled queue suspension or a bounce, scoped as KumoMTA's tsa-daemon
    scopes it from the triggering record's queue; False: a tenant action and the
    queue has none (KumoMTA logs an error and makes nothing)."""
    tenant = q.tenant  # a plain Bounce takes the tenant too, when the queue has one
    if kind != "Bounce" and not tenant:
        return False
    campaign = q.campaign if kind.endswith("Campaign") else ""
    what = BOUNCE if kind in _BOUNCES else SUSPEND
    for rule_id in firing.admin:
        old = eng.admin_rules.rules.get(rule_id)
        if old is not None and (old.kind, old.domain, old.tenant, old.campaign) == (
                what, q.domain, tenant, campaign):
            return True  # in force already (extended above)
    regexes = [r.pattern for r in firing.rule.regex]
    reason = f"automation rule: {regexes[0] if len(regexes) == 1 else regexes} domain={q.domain}"
    reason += f" tenant={tenant}" if tenant else ""
    reason += f" campaign={campaign}" if campaign else ""
    rule_id = f"shaping-{firing.key}-{index}"
    if any(r.startswith(rule_id) for r in firing.admin):
        rule_id += f"-{len(firing.admin)}"
    rule = AdminRule(rule_id, what, reason, now, firing.until, domain=q.domain, tenant=tenant,
                     campaign=campaign)
    eng.admin_rules.add(rule)
    firing.admin.append(rule.id)
    if rule.kind == BOUNCE:
        bounce_where(eng, lambda m: rule.matches(m.queue), reason, now, rule)
    else:
        hold_matching(eng, rule, now)
    return True


def _end_admin(eng: Core, rule_id: str, now: float) -> None:
    rule = eng.admin_rules.remove(rule_id)  # None: cancelled through the admin API
    if rule is not None and rule.kind == SUSPEND:
        release(eng, rule, now)


def record(eng: Core, what: str, key: int, rule: Rule, source: str, site: str, now: float,
           **fields: Any) -> None:
    """A ``Shaping`` record and its metric (`what`: ``shaping_rule_fired``, ...)."""
    totals = eng.metrics.totals
    totals[what] = totals.get(what, 0) + 1
    rec: dict[str, Any] = {
        "type": SHAPING_RECORD,
        "id": f"shaping-{key}",
        "event": what.removeprefix("shaping_rule_").removeprefix("shaping_"),
        "rule": rule.rule_id,
        "site": ready_queue_name(source, site),
        "egress_source": source,
        "timestamp": int(eng.epoch + now),
        **fields,
    }
    eng.out.append(Log(record=rec))


def show(action: Action) -> Any:
    """One action as records and `egress check` show it."""
    if isinstance(action.value, Adjust):
        return {action.kind: {"name": action.name, **action.value.show()}}
    if isinstance(action.value, Backoff):
        b = action.value
        return {action.kind: {"config": to_plain(dict(b.config)), "deliveries": b.deliveries}}
    if action.name is None:
        return action.kind
    return {action.kind: {"name": action.name, "value": to_plain(action.value)}}
