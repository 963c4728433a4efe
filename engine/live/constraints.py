"""Throughput ceilings of an egress path, each naming the setting that sets it.

KumoMTA's ``EffectiveConstraints`` (crates/kumo-api-types/src/egress_path.rs):
``max_concurrent_dispatchers`` is connection_limit; ``max_message_rate`` the
smallest of max_message_rate, each additional_message_rate_throttles entry,
max_deliveries_per_connection x max_connection_rate (``reconnect_cycling``:
each connection carries at most that many messages and new ones are
throttled) and the scheduled queue's max_message_rate; ``max_connection_rate``
as configured.  Each ceiling is ``{value, source: {kind[, name]}, display}``,
rates in messages (or connections) per second.

Beyond KumoMTA, `resolve_egress_path` adds ``connection_ceiling``
(connection_limit / time per message, when the caller says how long a
message takes) and ``drain_estimate``: how long the backlog queued for the
path now takes at the tightest ceiling, the lower bound a simulation of the
same path would refine (``egress simulate`` with this policy).
"""

from __future__ import annotations

from typing import Any

from engine.engine import Engine
from engine.ready import ready_queue_name
from engine.shaping_rules import in_force

__all__ = ["constraints", "resolve_egress_path"]


def _ceiling(value: float, kind: str, display: str, name: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"kind": kind}
    if name is not None:
        source["name"] = name
    return {"value": value, "source": source, "display": display}


def constraints(cfg: Any, queue_cfg: Any) -> dict[str, Any]:
    """KumoMTA's EffectiveConstraints of path config `cfg` (and queue config)."""
    candidates = []
    declared = None
    if cfg.max_message_rate is not None:
        declared = str(cfg.max_message_rate)
        candidates.append(_ceiling(cfg.max_message_rate.per_second, "primary", declared))
    for name, thr in sorted(cfg.additional_message_rate_throttles.items()):
        candidates.append(_ceiling(thr.per_second, "additional", str(thr), name))
    conn_rate = cfg.max_connection_rate
    if conn_rate is not None:
        per = cfg.max_deliveries_per_connection
        candidates.append(_ceiling(per * conn_rate.per_second, "reconnect_cycling",
                                   f"max_deliveries_per_connection {per} x {conn_rate}"))
    qrate = getattr(queue_cfg, "max_message_rate", None) if queue_cfg is not None else None
    if qrate is not None:
        candidates.append(_ceiling(qrate.per_second, "other", str(qrate),
                                   "scheduled queue max_message_rate"))
    best = min(candidates, key=lambda c: c["value"]) if candidates else None
    return {
        "max_concurrent_dispatchers": _ceiling(float(cfg.connection_limit), "primary",
                                               str(cfg.connection_limit)),
        "max_message_rate": best,
        "max_message_rate_declared": declared if best is not None and declared is not None
        and best["source"]["kind"] != "primary" else None,
        "max_connection_rate": None if conn_rate is None else _ceiling(
            conn_rate.per_second, "primary", str(conn_rate)),
        "max_source_selection_rate": None,
    }


def resolve_egress_path(eng: Engine, domain: str, source: str, *,
                        time_per_message: float | None = None) -> dict[str, Any]:
    """GET /api/admin/resolve-egress-path/v1: ResolveEgressPathV1Response, from the
    policy in force now (a reload shows at once), plus the two estimates above.
    With shaping files, the path config is the one in force (the files' values and
    the automation's overrides on top) and ``shaping.in_force`` says which rules
    act on the path and why (docs/SHAPING.md)."""
    domain = domain.lower()
    policy = eng.policy
    qcfg = policy.queue_config(domain, "", "", "")
    ds = eng.domains.get(domain)
    site = ds.site if ds is not None and ds.site else domain
    cfg = policy.egress_path_config(domain, source, site)
    name = ready_queue_name(source, site)
    rq = eng.paths.get(name)
    shaping = eng.shaping
    if shaping is not None:  # the config in force: shaping values, automation overrides
        hosts = [r.host for r in ds.mx] if ds is not None else None
        cfg = rq.cfg if rq is not None else shaping.overlay(cfg, domain, source, site, hosts)
    mx = None
    if ds is not None and ds.site:
        by_pref: dict[str, list[str]] = {}
        for rec in ds.mx:
            by_pref.setdefault(str(rec.preference), []).append(rec.host)
        mx = {"site_name": site, "by_preference": by_pref, "is_mx": True,
              "is_domain_literal": False, "is_secure": False}
    out: dict[str, Any] = {"domain": domain, "source": source, "mx": mx, "queue_name": name,
                           "queue_config": qcfg.to_dict(), "path_config": cfg.to_dict(),
                           "constraints": constraints(cfg, qcfg)}
    rates = [c for c in (out["constraints"]["max_message_rate"],) if c is not None]
    if time_per_message is not None and time_per_message > 0:
        conn = _ceiling(cfg.connection_limit / time_per_message, "other",
                        f"connection_limit {cfg.connection_limit} / {time_per_message:g}s "
                        "per message", "connection_limit x time per message")
        out["connection_ceiling"] = conn
        rates.append(conn)
    if shaping is not None:
        out["shaping"] = {"files": list(shaping.files),
                          "in_force": in_force(eng, source=source, site=site)}
    backlog = (len(rq.messages) + rq.held_count()) if rq is not None else 0
    backlog += sum(1 for m in eng.sched if (m.queue.routing_domain or m.queue.domain) == domain)
    tightest = min(rates, key=lambda c: c["value"]) if rates else None
    out["drain_estimate"] = {
        "backlog": backlog,
        "seconds": (backlog / tightest["value"]) if tightest and tightest["value"] > 0 else None,
        "limited_by": tightest["source"] if tightest else None,
        # an estimate, not a forecast: what the engine does not know here (replies,
        # retries, DNS, the connection ramp) only makes the real drain slower
        "estimate": "lower_bound",
        "note": "backlog / tightest ceiling; ignores remote replies, retries, DNS and the "
                "connection ramp (simulate the policy for a figure that includes them)",
    }
    return out
