"""The admin rules in force: suspensions (of scheduled or ready queues) and bounces.

KumoMTA keeps three lists an operator edits through its HTTP API: scheduled
queue suspensions (``/api/admin/suspend/v1``), ready queue suspensions
(``/api/admin/suspend-ready-q/v1``) and bounces (``/api/admin/bounce/v1``),
each entry with an id, a reason and an expiry.  Here they are engine state,
changed only by admin events (`engine.admin`), so a restart or a replay
rebuilds them from the journal, and each expiry is an engine timer
(``("admin", id)``) that fires at the same absolute time after a restart.

This module holds only the values and the matching; what a rule does to
messages is `engine.admin`'s.  Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.message import QueueInfo

__all__ = ["BOUNCE", "SUSPEND", "SUSPEND_READY_Q", "AdminRules", "Rule"]

SUSPEND = "suspend"
SUSPEND_READY_Q = "suspend-ready-q"
BOUNCE = "bounce"


@dataclass(slots=True)
class Rule:
    """One entry: its criteria (empty: any), reason, when it was made and ends.

    `name` is the ready queue of a ready queue suspension.  `bounced` counts
    the messages a bounce took, by scheduled queue name; `held` the ids of the
    messages a suspension holds (so lifting it releases exactly those).
    """

    id: str
    kind: str
    reason: str
    created: float
    expires: float
    domain: str = ""
    tenant: str = ""
    campaign: str = ""
    routing_domain: str = ""
    queue_names: tuple[str, ...] = ()
    name: str = ""
    suppress_logging: bool = False
    bounced: dict[str, int] = field(default_factory=dict)
    held: dict[str, bool] = field(default_factory=dict)

    def matches(self, q: QueueInfo) -> bool:
        """Whether a message of scheduled queue `q` is within this rule's criteria."""
        return ((not self.domain or q.domain == self.domain)
                and (not self.tenant or q.tenant == self.tenant)
                and (not self.campaign or q.campaign == self.campaign)
                and (not self.routing_domain or q.routing_domain == self.routing_domain)
                and (not self.queue_names or q.name in self.queue_names))

    @property
    def total_bounced(self) -> int:
        return sum(self.bounced.values())


class AdminRules:
    """Every rule in force, by id (insertion order: the order they were made)."""

    __slots__ = ("active", "rules")

    def __init__(self) -> None:
        self.rules: dict[str, Rule] = {}
        # whether a promoted message must be checked (a suspension or bounce of
        # scheduled queues is in force): the promotion path's one test, a plain
        # attribute so that it costs nothing while no rule is
        self.active = False

    def add(self, rule: Rule) -> None:
        self.rules[rule.id] = rule
        self.active = any(r.kind != SUSPEND_READY_Q for r in self.rules.values())

    def remove(self, rule_id: str) -> Rule | None:
        rule = self.rules.pop(rule_id, None)
        self.active = any(r.kind != SUSPEND_READY_Q for r in self.rules.values())
        return rule

    def of_kind(self, kind: str) -> list[Rule]:
        return [r for r in self.rules.values() if r.kind == kind]

    # An entry whose expiry is reached no longer matches, even before its timer
    # fires: a message due at that very moment must not be held (or bounced)
    # again by a rule that is ending.

    def bounce_for(self, q: QueueInfo, now: float) -> Rule | None:
        """The first bounce rule in force at `now` matching queue `q`, if any."""
        for r in self.rules.values():
            if r.kind == BOUNCE and r.expires > now and r.matches(q):
                return r
        return None

    def suspension_for(self, q: QueueInfo, now: float) -> Rule | None:
        """The suspension in force at `now` of queue `q` that lasts longest, if any."""
        best = None
        for r in self.rules.values():
            if r.kind == SUSPEND and r.expires > now and r.matches(q) and (
                    best is None or r.expires > best.expires):
                best = r
        return best

    def ready_q_suspended(self, name: str) -> bool:
        return any(r.kind == SUSPEND_READY_Q and r.name == name for r in self.rules.values())
