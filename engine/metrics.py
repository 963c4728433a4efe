"""Counters, named as KumoMTA names its metrics.

Totals are kept as plain ints and per-path / per-provider counts in dicts, so
bumping one is a dict operation on the hot path; `snapshot()` flattens them
into one dict only when someone reads ``eng.counters``:

- ``total_messages_delivered``, ``total_messages_transfail``,
  ``total_messages_fail``, ``delayed_due_to_ready_queue_full``,
  ``delayed_due_to_message_rate_throttle`` (a path's or a scheduled queue's
  max_message_rate held messages back), ``delayed_due_to_connection_rate_throttle``
  (a path's max_connection_rate pushed its ready queue back), ``ready_count``,
  ``connection_count`` (sums over paths), ``total_messages_expired``,
  ``total_messages_admin_bounced``, ``total_messages_received``,
  ``total_hook_failures`` (a policy hook raised or returned the wrong type; the
  engine went on, see `engine.lookups`);
- per path: ``name{path="source->site"}`` for ready_count, connection_count,
  the three totals, ``total_connection_count`` (connections ever made) and
  ``ready_full`` (messages its full ready queue turned away); per provider:
  ``name{provider="..."}`` for the totals; per scheduled queue:
  ``delayed_due_to_ready_queue_full{queue="..."}`` and
  ``delayed_due_to_message_rate_throttle{queue="..."}`` (KumoMTA's
  crates/kumod/src/queue/metrics.rs keeps them per ``queue`` only; egress keeps
  the unlabelled total in the flat dict too).

`kumo_families` turns that dict (plus the scheduled queues' depths) into
the metric families KumoMTA's kumod exports (crates/kumod/src/
metrics_helper.rs, crates/kumod/src/queue/metrics.rs): the same names,
``service="smtp_client:<ready queue>"`` labels (and ``service="smtp_client"``
for the sum, ``service="esmtp_listener"`` for receptions), ``_by_provider``
families, counters typed as counters, ``scheduled_count{queue=...}``.  A
path's series are pruned once the engine no longer has the path, as
KumoMTA's pruning registries drop the series of a reaped queue.
`render_text` writes them as kumod's /metrics does, `render_json` as its
/metrics.json (crates/kumo-prometheus/src/lib.rs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mypy_extensions import mypyc_attr

DELIVERED: Final = "total_messages_delivered"
TRANSFAIL: Final = "total_messages_transfail"
FAIL: Final = "total_messages_fail"
READY_FULL: Final = "delayed_due_to_ready_queue_full"
RATE_THROTTLED: Final = "delayed_due_to_message_rate_throttle"
CONN_RATE_THROTTLED: Final = "delayed_due_to_connection_rate_throttle"
EXPIRED: Final = "total_messages_expired"
ADMIN_BOUNCED: Final = "total_messages_admin_bounced"
RECEIVED: Final = "total_messages_received"
HOOK_FAILED: Final = "total_hook_failures"  # a policy hook raised or returned the wrong type
TOTAL_CONN = "total_connection_count"
WATCHDOG_ABORTED = "dispatcher_watchdog_aborted_total"  # engine.watchdog
READY_FULL_SVC = "ready_full"  # READY_FULL by ready queue (KumoMTA's ready_full{service})

TOTALS = (DELIVERED, TRANSFAIL, FAIL, READY_FULL, RATE_THROTTLED, CONN_RATE_THROTTLED, EXPIRED,
          ADMIN_BOUNCED, RECEIVED, HOOK_FAILED, TOTAL_CONN, WATCHDOG_ABORTED)
BY_PATH = (DELIVERED, TRANSFAIL, FAIL)


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class Counters:
    """Mutable counters; ready and connection counts are read from the queues."""

    __slots__ = ("by_path", "by_provider", "by_queue", "totals")

    def __init__(self) -> None:
        self.totals: dict[str, int] = dict.fromkeys(TOTALS, 0)
        self.by_path: dict[tuple[str, str], int] = {}
        self.by_provider: dict[tuple[str, str], int] = {}
        self.by_queue: dict[tuple[str, str], int] = {}

    def delayed(self, name: str, queue: str, path: str = "", n: int = 1) -> None:
        """A scheduled queue's message delayed `n` times for `name` (READY_FULL,
        RATE_THROTTLED): the total, the ``queue`` series, and for READY_FULL the
        path's ``ready_full`` series (KumoMTA's ready_full{service})."""
        self.totals[name] += n
        key = (name, queue)
        self.by_queue[key] = self.by_queue.get(key, 0) + n
        if path and name == READY_FULL:
            pkey = (READY_FULL_SVC, path)
            self.by_path[pkey] = self.by_path.get(pkey, 0) + n

    def bump(self, name: str, path: str = "", provider: str | None = None, n: int = 1) -> None:
        """Add `n` to `name`, and to its per-path / per-provider series when given."""
        self.totals[name] += n
        if path:
            key = (name, path)
            self.by_path[key] = self.by_path.get(key, 0) + n
        if provider:
            pkey = (name, provider)
            self.by_provider[pkey] = self.by_provider.get(pkey, 0) + n

    def snapshot(
        self, ready: dict[str, int], connections: dict[str, int]
    ) -> dict[str, int]:
        """One flat dict, keys sorted so two equal engines give equal dicts."""
        out: dict[str, int] = dict(self.totals)
        out["ready_count"] = sum(ready.values())
        out["connection_count"] = sum(connections.values())
        for path, n in ready.items():
            out[f'ready_count{{path="{path}"}}'] = n
        for path, n in connections.items():
            out[f'connection_count{{path="{path}"}}'] = n
        for (name, path), n in self.by_path.items():
            out[f'{name}{{path="{path}"}}'] = n
        for (name, provider), n in self.by_provider.items():
            out[f'{name}{{provider="{provider}"}}'] = n
        for (name, queue), n in self.by_queue.items():
            out[f'{name}{{queue="{queue}"}}'] = n
        return dict(sorted(out.items()))

    def prune_queues(self, live: Container[str]) -> None:
        """Drop the ``queue`` series of scheduled queues no longer in `live`
        (KumoMTA's PruningCounterRegistry drops a reaped queue's)."""
        for key in [k for k in self.by_queue if k[1] not in live]:
            del self.by_queue[key]


# -- KumoMTA's families ---------------------------------------------------------

CLIENT = "smtp_client"
LISTENER = "esmtp_listener"
_KEY = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([a-z_]+)="((?:[^"\\]|\\.)*)"\})?$')

# egress name -> (KumoMTA type, help: KumoMTA's own where it has the metric)
_HELP: dict[str, tuple[str, str]] = {
    DELIVERED: ("counter", "total number of messages ever delivered"),
    TRANSFAIL: ("counter", "total number of message delivery attempts that transiently failed"),
    FAIL: ("counter", "total number of message delivery attempts that permanently failed"),
    "ready_count": ("gauge", "number of messages in the ready queue"),
    "connection_count": ("gauge", "number of active connections"),
    RECEIVED: ("counter", "total number of messages ever received"),
    READY_FULL: ("counter", "Number of times a message was delayed due to the corresponding "
                 "ready queue being full."),
    RATE_THROTTLED: ("counter", "Number of times a message was delayed due to max_message_rate"),
    CONN_RATE_THROTTLED: ("counter", "egress: times a path's max_connection_rate pushed its "
                          "ready queue back"),
    EXPIRED: ("counter", "egress: total number of messages expired"),
    TOTAL_CONN: ("counter", "total number of active connections ever made"),
    WATCHDOG_ABORTED: ("counter", "total number of dispatcher tasks aborted by the progress "
                       "watchdog"),
    READY_FULL_SVC: ("counter", "number of times a message could not fit in the ready queue."),
    ADMIN_BOUNCED: ("counter", "egress: total number of messages administratively bounced"),
}
_BY_SERVICE = (DELIVERED, TRANSFAIL, FAIL, "ready_count", "connection_count", TOTAL_CONN,
               WATCHDOG_ABORTED)


@dataclass(frozen=True, slots=True)
@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class Family:
    """One metric family: `labels` names the label columns, each sample is
    (label values, value); no labels means one unlabelled sample."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], int], ...]


def service_of(path: str) -> str:
    """KumoMTA's service label of a ready queue: ``smtp_client:<source>-><site>@smtp_client``."""
    name = path if path.endswith("@" + CLIENT) else f"{path}@{CLIENT}"
    return f"{CLIENT}:{name}"


def scheduled_depths(queues: Iterable[Any]) -> dict[str, dict[Any, int]]:
    """Count scheduled messages by queue, domain, tenant and (tenant, campaign),
    from the `QueueInfo` of each scheduled message."""
    out: dict[str, dict[Any, int]] = {"queue": {}, "domain": {}, "tenant": {},
                                      "tenant_campaign": {}}
    for q in queues:
        for kind, key in (("queue", q.name), ("domain", q.domain), ("tenant", q.tenant),
                          ("tenant_campaign", (q.tenant, q.campaign))):
            bucket = out[kind]
            bucket[key] = bucket.get(key, 0) + 1
    return out


def provider_depths(eng: Any) -> dict[str, dict[tuple[str, ...], int]]:
    """KumoMTA's per-provider gauges, read from an engine at scrape time
    (crates/kumod/src/delivery_metrics.rs, queue/metrics.rs): the provider is
    the path's provider_name, else its site name.  ``connection_count_by_provider``
    (``_and_pool``) counts open connections; ``queued_count_by_provider``
    (``_and_pool``) the messages in ready queues plus those in scheduled queues
    whose site is known (a scheduled queue before its first resolve has none)."""
    conns: dict[tuple[str, ...], int] = {}
    queued: dict[tuple[str, ...], int] = {}
    provider_of_site: dict[str, str] = {}
    for rq in eng.paths.values():
        provider = rq.cfg.provider_name or rq.site
        provider_of_site.setdefault(rq.site, provider)
        pool = rq.pool
        for table, n in ((conns, rq.open_count()), (queued, len(rq.messages))):
            if n:
                table[(provider, pool)] = table.get((provider, pool), 0) + n
    domains = eng.domains
    for msg in list(eng.sched):
        q = msg.queue
        ds = domains.get(q.routing_domain or q.domain)
        site = None if ds is None else ds.site
        if site is not None:
            key = (provider_of_site.get(site, site), q.pool)
            queued[key] = queued.get(key, 0) + 1
    out: dict[str, dict[tuple[str, ...], int]] = {}
    for name, table in (("connection_count", conns), ("queued_count", queued)):
        by_provider: dict[tuple[str, ...], int] = {}
        for (provider, _pool), n in table.items():
            by_provider[(provider,)] = by_provider.get((provider,), 0) + n
        out[f"{name}_by_provider"] = by_provider
        out[f"{name}_by_provider_and_pool"] = dict(table)
    return out


_PROVIDER_HELP = {
    "connection_count_by_provider": ("number of active connections", ("provider",)),
    "connection_count_by_provider_and_pool": ("number of active connections",
                                              ("provider", "pool")),
    "queued_count_by_provider": ("number of messages in the scheduled and ready queue",
                                 ("provider",)),
    "queued_count_by_provider_and_pool": ("number of messages in the scheduled and ready queue",
                                          ("provider", "pool")),
}


def kumo_families(
    counters: Mapping[str, int], scheduled: Mapping[str, Mapping[Any, int]] | None = None,
    providers: Mapping[str, Mapping[tuple[str, ...], int]] | None = None,
) -> list[Family]:
    """The engine's counters (`Counters.snapshot`'s keys), scheduled depths
    (`scheduled_depths`) and provider gauges (`provider_depths`) as KumoMTA's
    families, sorted by name."""
    plain: dict[str, int] = {}
    labelled: dict[tuple[str, str], dict[str, int]] = {}
    for key, value in counters.items():
        m = _KEY.match(key)
        if m is None:
            raise ValueError(f"counter key {key!r} is not name or name{{label=\"value\"}}")
        name, label, text = m.groups()
        if label is None:
            plain[name] = value
        else:
            labelled.setdefault((name, label), {})[text] = value
    live = set(labelled.get(("ready_count", "path"), {})) | set(
        labelled.get(("connection_count", "path"), {}))
    out: list[Family] = []
    for name in _BY_SERVICE:
        kind, text = _HELP[name]
        rows = [((CLIENT,), plain.get(name, 0))]
        rows += [((service_of(p),), n) for p, n in sorted(labelled.get((name, "path"), {}).items())
                 if p in live]
        out.append(Family(name, kind, text, ("service",), tuple(rows)))
    for name in (DELIVERED, TRANSFAIL, FAIL):
        by = labelled.get((name, "provider"))
        if by:
            kind, text = _HELP[name]
            out.append(Family(f"{name}_by_provider", kind, text, ("provider",),
                              tuple(((p,), n) for p, n in sorted(by.items()))))
    out.append(Family(RECEIVED, *_HELP[RECEIVED], ("service",),
                      (((LISTENER,), plain.get(RECEIVED, 0)),)))
    out.append(Family(READY_FULL_SVC, *_HELP[READY_FULL_SVC], ("service",), tuple(
        ((service_of(p),), n) for p, n in sorted(labelled.get((READY_FULL_SVC, "path"), {}).items())
        if p in live)))
    for name in (READY_FULL, RATE_THROTTLED):  # per scheduled queue, as KumoMTA
        out.append(Family(name, *_HELP[name], ("queue",), tuple(
            ((q,), n) for q, n in sorted(labelled.get((name, "queue"), {}).items()))))
    for name in (CONN_RATE_THROTTLED, EXPIRED, ADMIN_BOUNCED):
        out.append(Family(name, *_HELP[name], (), (((), plain.get(name, 0)),)))
    for name, table in (providers or {}).items():
        text, labels = _PROVIDER_HELP[name]
        out.append(Family(name, "gauge", text, labels,
                          tuple((k, n) for k, n in sorted(table.items()))))
    if scheduled is not None:
        out.extend(_scheduled_families(scheduled))
    return sorted(out, key=lambda f: f.name)


def _scheduled_families(depths: Mapping[str, Mapping[Any, int]]) -> list[Family]:
    queue = depths.get("queue", {})
    fams = [
        Family("scheduled_count_total", "gauge",
               "total number of messages across all scheduled queues", (),
               (((), sum(queue.values())),)),
        Family("scheduled_count", "gauge", "number of messages in the scheduled queue",
               ("queue",), tuple(((k,), n) for k, n in sorted(queue.items()))),
        Family("scheduled_by_domain", "gauge",
               "number of messages in the scheduled queue for a specific domain", ("domain",),
               tuple(((k,), n) for k, n in sorted(depths.get("domain", {}).items()))),
        Family("scheduled_by_tenant", "gauge",
               "number of messages in the scheduled queue for a specific tenant", ("tenant",),
               tuple(((k,), n) for k, n in sorted(depths.get("tenant", {}).items()))),
        Family("scheduled_by_tenant_campaign", "gauge",
               "number of messages in the scheduled queue for a specific tenant and campaign",
               ("tenant", "campaign"),
               tuple((k, n) for k, n in sorted(depths.get("tenant_campaign", {}).items()))),
    ]
    return fams


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_text(families: Iterable[Family]) -> str:
    """Prometheus text exposition as kumod writes it: HELP, TYPE, then one line
    per sample, labels as ``{a="x", b="y"}``, values as integers."""
    lines: list[str] = []
    for f in families:
        lines.append(f"# HELP {f.name} {f.help}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for values, n in f.samples:
            if f.labels:
                pairs = ", ".join(f'{k}="{_escape(v)}"' for k, v in zip(f.labels, values,
                                                                        strict=True))
                lines.append(f"{f.name}{{{pairs}}} {n}")
            else:
                lines.append(f"{f.name} {n}")
    return "\n".join(lines) + "\n" if lines else ""


def render_json(families: Iterable[Family]) -> str:
    """kumod's /metrics.json: ``{name: {help, type, value}}`` where value is a
    number (no labels), ``{label: {value: n}}`` (one label), a list of
    ``{label: value, ..., "@": n}`` (several), or null (no series)."""
    doc: dict[str, Any] = {}
    for f in families:
        value: Any
        if not f.labels:
            value = f.samples[0][1] if f.samples else None
        elif not f.samples:
            value = None
        elif len(f.labels) == 1:
            value = {f.labels[0]: {vals[0]: n for vals, n in f.samples}}
        else:
            value = [{**dict(zip(f.labels, vals, strict=True)), "@": n} for vals, n in f.samples]
        doc[f.name] = {"help": f.help, "type": f.kind, "value": value}
    return json.dumps(doc)
