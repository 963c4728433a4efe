"""What an admin API rule does to one message: bounce it, or hold it back.

The admin API's scheduled queue suspensions and bounces (`engine.admin_rules`)
act on messages at two moments: when the rule is made (`engine.admin` walks
the queues) and when a message is promoted while the rule is in force
(`flow.promote` calls `intercept`).  Both end a message's turn here, so this
module sits below `flow` and above `lifecycle`: promotion reaches it without
importing the admin event handlers.
"""

from __future__ import annotations

from engine import metrics, records
from engine.admin_rules import Rule
from engine.core import Core
from engine.effects import Log
from engine.lifecycle import admin_bounce_one, finish
from engine.message import Message
from engine.ready import ReadyQueue
from engine.reply import Reply

__all__ = ["hold", "intercept", "rule_bounce"]


def intercept(eng: Core, msg: Message, now: float) -> bool:
    """At promotion, while a rule is in force: bounce or hold `msg` if one matches
    (True: it was taken)."""
    rules = eng.admin_rules
    rule = rules.bounce_for(msg.queue, now)
    if rule is not None:
        rule_bounce(eng, msg, now, rule.reason, rule)
        return True
    rule = rules.suspension_for(msg.queue, now)
    if rule is not None:
        hold(eng, msg, rule, now)
        return True
    return False


def rule_bounce(eng: Core, msg: Message, now: float, reason: str, rule: Rule | None,
                rq: ReadyQueue | None = None) -> None:
    """Bounce `msg` (AdminBounce record), counted on `rule`; a rule made with
    ``suppress_logging`` finishes it without a record, as KumoMTA does."""
    if rule is not None:
        rule.bounced[msg.queue.name] = rule.bounced.get(msg.queue.name, 0) + 1
        if rule.suppress_logging:
            eng.metrics.totals[metrics.ADMIN_BOUNCED] += 1
            finish(eng, msg)
            return
    admin_bounce_one(eng, msg, now, reason, rq)


def hold(eng: Core, msg: Message, rule: Rule, now: float,
         rq: ReadyQueue | None = None) -> None:
    """Back to scheduled until the suspension ends (or the message's max_age):
    a Delayed record, as KumoMTA logs for a suspended scheduled queue."""
    rule.held[msg.id] = True
    due = min(rule.expires, msg.created + msg.queue.config.max_age)
    reply = Reply.make(451, "4.4.0", f"Delayed due to AdminSuspend {rule.id}: {rule.reason}")
    eng.out.append(Log(record=records.make_record(
        records.DELAYED, msg, now, eng.epoch, reply,
        source=rq.source_name if rq is not None else None)))
    eng.sched.add(msg, due)
