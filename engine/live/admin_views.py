"""Read-only JSON views of a running engine, in KumoMTA's API shapes.

Each function reads the engine between two events (the HTTP server runs on
the driver's loop) and returns plain values for `json.dumps`; none changes
anything.  The shapes are those of KumoMTA's ``kumo-api-types`` where an
endpoint exists there (ready-q-states, inspect-message, inspect-sched-q,
inspect-ready-q, resolve-egress-path, the suspend and bounce lists); the
queue summary and qshape are egress's own, what ``kcli queue-summary`` and
Postfix's ``qshape`` print, as data.

Ready queue names are KumoMTA's, ``source->site@smtp_client`` (the older
spelling without the suffix is accepted on input).  Differences, on purpose: a state's
``since`` is the time of the query (the engine does not keep when a state
began); durations are shown as ``"1h 2m 3s"`` strings.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from engine.admin_rules import BOUNCE, SUSPEND, SUSPEND_READY_Q, Rule
from engine.engine import Engine
from engine.live.metrics import parse_counter_key
from engine.message import HELD, PARKED, READY, Message
from engine.ready import canonical_path

__all__ = ["AGE_BUCKETS", "bounce_list", "find_message", "human_duration", "inspect_message",
           "inspect_ready_q", "inspect_sched_q", "iso", "metrics_json", "qshape",
           "queue_summary", "ready_q_name", "ready_q_states", "suspend_list",
           "suspend_ready_q_list"]

# qshape's age buckets (minutes), as Postfix's qshape prints them by default
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)


def iso(t: float) -> str:
    """Unix seconds as RFC 3339 UTC (``2026-12-07T05:00:00Z``)."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def human_duration(seconds: float) -> str:
    """``3723.4`` -> ``"1h 2m 3s"`` (KumoMTA's duration strings, whole seconds)."""
    s = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    if s or not parts:
        parts.append(f"{s}s")
    return " ".join(parts)


def ready_q_name(name: str) -> str:
    """A ready queue name as the engine spells it, KumoMTA's (`engine.ready.canonical_path`)."""
    return canonical_path(name)


# -- metrics ----------------------------------------------------------------------


def metrics_json(counters: Mapping[str, float]) -> dict[str, Any]:
    """KumoMTA's /metrics.json: name -> {help, type, value}; a labelled family's
    value nests by label name then label value (``{"path": {"a->b": 3}}``)."""
    out: dict[str, Any] = {}
    for key, value in counters.items():
        name, labels = parse_counter_key(key)
        entry = out.get(name)
        if entry is None:
            kind = "counter" if name.startswith(("total_", "delayed_due_to_")) else "gauge"
            entry = out[name] = {"help": f"egress engine counter {name}", "type": kind,
                                 "value": None}
        if not labels:
            if entry["value"] is None:
                entry["value"] = value
            continue
        if not isinstance(entry["value"], dict):
            entry["value"] = {}
        node = entry["value"]
        items = list(labels.items())
        for label, label_value in items[:-1]:
            node = node.setdefault(label, {}).setdefault(label_value, {})
        last, last_value = items[-1]
        node.setdefault(last, {})[last_value] = value
    return out


# -- the admin entries --------------------------------------------------------------


def suspend_list(eng: Engine, now: float) -> list[dict[str, Any]]:
    """GET /api/admin/suspend/v1: SuspendV1ListEntry per suspension in force."""
    return [{"id": r.id, "campaign": r.campaign or None, "tenant": r.tenant or None,
             "domain": r.domain or None, "reason": r.reason,
             "duration": human_duration(r.expires - now), "held": len(r.held)}
            for r in eng.admin_rules.of_kind(SUSPEND)]


def suspend_ready_q_list(eng: Engine, now: float) -> list[dict[str, Any]]:
    return [_ready_q_entry(r, now) for r in eng.admin_rules.of_kind(SUSPEND_READY_Q)]


def _ready_q_entry(r: Rule, now: float) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "reason": r.reason,
            "duration": human_duration(r.expires - now), "expires": iso(r.expires)}


def bounce_list(eng: Engine, now: float) -> list[dict[str, Any]]:
    return [bounce_entry(r, now) for r in eng.admin_rules.of_kind(BOUNCE)]


def bounce_entry(r: Rule, now: float) -> dict[str, Any]:
    return {"id": r.id, "campaign": r.campaign or None, "tenant": r.tenant or None,
            "domain": r.domain or None, "routing_domain": r.routing_domain or None,
            "reason": r.reason, "duration": human_duration(r.expires - now),
            "bounced": dict(r.bounced), "total_bounced": r.total_bounced}


# -- ready queues ---------------------------------------------------------------


def _states(eng: Engine, rq: Any, now: float) -> dict[str, dict[str, str]]:
    cfg = rq.cfg
    since = iso(now)
    states: dict[str, dict[str, str]] = {}
    if rq.suspended or cfg.suspended:
        why = "admin suspension" if rq.suspended else "path config suspended=true"
        states["suspended"] = {"context": why, "since": since}
    if rq.messages and rq.open >= cfg.connection_limit:
        states["connection_limited"] = {
            "context": f"{rq.open} connections, connection_limit {cfg.connection_limit}",
            "since": since}
    if rq.ready_timer is not None:
        states["connection_rate_throttled"] = {
            "context": f"next connection at {iso(rq.ready_timer)}", "since": since}
    if rq.failures >= cfg.consecutive_connection_failures_before_delay:
        states["connection_failures"] = {"context": f"{rq.failures} consecutive failures",
                                         "since": since}
    return states


def ready_q_states(eng: Engine, now: float, queues: list[str] | None = None) -> dict[str, Any]:
    """GET /api/admin/ready-q-states/v1: ReadyQueueStateResponse (queues with a state)."""
    wanted = {ready_q_name(q) for q in queues} if queues else None
    out = {}
    for path, rq in eng.paths.items():
        if wanted is not None and path not in wanted:
            continue
        states = _states(eng, rq, now)
        if states:
            out[path] = states
    return {"states_by_ready_queue": out}


def _per_path(counters: Mapping[str, float], name: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in counters.items():
        if key.startswith(name + "{"):
            found[parse_counter_key(key)[1].get("path", "")] = value
    return found


def queue_summary(eng: Engine, now: float) -> dict[str, Any]:
    """What ``kcli queue-summary`` prints: ready queues, then scheduled queues."""
    counters = eng.counters
    delivered = _per_path(counters, "total_messages_delivered")
    transient = _per_path(counters, "total_messages_transfail")
    failed = _per_path(counters, "total_messages_fail")
    ready = []
    for path, rq in sorted(eng.paths.items()):
        states = sorted(_states(eng, rq, now))
        ready.append({"name": path, "source": rq.source_name, "site": rq.site,
                      "connections": rq.open, "ready": len(rq.messages),
                      "in_flight": rq.held_count(), "state": states,
                      "delivered": int(delivered.get(path, 0)),
                      "transfail": int(transient.get(path, 0)),
                      "failed": int(failed.get(path, 0))})
    sched: dict[str, dict[str, Any]] = {}
    for msg in _scheduled(eng):
        q = msg.queue
        entry = sched.get(q.name)
        if entry is None:
            entry = sched[q.name] = {"name": q.name, "domain": q.domain, "tenant": q.tenant,
                                     "campaign": q.campaign, "scheduled": 0}
        entry["scheduled"] += 1
    return {"ready_queues": ready,
            "scheduled_queues": sorted(sched.values(), key=lambda e: (-e["scheduled"],
                                                                     e["name"]))}


def _scheduled(eng: Engine) -> list[Message]:
    """Scheduled and DNS-parked messages (not yet in a ready queue)."""
    found = list(eng.sched)
    for ds in eng.domains.values():
        found.extend(ds.parked)
    return found


def qshape(eng: Engine, now: float, buckets: tuple[int, ...] = AGE_BUCKETS) -> dict[str, Any]:
    """Scheduled messages by domain and age bucket (minutes), as Postfix's qshape:
    ``{"buckets": [...], "rows": [{"domain", "total", "counts": [...]}, ...]}``
    with a first row "TOTAL"; the last bucket is everything older."""
    rows: dict[str, list[int]] = defaultdict(lambda: [0] * (len(buckets) + 1))
    for msg in _scheduled(eng):
        age = (now - msg.created) / 60.0
        i = next((k for k, b in enumerate(buckets) if age < b), len(buckets))
        rows[msg.queue.domain][i] += 1
    total = [sum(col) for col in zip(*rows.values(), strict=True)] if rows else \
        [0] * (len(buckets) + 1)
    table = [{"domain": "TOTAL", "total": sum(total), "counts": total}]
    for domain, counts in sorted(rows.items(), key=lambda kv: (-sum(kv[1]), kv[0])):
        table.append({"domain": domain, "total": sum(counts), "counts": counts})
    labels = [str(b) for b in buckets] + [f"{buckets[-1]}+"]
    return {"buckets": labels, "rows": table}


# -- messages -------------------------------------------------------------------------


def find_message(eng: Engine, message_id: str) -> tuple[Message, str] | None:
    """The queued message `message_id` and where it is, or None."""
    if message_id not in eng.ids:
        return None
    for msg in eng.sched:
        if msg.id == message_id:
            return msg, "scheduled"
    for ds in eng.domains.values():
        for msg in ds.parked:
            if msg.id == message_id:
                return msg, "parked"
    for rq in eng.paths.values():
        for msg in rq.messages:
            if msg.id == message_id:
                return msg, f"ready:{rq.path}"
    for ctx in eng.conns.values():
        if ctx.msg is not None and ctx.msg.id == message_id:
            return ctx.msg, f"in_flight:{ctx.rq.path}"
    return None


def _info(msg: Message, where: str, body: Callable[[str], bytes] | None) -> dict[str, Any]:
    q = msg.queue
    rcpts = [msg.recipients] if isinstance(msg.recipients, str) else list(msg.recipients)
    info: dict[str, Any] = {
        "sender": msg.sender, "recipient": rcpts,
        "meta": {"queue": q.name, "domain": q.domain, "tenant": q.tenant or None,
                 "campaign": q.campaign or None, "routing_domain": q.routing_domain or None,
                 "size": msg.size, "created": iso(msg.created), "where": where},
        "num_attempts": msg.attempts,
    }
    w = msg.where
    if w not in (READY, HELD, PARKED) and msg.due is not None and math.isfinite(msg.due):
        info["due"] = iso(msg.due)
    if body is not None:
        try:
            info["data"] = body(msg.id).decode("utf-8", "replace")
        except KeyError:
            info["data"] = None
    return info


def inspect_message(eng: Engine, message_id: str,
                    body: Callable[[str], bytes] | None = None) -> dict[str, Any] | None:
    """GET /api/admin/inspect-message/v1: InspectMessageV1Response, or None."""
    found = find_message(eng, message_id)
    if found is None:
        return None
    return {"id": message_id, "message": _info(found[0], found[1], body)}


def inspect_sched_q(eng: Engine, queue_name: str, now: float, *, limit: int | None = None,
                    body: Callable[[str], bytes] | None = None) -> dict[str, Any] | None:
    """GET /api/admin/inspect-sched-q/v1: InspectQueueV1Response, or None if unknown."""
    q = eng.queues.get(queue_name)
    if q is None:
        return None
    msgs = [m for m in _scheduled(eng) if m.queue is q]
    shown = msgs if limit is None else msgs[:limit]
    return {"queue_name": queue_name,
            "messages": [{"id": m.id, "message": _info(m, "scheduled", body)} for m in shown],
            "num_scheduled": len(msgs), "queue_config": q.config.to_dict(),
            "delayed_metric": len(msgs), "now": iso(now), "last_changed": iso(now)}


def inspect_ready_q(eng: Engine, name: str, now: float) -> dict[str, Any] | None:
    """GET /api/admin/inspect-ready-q/v1: InspectReadyQV1Response, or None if unknown."""
    from engine.live.constraints import constraints

    rq = eng.paths.get(ready_q_name(name))
    if rq is None:
        return None
    by_pref: dict[str, list[str]] = {}
    for mx in rq.mx:
        by_pref.setdefault(str(mx.preference), []).append(mx.host)
    states = _states(eng, rq, now)
    suspended = next((_ready_q_entry(r, now) for r in eng.admin_rules.of_kind(SUSPEND_READY_Q)
                      if r.name == rq.path), None)
    return {"queue_name": rq.path,
            "mx": {"site_name": rq.site, "by_preference": by_pref, "is_mx": True,
                   "is_domain_literal": False, "is_secure": False},
            "egress_source": rq.source_name, "egress_pool": None, "protocol": "smtp_client",
            "state": {"ready_count": len(rq.messages), "connection_count": rq.open,
                      "connection_rate_throttled": states.get("connection_rate_throttled"),
                      "connection_limited": states.get("connection_limited"),
                      "suspended": suspended,
                      "in_flight": rq.held_count()},
            "path_config": rq.cfg.to_dict(), "constraints": constraints(rq.cfg, None),
            "scheduled_queues": sorted(Counter(m.queue.name for m in rq.messages))}
