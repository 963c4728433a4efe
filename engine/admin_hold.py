"""What an admin API rule does to one message: bounce it, or hold it back.

The admin API's scheduled queue suspensions and bounces (`engine.admin_rules`)
act on messages at two moments: when the rule is made (`engine.admin` walks
the queues) and when a message is promoted while the rule is in force
(`flow.promote` calls `intercept`).  Both end a message's turn here, so this
module sits below `flow` and above `lifecycle`: promotion reaches it without
importing the admin event handlers.
"""

from __future__ import annotations

from collections.abc import Callable

from engine import metrics, records
from engine.admin_rules import Rule
from engine.core import Core
from engine.effects import Log
from engine.lifecycle import admin_bounce_one, finish
from engine.message import HELD, Message
from engine.ready import ReadyQueue
from engine.reply import Reply

__all__ = ["bounce_where", "hold", "hold_matching", "intercept", "release", "rule_bounce"]


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


# -- a rule's moment of making and of ending (the admin API's and the shaping
# -- automation's, engine.admin and engine.shaping_acts)


def hold_matching(eng: Core, rule: Rule, now: float) -> None:
    """A suspension is made: the matching messages in ready queues go back to
    scheduled (those already scheduled are held when promoted, `intercept`)."""
    for rq in eng.paths.values():
        if rq.messages and any(rule.matches(m.queue) for m in rq.messages):
            keep = [m for m in rq.messages if not rule.matches(m.queue)]
            taken = [m for m in rq.messages if rule.matches(m.queue)]
            rq.messages.clear()
            rq.messages.extend(keep)
            for msg in taken:
                hold(eng, msg, rule, now, rq)


def release(eng: Core, rule: Rule, now: float) -> None:
    """A suspension ends: the messages it held are due at once (held again by
    another suspension still in force)."""
    if rule.held:
        held = rule.held
        for msg in eng.sched.remove_where(lambda m: m.id in held):
            eng.sched.add(msg, now)


def bounce_where(eng: Core, hit: Callable[[Message], bool], reason: str, now: float,
                 rule: Rule | None = None) -> None:
    """Bounce every queued message `hit` matches (scheduled, parked on DNS or
    ready); one held by a connection when it comes back."""
    victims: list[tuple[Message, ReadyQueue | None]] = [
        (m, None) for m in eng.sched.remove_where(hit)]
    for ds in eng.domains.values():
        if ds.parked:
            victims.extend((m, None) for m in ds.parked if hit(m))
            ds.parked = [m for m in ds.parked if not hit(m)]
    for rq in eng.paths.values():
        if rq.backlog is not None and len(rq.backlog):
            for m, n in rq.backlog.remove_if(hit):
                eng.silent_redelays[m.id] = eng.silent_redelays.get(m.id, 0) + n
                m._w = HELD
                victims.append((m, None))
        if rq.messages and any(hit(m) for m in rq.messages):
            victims.extend((m, rq) for m in rq.messages if hit(m))
            keep = [m for m in rq.messages if not hit(m)]
            rq.messages.clear()
            rq.messages.extend(keep)
    for conn in sorted(eng.conns):
        msg = eng.conns[conn].msg
        if msg is not None and msg.where == HELD and hit(msg):
            eng.bounce_on_return[msg.id] = reason
    for msg, in_rq in victims:
        rule_bounce(eng, msg, now, reason, rule, in_rq)
