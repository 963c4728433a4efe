"""May this egress source take this message now?  Selection rates and warm-up caps.

When a message is promoted, the pool's round robin picks a source; KumoMTA
then asks the path's selection throttles before the source may have it
(``get_source_selection_throttle_delay`` in crates/kumod/src/egress_source.rs):

- ``source_selection_rate`` is one GCRA throttle named
  ``kumomta.source_selection_rate.{ready queue}.{source}``, the ready queue
  written as KumoMTA names it (``source->site@smtp_client``);
- ``additional_source_selection_rates`` are throttles under names of the
  policy's choosing, so one name shared by several paths is one budget
  (a shaping file's ``provider_source_selection_rate`` becomes one such name
  per provider and source);
- they are checked from the smallest rate to the largest, and the first one
  spent makes the source ineligible for this pick (those before it have
  counted the pick, as KumoMTA's do).

egress adds warm-up caps (`engine.warmup`): a source with a plan in the
shaping files takes at most the day's (and the hour's) cap of messages per
provider.  A cap is looked at before the throttles and counted after them,
so a refused pick uses up no cap and a capped source spends no throttle.
A cap counts selections: every time the source takes a message into its
ready queue, a retry included, so deliveries through it never exceed it.

The counts are engine state (`Gates`, in ``eng.gates``): made from event
times only, kept in snapshots, rebuilt identically by a replay.  What the
promotion does with an ineligible source (the next one, or a delay) is
`engine.flow`'s.
"""

from __future__ import annotations

from typing import Any

from engine.core import Core
from engine.ready import ReadyQueue
from engine.throttle import Throttle, ThrottleState
from engine.warmup import PERIODS

__all__ = ["Gates", "admit", "gated", "provider_of", "reap", "throttle_names"]


class Gates:
    """The selection throttles by name, and the warm-up counts."""

    __slots__ = ("counts", "skipped", "throttles")

    def __init__(self) -> None:
        self.throttles: dict[str, ThrottleState] = {}
        # (source, provider, period) -> [end of the count's day or hour (Unix s),
        #                                 selections counted, the plan's day]
        self.counts: dict[tuple[str, str, str], list[Any]] = {}
        self.skipped = 0  # picks refused (a throttle spent or a cap reached)

    def count(self, source: str, provider: str, period: str) -> int:
        """Selections counted for (source, provider) in the current `period` bucket."""
        entry = self.counts.get((source, provider, period))
        return 0 if entry is None else int(entry[1])


def gated(eng: Core, rq: ReadyQueue) -> bool:
    """True when picking `rq`'s source must be asked of `admit`: the path has a
    selection rate, or the source a warm-up plan."""
    cfg = rq.cfg
    if cfg.source_selection_rate is not None or cfg.additional_source_selection_rates:
        return True
    plans = getattr(eng.shaping, "warmup", None)
    return bool(plans) and rq.source_name in plans  # type: ignore[operator]


def throttle_names(rq: ReadyQueue) -> list[tuple[str, Throttle]]:
    """The path's selection throttles as KumoMTA names them, in the order it
    checks them (smallest rate first; a tie keeps the configured order)."""
    cfg = rq.cfg
    found: list[tuple[str, Throttle]] = []
    if cfg.source_selection_rate is not None:
        found.append((f"kumomta.source_selection_rate.{rq.path}.{rq.source_name}",
                      cfg.source_selection_rate))
    found.extend(cfg.additional_source_selection_rates.items())
    found.sort(key=lambda item: int(item[1].limit / item[1].period * 1_000_000))
    return found


def provider_of(eng: Core, rq: ReadyQueue) -> str:
    """The provider a warm-up cap counts `rq` under: its config's provider_name
    (the policy's, or the matching shaping ``[provider]`` block's, which a path's
    config carries from its first ask: `engine.resolve` passes the MX hosts),
    else its site."""
    name: str | None = rq.cfg.provider_name
    return name or rq.site


def _gates(eng: Core) -> Gates:
    gates: Gates | None = eng.gates
    if gates is None:
        gates = eng.gates = Gates()
    return gates


def admit(eng: Core, rq: ReadyQueue, now: float) -> bool:
    """Whether `rq`'s source may take a message now; True counts the pick."""
    gates = _gates(eng)
    plans = getattr(eng.shaping, "warmup", None)
    plan = plans.get(rq.source_name) if plans else None
    entries = []
    if plan is not None:
        t = eng.epoch + now
        provider = provider_of(eng, rq)
        for period in PERIODS:
            schedule = plan.schedule(period, provider)
            if schedule is None:
                continue
            key = (rq.source_name, provider, period)
            entry = gates.counts.get(key)
            if entry is None or t >= entry[0]:
                entry = gates.counts[key] = [plan.bucket_end(period, t), 0, plan.day(t)]
            cap = schedule.cap(entry[2])
            if cap is not None and entry[1] >= cap:
                gates.skipped += 1
                return False
            entries.append(entry)
    for name, throttle in throttle_names(rq):
        state = gates.throttles.get(name)
        if state is None or state.throttle != throttle:
            state = gates.throttles[name] = ThrottleState(throttle)
        if state.check(now) > 0.0:
            gates.skipped += 1
            return False
    for entry in entries:
        entry[1] += 1
    return True


def reap(eng: Core, now: float) -> None:
    """Forget the throttles that no longer remember any use and the counts whose
    day or hour is over (`engine.lifecycle.reap_idle`)."""
    gates = eng.gates
    if gates is None:
        return
    for name, state in list(gates.throttles.items()):
        if state.tat <= now:
            del gates.throttles[name]
    t = eng.epoch + now
    for key, entry in list(gates.counts.items()):
        if t >= entry[0]:
            del gates.counts[key]
