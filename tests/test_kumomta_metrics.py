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
    assert doc["delayed_due_to_connection_rate_throttle"]["value"] == 0
    # a family kept per queue, with no queue delayed yet: null, as kumod writes it
    assert doc["delayed_due_to_ready_queue_full"]["value"] is None
    empty = json.loads(render_json(kumo_families({}, scheduled_depths([]))))
    assert empty["scheduled_count"]["value"] is None


def test_delay_counters_per_scheduled_queue_and_ready_full_per_service() -> None:
    # crates/kumod/src/queue/metrics.rs: delayed_due_to_* keyed by the scheduled
    # ``queue``; crates/kumod/src/metrics_helper.rs: ready_full{service} and
    # total_connection_count{service} (with the "smtp_client" sum)
    c = Counters()
    c.delayed("delayed_due_to_ready_queue_full", "example.com", PATH, n=2)
    c.delayed("delayed_due_to_ready_queue_full", "camp:t@example.com", PATH)
    c.delayed("delayed_due_to_message_rate_throttle", "example.com")
    c.bump("total_connection_count", PATH, n=4)
    snap = c.snapshot({PATH: 0}, {PATH: 0})
    assert snap["delayed_due_to_ready_queue_full"] == 3  # the flat total stays
    text = render_text(kumo_families(snap))
    svc = service_of(PATH)
    assert 'delayed_due_to_ready_queue_full{queue="example.com"} 2\n' in text
    assert 'delayed_due_to_ready_queue_full{queue="camp:t@example.com"} 1\n' in text
    assert 'delayed_due_to_message_rate_throttle{queue="example.com"} 1\n' in text
    assert "delayed_due_to_ready_queue_full 3" not in text
    assert f'ready_full{{service="{svc}"}} 3\n' in text
    assert "# TYPE ready_full counter\n" in text
    assert 'total_connection_count{service="smtp_client"} 4\n' in text
    assert f'total_connection_count{{service="{svc}"}} 4\n' in text
    c.prune_queues({"example.com"})
    assert "camp:t@example.com" not in render_text(kumo_families(c.snapshot({PATH: 0}, {})))


def test_provider_gauges_from_the_engine() -> None:
    # crates/kumod/src/delivery_metrics.rs: provider is provider_name, else the
    # site name; connection_count_by_provider(_and_pool) and
    # queued_count_by_provider(_and_pool) (ready plus scheduled)
    from engine.engine import Engine
    from engine.metrics import provider_depths
    from tests.support.engine_harness import World, policy, submit

    eng = Engine(policy(provider_name="bigmail", max_ready=1, connection_limit=1), seed=1)
    w = World(eng, auto_connect=False)
    for i in range(3):
        w.feed(submit(i))
    depths = provider_depths(eng)
    assert depths["connection_count_by_provider"] == {("bigmail",): 1}
    assert depths["connection_count_by_provider_and_pool"] == {("bigmail", "unspecified"): 1}
    held = 1  # the connection holds one; max_ready keeps one waiting; the rest are scheduled
    queued = 3 - held
    assert depths["queued_count_by_provider"] == {("bigmail",): queued}
    text = render_text(kumo_families({}, None, depths))
    assert 'connection_count_by_provider_and_pool{provider="bigmail", pool="unspecified"} 1' in text
    assert f'queued_count_by_provider{{provider="bigmail"}} {queued}' in text
    # without provider_name the site name stands in
    eng2 = Engine(policy(), seed=1)
    World(eng2, auto_connect=False).feed(submit(1))
    assert provider_depths(eng2)["connection_count_by_provider"] == {
        ("(mx1|mx2).example.com",): 1}


def test_the_engine_counts_delays_by_queue_and_connections_by_path() -> None:
    from engine.engine import Engine
    from tests.support.engine_harness import PATH as HPATH
    from tests.support.engine_harness import World, policy, submit

    eng = Engine(policy(max_ready=1, connection_limit=1), seed=1)
    w = World(eng, auto_connect=False)
    for i in range(4):
        w.feed(submit(i))
    c = eng.counters
    assert c['delayed_due_to_ready_queue_full{queue="example.com"}'] == 2
    assert c[f'ready_full{{path="{HPATH}"}}'] == 2
    assert c["total_connection_count"] == 0
    eng2 = Engine(policy(), seed=1)
    World(eng2).feed(submit(1))
    assert eng2.counters[f'total_connection_count{{path="{HPATH}"}}'] == 1
