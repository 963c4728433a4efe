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
lapse is the engine timer ``("shaping", n)``.  What a firing does is
`engine.shaping_acts`' (SetConfig, SetDomainConfig, Suspend, the tenant and
campaign suspensions, the bounces, Backoff) and `engine.shaping_ramp`'s
(AdjustConfig: lower, then ramp back up); docs/SHAPING.md has the whole list.

A rule with a ``Backoff`` action leaves backoff mode early when its
``deliveries`` succeed on the path: `observe` counts them.

Each firing, extension and lapse is a ``Shaping`` log record and a metric
(``shaping_rule_fired``, ``shaping_rule_extended``, ``shaping_rule_lapsed``).
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any

from engine.config import to_plain
from engine.core import Core
from engine.events import TimerFired
from engine.message import Message
from engine.ready import ReadyQueue, ready_queue_name
from engine.reply import Reply
from engine.shaping import ADJUST_ACTIONS, Rule
from engine.shaping_acts import (
    SHAPING_RECORD,
    Automation,
    Firing,
    admin_actions,
    apply,
    record,
    restart_backoff,
    show,
)
from engine.shaping_paths import site_of
from engine.shaping_ramp import adjust, ramps_in_force, step

__all__ = ["SHAPING_RECORD", "Automation", "Firing", "describe", "in_force", "lapse", "observe"]

FIRED, EXTENDED, LAPSED = "shaping_rule_fired", "shaping_rule_extended", "shaping_rule_lapsed"
_INTERNAL = "KumoMTA internal: "


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
    auto: Automation = eng.automation
    if auto.backoffs and reply.code < 300:
        _delivered(eng, auto, rq, now)
    rules = _rules(eng, msg.queue.domain, rq)
    if not rules:
        return
    line = one_line(reply)
    internal = reply.text.startswith(_INTERNAL)
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
        firing.line = line
        admin_actions(eng, firing, msg.queue, now)
        restart_backoff(firing)  # a new pattern in backoff mode: the count starts again
        _record(eng, firing, EXTENDED, now, line)
    else:
        key = auto.by_rule[fkey] = auto.new_key()
        firing = auto.firings[key] = Firing(key, rule, rq.source_name, rq.site, msg.queue,
                                            until, line)
        apply(eng, auto, firing, now, on=True)
        _record(eng, firing, FIRED, now, line)
    eng.set_timer(("shaping", key), firing.until)
    if any(a.kind in ADJUST_ACTIONS for a in rule.actions):
        adjust(eng, auto, firing, rq, now)


def _delivered(eng: Core, auto: Automation, rq: ReadyQueue, now: float) -> None:
    """A delivery on a path in backoff mode: the firings whose count is reached end."""
    for key in list(auto.backoffs.get((rq.source_name, rq.site), ())):
        firing = auto.firings[key]
        assert firing.backoff_left is not None
        firing.backoff_left -= 1
        if firing.backoff_left <= 0:
            eng.cancel_timer(("shaping", key))
            _end(eng, auto, firing, now, "deliveries")


def lapse(eng: Core, ev: TimerFired) -> None:
    """("shaping", n): a firing's duration ended (its actions go), or a ramp's step."""
    auto: Automation = eng.automation
    key = int(ev.timer[1])
    if key in auto.ramps:
        step(eng, ev)
        return
    del eng.timers[ev.timer]
    _end(eng, auto, auto.firings[key], ev.at, "duration")


def _end(eng: Core, auto: Automation, firing: Firing, now: float, why: str) -> None:
    del auto.firings[firing.key]
    del auto.by_rule[(firing.rule.rule_id, firing.source, firing.site)]
    apply(eng, auto, firing, now, on=False)
    _record(eng, firing, LAPSED, now, None, why)


def in_force(eng: Core, source: str | None = None,
             site: str | None = None) -> list[dict[str, Any]]:
    """The rules in force, in firing order, then the adjustments ramping back, as
    plain values: what the admin API's resolve-egress-path and `egress check` show
    next to a path's config.  Each says why: the rule, the response it matched,
    until when (a ramp: its next step).  `source` and `site` keep those acting on
    that path (a SetDomainConfig acts on every source's path to its site)."""
    auto: Automation | None = eng.automation
    if auto is None:
        return []
    out = []
    for f in auto.firings.values():
        if site is not None and f.site != site:
            continue
        if source is not None and f.source != source and not any(
                a.kind == "SetDomainConfig" for a in f.rule.actions):
            continue
        out.append({"rule": f.rule.rule_id, "path": ready_queue_name(f.source, f.site),
                    "queue": f.queue.name, "actions": [show(a) for a in f.rule.actions],
                    "until": eng.epoch + f.until, "response": f.line,
                    "overrides": to_plain(auto.overrides.values(f.source, f.site)),
                    **({"admin": list(f.admin)} if f.admin else {}),
                    **({"deliveries_left": f.backoff_left}
                       if f.backoff_left is not None else {})})
    return out + [r for r in ramps_in_force(eng) if _on(r["path"], source, site)]


def describe(entry: dict[str, Any]) -> str:
    """One `in_force` entry as a line: the rule, the path, what it does, until when,
    the response that fired it."""
    when = datetime.fromtimestamp(entry.get("until", entry.get("next_step", 0.0)), tz=UTC)
    stamp = when.strftime("%Y-%m-%d %H:%M:%SZ")
    if "name" in entry:  # a ramp
        what = f"{entry['name']} lowered to {entry['value']}, next step up at {stamp}"
    else:
        acts = "; ".join(_act(a) for a in entry["actions"])
        what = f"{acts} until {stamp}"
        if "deliveries_left" in entry:
            what += f" or {entry['deliveries_left']} more deliveries"
    return f"{entry['rule']} on {entry['path']}: {what} (matched: {entry['response']})"


def _act(action: Any) -> str:
    if isinstance(action, str):
        return action
    (kind, arg), = action.items()
    if "value" in arg:
        return f"{kind} {arg['name']}={arg['value']}"
    return f"{kind} " + ", ".join(f"{k}={v}" for k, v in arg.items())


def _record(eng: Core, firing: Firing, what: str, now: float, line: str | None,
            why: str | None = None) -> None:
    rule = firing.rule
    record(eng, what, firing.key, rule, firing.source, firing.site, now,
           queue=firing.queue.name, actions=[show(a) for a in rule.actions],
           enforced=firing.enforced, until=int(eng.epoch + firing.until), response=line,
           **({"admin": list(firing.admin)} if firing.admin else {}),
           **({"reason": why} if why is not None else {}))


def _on(path: str, source: str | None, site: str | None) -> bool:
    """Whether the ready queue `path` is `source`'s path to `site` (None: any)."""
    src = path.partition("->")[0]
    return (source is None or src == source) and (site is None
                                                   or path == ready_queue_name(src, site))
