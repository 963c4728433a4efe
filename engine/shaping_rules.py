"""Traffic shaping automation inside the engine: rules see every response.

KumoMTA runs its automation in a separate daemon (tsa-daemon) that reads the
published log records and pushes overrides back over HTTP, so an override
lands at the next config refresh.  Here the engine itself sees each response
(`observe`, called where a reply becomes a record) and a firing takes effect
before the event returns, the same way in the simulator, live and in a replay.

Per rule and per ``source->site`` path, the times of the matching responses in
the rule's Threshold window are kept; an ``Immediate`` rule fires on the first
match, a ``Threshold = "N/period"`` rule when N matches lie within the period.
A firing holds for the rule's `duration` and a repeat firing extends it; the
lapse is the engine timer ``("shaping", n)``.  What a firing does:

- ``SetConfig {name, value}``: the path's config gets the value;
- ``SetDomainConfig``: the same for every source's path to the site;
- ``Suspend``: the path is suspended (config ``suspended = true``).

``SuspendTenant``, ``SuspendCampaign``, ``Bounce``, ``BounceTenant`` and
``BounceCampaign`` load, fire and lapse with their records, but are not acted
on yet (the record says ``"enforced": false``).

Each firing, extension and lapse is a ``Shaping`` log record and a metric
(``shaping_rule_fired``, ``shaping_rule_extended``, ``shaping_rule_lapsed``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.config import to_plain
from engine.core import Core
from engine.dispatch import pump
from engine.effects import Log
from engine.events import TimerFired
from engine.message import Message
from engine.ready import ReadyQueue, ready_queue_name
from engine.reply import Reply
from engine.shaping import Rule
from engine.shaping_paths import ANY_SOURCE, Overrides, reshape, site_of

__all__ = ["SHAPING_RECORD", "Automation", "in_force", "lapse", "observe"]

SHAPING_RECORD = "Shaping"
FIRED, EXTENDED, LAPSED = "shaping_rule_fired", "shaping_rule_extended", "shaping_rule_lapsed"
_ENFORCED = ("SetConfig", "SetDomainConfig", "Suspend")
_INTERNAL = "KumoMTA internal: "


class Firing:
    """One rule in force on one path, until `until`."""

    __slots__ = ("key", "queue", "rule", "site", "source", "until")

    def __init__(self, key: int, rule: Rule, source: str, site: str, queue: str,
                 until: float) -> None:
        self.key, self.rule, self.source, self.site = key, rule, source, site
        self.queue, self.until = queue, until


class Automation:
    """The automation's state: match windows, firings in force, overrides."""

    __slots__ = ("by_rule", "firings", "next_key", "overrides", "rules", "windows")

    def __init__(self) -> None:
        self.windows: dict[tuple[str, str, str], deque[float]] = {}
        self.by_rule: dict[tuple[str, str, str], int] = {}  # (rule, source, site) -> key
        self.firings: dict[int, Firing] = {}
        self.overrides = Overrides()
        self.rules: dict[tuple[str, str], list[Rule]] = {}  # (domain, site) -> rules
        self.next_key = 1


def one_line(reply: Reply) -> str:
    """The response as KumoMTA's to_single_line shows it to a rule."""
    return " ".join(str(reply).split())


def _rules(eng: Core, domain: str, rq: ReadyQueue) -> list[Rule]:
    auto: Automation = eng.automation
    key = (domain, rq.site)
    found = auto.rules.get(key)
    if found is None:
        ds = eng.domains.get(domain)
        hosts = [r.host for r in ds.mx] if ds is not None else None
        found = auto.rules[key] = eng.shaping.rules(domain, rq.site, hosts,
                                                    lambda d: site_of(eng, d))
    return found


def observe(eng: Core, rq: ReadyQueue, msg: Message, reply: Reply, now: float) -> None:
    """A response on `rq` for `msg`: count it for every rule it matches; fire
    the rules whose trigger is met."""
    if eng.automation is None:
        eng.automation = Automation()
    rules = _rules(eng, msg.queue.domain, rq)
    if not rules:
        return
    line = one_line(reply)
    internal = reply.text.startswith(_INTERNAL)
    auto: Automation = eng.automation
    for rule in rules:
        if not rule.matches(line, internal):
            continue
        th = rule.threshold
        if th is not None:
            wkey = (rule.rule_id, rq.source_name, rq.site)
            window = auto.windows.get(wkey)
            if window is None:
                window = auto.windows[wkey] = deque()
            window.append(now)
            while window[0] <= now - th.period:
                window.popleft()
            if len(window) < th.limit:
                continue
        _fire(eng, auto, rule, rq, msg, line, now)


def _fire(eng: Core, auto: Automation, rule: Rule, rq: ReadyQueue, msg: Message,
          line: str, now: float) -> None:
    until = now + rule.duration
    fkey = (rule.rule_id, rq.source_name, rq.site)
    key = auto.by_rule.get(fkey)
    if key is not None:
        firing = auto.firings[key]
        firing.until = max(firing.until, until)
        _record(eng, firing, EXTENDED, now, line)
    else:
        key = auto.by_rule[fkey] = auto.next_key
        auto.next_key += 1
        firing = auto.firings[key] = Firing(key, rule, rq.source_name, rq.site,
                                            msg.queue.name, until)
        _apply(eng, auto, firing, now, on=True)
        _record(eng, firing, FIRED, now, line)
    eng.set_timer(("shaping", key), firing.until)


def _apply(eng: Core, auto: Automation, firing: Firing, now: float, *, on: bool) -> None:
    """Put the firing's overrides in force (`on`) or take them away, then re-derive
    the configs of the paths they touch."""
    ov = auto.overrides
    touched: set[tuple[str, str]] = set()
    for action in firing.rule.actions:
        vals: dict[str, Any]
        if action.kind == "Suspend":
            vals, src = {"suspended": True}, firing.source
        elif action.kind == "SetConfig":
            vals, src = {str(action.name): action.value}, firing.source
        elif action.kind == "SetDomainConfig":
            vals, src = {str(action.name): action.value}, ANY_SOURCE
        else:
            continue
        slot = ov.by_path.setdefault((src, firing.site), {})
        if on:
            slot.setdefault(firing.key, {}).update(vals)
        else:
            slot.pop(firing.key, None)
            if not slot:
                del ov.by_path[(src, firing.site)]
        touched.add((src, firing.site))
    if not touched:
        return
    for rq in list(eng.paths.values()):
        if (rq.source_name, rq.site) in touched or (ANY_SOURCE, rq.site) in touched:
            reshape(eng, rq, ov)
            if not on:
                pump(eng, rq, now)


def lapse(eng: Core, ev: TimerFired) -> None:
    """("shaping", n): a firing's duration ended: its overrides go."""
    del eng.timers[ev.timer]
    auto: Automation = eng.automation
    firing = auto.firings.pop(int(ev.timer[1]))
    del auto.by_rule[(firing.rule.rule_id, firing.source, firing.site)]
    _apply(eng, auto, firing, ev.at, on=False)
    _record(eng, firing, LAPSED, ev.at, None)


def in_force(eng: Core) -> list[dict[str, Any]]:
    """The rules in force, in firing order, as plain values: what the admin API's
    resolve-egress-path and `egress check` show next to a path's config."""
    auto: Automation | None = eng.automation
    if auto is None:
        return []
    return [{"rule": f.rule.rule_id, "path": ready_queue_name(f.source, f.site), "queue": f.queue,
             "actions": [_show(a.kind, a.name, a.value) for a in f.rule.actions],
             "until": eng.epoch + f.until,
             "overrides": auto.overrides.values(f.source, f.site)}
            for f in auto.firings.values()]


def _record(eng: Core, firing: Firing, what: str, now: float, line: str | None) -> None:
    totals = eng.metrics.totals
    totals[what] = totals.get(what, 0) + 1
    rule = firing.rule
    rec: dict[str, Any] = {
        "type": SHAPING_RECORD,
        "id": f"shaping-{firing.key}",
        "event": what.removeprefix("shaping_rule_"),
        "rule": rule.rule_id,
        "site": ready_queue_name(firing.source, firing.site),
        "egress_source": firing.source,
        "queue": firing.queue,
        "actions": [_show(a.kind, a.name, a.value) for a in rule.actions],
        "enforced": all(a.kind in _ENFORCED for a in rule.actions),
        "until": int(eng.epoch + firing.until),
        "timestamp": int(eng.epoch + now),
        "response": line,
    }
    eng.out.append(Log(record=rec))


def _show(kind: str, name: str | None, value: Any) -> Any:
    if name is None:
        return kind
    return {kind: {"name": name, "value": to_plain(value)}}
