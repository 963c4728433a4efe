"""A receiver that pushes back: per-source limits and a reputation, per host.

Large mailbox providers do not only fail at random: they watch each sending
address.  One that sends too fast, holds too many connections or draws
complaints is told so (``421 4.7.0 [TS01] Messages from 192.0.2.9
temporarily deferred ...``), and a damaged reputation makes every later
transaction likelier to be deferred until it recovers.  A scenario host
models that with a ``pushback`` table (`PushbackSpec`, read by
`build_pushback`); `Pushback` holds its state and `sim.host_behaviour`
consults it, so the simulator and the lab push back the same way.

Per source address the host keeps:

- its open connections: beyond ``connections`` the banner is
  ``connection_reply``;
- a GCRA on its accepted MAILs (`engine.throttle`, the same arithmetic the
  engine throttles with): a MAIL over ``message_rate`` is answered
  ``rate_reply`` and not counted;
- a reputation in [0, 1], starting at ``reputation``.  Each over-rate MAIL
  costs ``over_rate_penalty``; each delivered message costs
  ``complaint_rate * complaint_penalty`` (the expected loss from
  complaints, so it draws nothing); what was lost recovers with a half-life
  of ``recovery``.  A MAIL within the rate is deferred with
  ``reputation_reply`` with probability ``reputation_deferral * (1 -
  reputation)``, drawn only when that is above 0.

The source address is what the host sees: the peer's address in the lab,
the connection's ``source_address`` in the simulator, and `UNBOUND_SOURCE`
for a connection bound to none (loopback's own address, which is what the lab
sees then), so the two realisations name the same source in their replies.
``{source}`` in a reply is replaced with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.reply import Reply
from engine.throttle import Throttle, ThrottleState, parse_throttle

if TYPE_CHECKING:
    from sim.scenario_schema import Table

UNBOUND_SOURCE = "127.0.0.1"

# The default replies; ``{source}`` is the source address.
RATE_REPLY = Reply.make(421, "4.7.0", "[TS01] Messages from {source} temporarily deferred "
                        "due to unexpected volume or user complaints")
CONNECTION_REPLY = Reply.make(421, "4.7.0", "Too many concurrent connections from {source}")
REPUTATION_REPLY = Reply.make(421, "4.7.0", "[TSS04] Messages from {source} temporarily "
                              "deferred due to user complaints")


@dataclass(frozen=True, slots=True)
class PushbackSpec:
    """What a host enforces per source address (a ``pushback`` table)."""

    message_rate: Throttle | None = None
    rate_reply: Reply = RATE_REPLY
    connections: int | None = None
    connection_reply: Reply = CONNECTION_REPLY
    reputation: float = 1.0
    over_rate_penalty: float = 0.0
    complaint_rate: float = 0.0
    complaint_penalty: float = 0.0
    recovery: float = 3600.0
    reputation_deferral: float = 0.0
    reputation_reply: Reply = REPUTATION_REPLY
    preset: str | None = None


def build_pushback(t: Table) -> PushbackSpec | None:
    """A host's ``pushback`` table validated (a preset's fields under the
    table's own), or None when the host has none."""
    from sim.pushback_presets import PRESETS
    from sim.scenario_schema import Table

    value = t.raw("pushback", None)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise t.expected("pushback", "a table of pushback fields", value)
    preset = value.get("preset")
    data: dict[str, Any] = dict(value)
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise Table(value, t.where("pushback"), t.source).expected(
                "preset", "one of " + ", ".join(map(repr, sorted(PRESETS))), preset)
        data = {**PRESETS[preset], **value}
    p = Table(data, t.where("pushback"), t.source)
    p.raw("preset", None)
    rate = p.raw("message_rate", None)
    throttle = None
    if rate is not None:
        try:
            throttle = parse_throttle(rate, key="message_rate")
        except ValueError:
            raise p.expected("message_rate", 'a rate per source address such as "300/min"',
                             rate) from None
        if throttle.local:
            raise p.expected("message_rate", "a rate without local:", rate)
    recovery = p.duration("recovery", 3600.0)
    if recovery <= 0:
        raise p.expected("recovery", "a duration above 0 (the reputation's half-life)",
                         p.data["recovery"])
    spec = PushbackSpec(
        message_rate=throttle,
        rate_reply=p.reply("rate_reply", 4) if p.has("rate_reply") else RATE_REPLY,
        connections=p.integer("connections", None, minimum=1),
        connection_reply=(p.reply("connection_reply", 4) if p.has("connection_reply")
                          else CONNECTION_REPLY),
        reputation=p.probability("reputation", 1.0),
        over_rate_penalty=p.probability("over_rate_penalty", 0.0),
        complaint_rate=p.probability("complaint_rate", 0.0),
        complaint_penalty=p.probability("complaint_penalty", 0.0),
        recovery=recovery,
        reputation_deferral=p.probability("reputation_deferral", 0.0),
        reputation_reply=(p.reply("reputation_reply", 4) if p.has("reputation_reply")
                          else REPUTATION_REPLY),
        preset=preset,
    )
    p.finish()
    return spec


def _for(reply: Reply, source: str) -> Reply:
    if "{source}" not in reply.text:
        return reply
    return Reply(code=reply.code, text=reply.text.replace("{source}", source),
                 enhanced=reply.enhanced)


class _Source:
    """What a host holds about one source address."""

    __slots__ = ("at", "busy", "deferred", "deficit", "open", "over", "throttle")

    def __init__(self, spec: PushbackSpec, source: str, now: float) -> None:
        self.open = 0
        self.throttle = ThrottleState(spec.message_rate) if spec.message_rate else None
        self.deficit = 1.0 - spec.reputation  # lost reputation, as of `at`
        self.at = now
        self.over = _for(spec.rate_reply, source)
        self.busy = _for(spec.connection_reply, source)
        self.deferred = _for(spec.reputation_reply, source)


class Pushback:
    """One host's per-source state and tallies (`over_rate` MAILs refused for
    rate, `reputation_deferred` MAILs deferred for reputation, `turned_away`
    connections refused beyond the per-source count)."""

    __slots__ = ("_sources", "over_rate", "reputation_deferred", "spec", "turned_away")

    def __init__(self, spec: PushbackSpec) -> None:
        self.spec = spec
        self._sources: dict[str, _Source] = {}
        self.over_rate = 0
        self.reputation_deferred = 0
        self.turned_away = 0

    def _source(self, source: str, now: float) -> _Source:
        s = self._sources.get(source)
        if s is None:
            s = self._sources[source] = _Source(self.spec, source, now)
        return s

    def _deficit(self, s: _Source, now: float) -> float:
        """The lost reputation at `now`, recovered since it was last looked at."""
        if s.deficit > 0.0 and now > s.at:
            s.deficit *= 0.5 ** ((now - s.at) / self.spec.recovery)
        s.at = max(s.at, now)
        return s.deficit

    def _lose(self, s: _Source, now: float, amount: float) -> None:
        s.deficit = min(1.0, self._deficit(s, now) + amount)

    def reputation(self, source: str, now: float) -> float:
        """`source`'s reputation at `now` (1 for a source never seen)."""
        s = self._sources.get(source)
        return self.spec.reputation if s is None else 1.0 - self._deficit(s, now)

    def tallies(self) -> dict[str, int]:
        """The counts, for the lab's and the simulator's host counters."""
        return {"over_rate": self.over_rate, "reputation_deferred": self.reputation_deferred,
                "turned_away": self.turned_away}

    # -- what `HostBehaviour` asks -----------------------------------------------------

    def opened(self, source: str, banner: Reply, now: float) -> Reply:
        """A connection from `source` holds a slot; the banner it gets instead
        of `banner` (a 220) when the source holds its ``connections`` already."""
        s = self._source(source, now)
        s.open += 1
        limit = self.spec.connections
        if limit is not None and s.open > limit and banner.code == 220:
            self.turned_away += 1
            return s.busy
        return banner

    def closed(self, source: str) -> None:
        """A connection from `source` that `opened` counted has closed."""
        s = self._sources.get(source)
        if s is None or s.open <= 0:
            raise ValueError(f"closed({source!r}) without an open connection from it")
        s.open -= 1

    def mail(self, source: str, now: float, rng: random.Random) -> Reply | None:
        """A MAIL from `source` at `now`: the host's refusal, or None to go on."""
        s = self._source(source, now)
        if s.throttle is not None and s.throttle.peek(now) > 0.0:
            self.over_rate += 1
            self._lose(s, now, self.spec.over_rate_penalty)
            return s.over
        deferral = self.spec.reputation_deferral
        if deferral > 0.0:
            p = deferral * self._deficit(s, now)
            if p > 0.0 and rng.random() < p:
                self.reputation_deferred += 1
                return s.deferred
        return None

    def accepted(self, source: str, now: float) -> None:
        """A MAIL from `source` was accepted: it counts against the rate."""
        s = self._source(source, now)
        if s.throttle is not None:
            s.throttle.check(now)

    def delivered(self, source: str, now: float) -> None:
        """A message from `source` was accepted: its expected complaints cost."""
        loss = self.spec.complaint_rate * self.spec.complaint_penalty
        if loss > 0.0:
            self._lose(self._source(source, now), now, loss)


__all__ = ["CONNECTION_REPLY", "RATE_REPLY", "REPUTATION_REPLY", "UNBOUND_SOURCE", "Pushback",
           "PushbackSpec", "build_pushback"]
