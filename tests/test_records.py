"""Log records: KumoMTA's JSON shape, exactly (crates/kumo-log-types/src/lib.rs,
JsonLogRecord, in its serialisation order)."""

from __future__ import annotations

import json

from engine.message import Message, QueueInfo
from engine.records import make_record
from engine.reply import Reply

KUMO_ORDER = (
    "type", "id", "sender", "recipient", "queue", "site", "size", "response", "peer_address",
    "timestamp", "event_time", "created", "created_time", "num_attempts",
    "bounce_classification", "egress_pool", "egress_source", "source_address",
    "feedback_report", "meta", "headers", "delivery_protocol", "reception_protocol", "nodeid",
)
Q = QueueInfo("spring:acme@example.com", "example.com", "acme", "spring", "", None, "pool1")


def test_delivery_record_with_tls_and_provider() -> None:
    m = Message("id1", "s@x.org", ("a@example.com",), 1234, Q, 10.5)
    m.attempts = 2
    rec = make_record("Delivery", m, 20.9, 1_700_000_000.0, Reply.make(250, "2.0.0", "ok"),
                      site="src->mx.example.com", source="src",
                      peer=("mx.example.com", "192.0.2.1"),
                      command=".", tls=("TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=mx"),
                      provider="example")
    assert rec == {
        "type": "Delivery", "id": "id1", "sender": "s@x.org", "recipient": "a@example.com",
        "queue": "spring:acme@example.com", "site": "src->mx.example.com", "size": 1234,
        "response": {"code": 250, "enhanced_code": {"class": 2, "subject": 0, "detail": 0},
                     "content": "ok", "command": ".\r\n"},
        "peer_address": {"name": "mx.example.com", "addr": "192.0.2.1"},
        "timestamp": 1_700_000_020, "event_time": "2023-11-14T22:13:40.900Z",
        "created": 1_700_000_010, "created_time": "2023-11-14T22:13:30.500Z",
        "num_attempts": 2, "bounce_classification": "Uncategorized",
        "egress_pool": "pool1", "egress_source": "src", "source_address": None,
        "feedback_report": None, "meta": {}, "headers": {},
        "delivery_protocol": "ESMTP", "reception_protocol": "ESMTP",
        "nodeid": "00000000-0000-0000-0000-000000000000",
        "tls_cipher": "TLS_AES_256_GCM_SHA384", "tls_protocol_version": "TLSv1.3",
        "tls_peer_subject_name": ["CN=mx"], "provider_name": "example",
    }
    assert list(rec) == [*KUMO_ORDER,
        "tls_cipher", "tls_protocol_version", "tls_peer_subject_name", "provider_name"]
    json.dumps(rec)


def test_batch_recipient_is_a_list_and_no_tls_fields_without_tls() -> None:
    m = Message("id2", "s@x.org", ("a@example.com", "b@example.com"), 1, Q, 0.0)
    rec = make_record("TransientFailure", m, 1.0, 0.0, Reply(code=400, text="later"))
    assert rec["recipient"] == ["a@example.com", "b@example.com"]
    assert rec["response"]["enhanced_code"] is None and rec["peer_address"] is None
    assert "tls_cipher" not in rec and "provider_name" not in rec
    assert rec["site"] == "" and rec["egress_source"] is None
    assert list(rec) == list(KUMO_ORDER)
    assert rec["delivery_protocol"] is None  # no ready queue: not an SMTP attempt
