"""Ramp-up after a throttle-down: ``AdjustConfig`` and ``AdjustDomainConfig``.

What KumoMTA PR #594 proposes, in its spelling::

    action = {AdjustConfig = {name = "connection_limit", decrease_percent = 50,
                              floor_amount = 2, ramp_step_percent = 25,
                              ramp_up_interval = "5m"}}

A firing lowers the path's value of `name` (a count, or a throttle's limit)
by the decrease, not below the floor; once no matching response has come for
``ramp_up_interval``, it steps the value back up by the ramp step, then again
every interval, until the base (the config without this adjustment) is
reached and the adjustment ends.  A matching response during the ramp lowers
the value again (compounding) and restarts the wait.  Deliberately, a repeat
firing within one interval of the last decrease does not compound: the
responses in flight at that moment were sent under the old value, and an
``Immediate`` rule would otherwise walk the value to its floor on one burst.

``AdjustDomainConfig`` does the same on every source's path to the site.  A
key the path leaves unset (no ``max_message_rate``) has nothing to lower: the
action does nothing there.  The adjustment outlives the rule's `duration`
(which ends the firing's other actions): it ends when the ramp is done.

Each decrease, step and end is a decision: a ``Shaping`` record (``event``
``decreased``, ``increased``, ``restored``) and a metric
(``shaping_ramp_decreased``, ...); the steps are the engine timer
``("shaping", key)``, so sim, live and replay step at the same instants.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.core import Core
from engine.events import TimerFired
from engine.ready import ReadyQueue, ready_queue_name
from engine.shaping import ADJUST_ACTIONS, Action
from engine.shaping_acts import Automation, Firing, Ramp, record, rederive, show
from engine.throttle import Throttle

__all__ = ["DECREASED", "INCREASED", "RESTORED", "adjust", "ramps_in_force", "step"]

DECREASED, INCREASED, RESTORED = ("shaping_ramp_decreased", "shaping_ramp_increased",
                                  "shaping_ramp_restored")


def _count(value: Any) -> int | None:
    """The number an adjustment moves: a count, or a throttle's limit."""
    if isinstance(value, Throttle):
        return value.limit
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return None


def _as_config(base: Any, n: int) -> Any:
    """`n` in the shape of the base value (a throttle keeps its period)."""
    if isinstance(base, Throttle):
        burst = None if base.max_burst is None else max(1, base.max_burst * n // base.limit)
        return replace(base, limit=n, max_burst=burst)
    return n


def _base(eng: Core, rq: ReadyQueue, name: str) -> Any:
    """The path's value of `name` without any override (what the ramp returns to)."""
    base = eng.automation.overrides.base.get((rq.source_name, rq.site), rq.cfg)
    return getattr(base, name)


def adjust(eng: Core, auto: Automation, firing: Firing, rq: ReadyQueue, now: float) -> None:
    """A firing (first or repeat) on `rq` of a rule with AdjustConfig actions: lower."""
    for i, action in enumerate(firing.rule.actions):
        if action.kind not in ADJUST_ACTIONS:
            continue
        targets = [rq] if action.kind == "AdjustConfig" else [
            r for r in eng.paths.values() if r.site == firing.site]
        for target in targets:
            _lower(eng, auto, firing, i, action, target, now)


def _lower(eng: Core, auto: Automation, firing: Firing, index: int, action: Action,
           rq: ReadyQueue, now: float) -> None:
    name = str(action.name)
    base = _count(_base(eng, rq, name))
    if base is None:
        return
    rkey = (firing.rule.rule_id, index, rq.source_name, rq.site)
    key = auto.ramp_by.get(rkey)
    ramp = auto.ramps.get(key) if key is not None else None
    if ramp is None:
        key = auto.ramp_by[rkey] = auto.new_key()
        value = min(base, _count(getattr(rq.cfg, name)) or base)
        ramp = auto.ramps[key] = Ramp(key, firing.rule, index, rq.source_name, rq.site,
                                      value, now - action.value.interval, firing.line)
    ramp.line = firing.line
    ramp.next_at = now + ramp.adjust.interval
    eng.set_timer(("shaping", ramp.key), ramp.next_at)
    if now - ramp.last_cut < ramp.adjust.interval:
        return  # the responses of one burst lower it once (module docstring)
    lowered = ramp.adjust.lowered(ramp.value, base)
    ramp.last_cut = now
    if lowered == ramp.value:
        return  # at its floor already
    _set(eng, auto, ramp, lowered, base, now, DECREASED)


def _set(eng: Core, auto: Automation, ramp: Ramp, n: int, base: int, now: float,
         what: str) -> None:
    old, ramp.value = ramp.value, n
    slot = auto.overrides.by_path.setdefault((ramp.source, ramp.site), {})
    rq_base = None
    for rq in eng.paths.values():
        if rq.source_name == ramp.source and rq.site == ramp.site:
            rq_base = _base(eng, rq, ramp.name)
            break
    if what == RESTORED:
        slot.pop(ramp.key, None)
        if not slot:
            del auto.overrides.by_path[(ramp.source, ramp.site)]
    else:
        slot[ramp.key] = {ramp.name: _as_config(rq_base, n)}
    rederive(eng, {(ramp.source, ramp.site)}, now, lifted=what != DECREASED)
    record(eng, what, ramp.key, ramp.rule, ramp.source, ramp.site, now,
           action=show(ramp.action), name=ramp.name, value=n, previous=old, base=base,
           floor=ramp.adjust.floor_of(base),
           next_step=(None if what == RESTORED else int(eng.epoch + ramp.next_at)),
           response=ramp.line if what == DECREASED else None)


def step(eng: Core, ev: TimerFired) -> None:
    """("shaping", key) of a ramp: one step up, or the end at the base."""
    del eng.timers[ev.timer]
    auto: Automation = eng.automation
    ramp = auto.ramps[int(ev.timer[1])]
    now = ev.at
    rq = next((r for r in eng.paths.values()
               if r.source_name == ramp.source and r.site == ramp.site), None)
    base = None if rq is None else _count(_base(eng, rq, ramp.name))
    if base is None or ramp.value >= base or ramp.adjust.raised(ramp.value, base) >= base:
        del auto.ramps[ramp.key]
        del auto.ramp_by[(ramp.rule.rule_id, ramp.index, ramp.source, ramp.site)]
        _set(eng, auto, ramp, base if base is not None else ramp.value,
             base if base is not None else ramp.value, now, RESTORED)
        return
    ramp.next_at = now + ramp.adjust.interval
    eng.set_timer(("shaping", ramp.key), ramp.next_at)
    _set(eng, auto, ramp, ramp.adjust.raised(ramp.value, base), base, now, INCREASED)


def ramps_in_force(eng: Core) -> list[dict[str, Any]]:
    """The adjustments in force, as `shaping_rules.in_force` shows them."""
    auto: Automation | None = eng.automation
    if auto is None:
        return []
    return [{"rule": r.rule.rule_id, "path": ready_queue_name(r.source, r.site),
             "action": show(r.action),
             "name": r.name, "value": r.value, "next_step": eng.epoch + r.next_at,
             "response": r.line}
            for r in auto.ramps.values()]
