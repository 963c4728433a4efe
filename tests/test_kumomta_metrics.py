"""Metrics in kumod's names, labels, types and JSON shape.

Follows crates/kumod/src/metrics_helper.rs (connection_count, ready_count,
total_messages_* by ``service``, ``*_by_provider``, total_messages_received
for ``esmtp_listener``), crates/kumod/src/ready_queue.rs (service
``"{proto}:{name}"`` with the ready queue name ``source->site@smtp_client``),
crates/kumod/src/queue/metrics.rs (scheduled_count by ``queue``,
scheduled_count_total, scheduled_by_domain/tenant/tenant_campaign) and
crates/kumo-prometheus/src/lib.rs (text lines, and /metrics.json: a number, a
``{label: {value: n}}`` map, a list of ``{..., "@": n}``, or null).
"""

from __future__ import annotations

import json

from engine.message import QueueInfo
from engine.metrics import (
    Counters,
    kumo_families,
    render_json,
    render_text,
    scheduled_depths,
    service_of,
)

PATH = "unspecified->mx.example.com@smtp_client"


def engine_counters() -> dict[str, int]:
    c = Counters()
    c.bump("total_messages_delivered", PATH, "example", n=3)
    c.bump("total_messages_transfail", "ip2->gone.example", None)
    c.totals["total_messages_received"] = 4
    return c.snapshot({PATH: 2}, {PATH: 1})


def test_service_label_is_kumomta_ready_queue_name() -> None:
    assert service_of(PATH) == "smtp_client:unspecified->mx.example.com@smtp_client"
    assert service_of("a->b@smtp_client") == "smtp_client:a->b@smtp_client"


def test_text_names_labels_and_types() -> None:
    text = render_text(kumo_families(engine_counters()))
    svc = service_of(PATH)
    assert ("# HELP total_messages_delivered total number of messages ever delivered\n"
            "# TYPE total_messages_delivered counter\n"
            'total_messages_delivered{service="smtp_client"} 3\n'
            f'total_messages_delivered{{service="{svc}"}} 3\n') in text
    assert 'total_messages_delivered_by_provider{provider="example"} 3\n' in text
    assert f'connection_count{{service="{svc}"}} 1\n' in text
    assert "# TYPE connection_count gauge\n" in text
    assert f'ready_count{{service="{svc}"}} 2\n' in text
    assert 'total_messages_received{service="esmtp_listener"} 4\n' in text
    # a path the engine no longer has is pruned; its sum stays in service="smtp_client"
    assert "gone.example" not in text
    assert 'total_messages_transfail{service="smtp_client"} 1\n' in text
    assert "untyped" not in text and ".0\n" not in text


def test_scheduled_count_per_scheduled_queue() -> None:
    a = QueueInfo("spring:acme@example.com", "example.com", "acme", "spring", "", None, "p")
    b = QueueInfo("example.org", "example.org", "", "", "", None, "p")
    fams = kumo_families({}, scheduled_depths([a, a, b]))
    text = render_text(fams)
    assert 'scheduled_count{queue="spring:acme@example.com"} 2\n' in text
    assert 'scheduled_count{queue="example.org"} 1\n' in text
    assert "scheduled_count_total 3\n" in text
    assert 'scheduled_by_tenant_campaign{tenant="acme", campaign="spring"} 2\n' in text
    doc = json.loads(render_json(fams))
    assert doc["scheduled_count"] == {
        "help": "number of messages in the scheduled queue", "type": "gauge",
        "value": {"queue": {"example.org": 1, "spring:acme@example.com": 2}}}
    assert doc["scheduled_count_total"]["value"] == 3
    assert {"tenant": "acme", "campaign": "spring", "@": 2} in \
        doc["scheduled_by_tenant_campaign"]["value"]


def test_json_shape() -> None:
    doc = json.loads(render_json(kumo_families(engine_counters())))
    assert doc["connection_count"] == {
        "help": "number of active connections", "type": "gauge",
        "value": {"service": {"smtp_client": 1, service_of(PATH): 1}}}
    assert doc["total_messages_delivered"]["type"] == "counter"
    assert doc["delayed_due_to_ready_queue_full"]["value"] == 0
    empty = json.loads(render_json(kumo_families({}, scheduled_depths([]))))
    assert empty["scheduled_count"]["value"] is None
