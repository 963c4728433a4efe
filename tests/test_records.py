"""Log records: KumoMTA's JSON shape.

The reference is KumoMTA's own serializer, transcribed below from
crates/kumo-log-types/src/lib.rs (struct JsonLogRecord, with the
ts_serializer/ct_serializer flattening of `timestamp` and `created`) and
crates/rfc5321/src/client_types.rs (struct Response), KumoCorp/kumomta at
3ebc1e8585e0e989cfcf50a93c94a803610249e8.  egress writes a subset on purpose:
the fields it has nothing to put in are listed in EGRESS_OMITS, and every field
it does write has KumoMTA's name and JSON type.
"""

from __future__ import annotations

import json

import pytest

from engine.message import Message, QueueInfo
from engine.records import make_record
from engine.reply import Reply

# JsonLogRecord as serde writes it: field -> the JSON types its Rust type allows.
# `recipient` is OneOrMany<_, PreferOne> (a string for one, a list for more);
# `timestamp`/`created` are flattened into a unix-seconds integer plus an
# optional RFC 3339 `event_time`/`created_time`.
STR, INT, NULL, LIST, DICT = str, int, type(None), list, dict
KUMO_RECORD: dict[str, tuple[type, ...]] = {
    "type": (STR,), "id": (STR,), "sender": (STR,), "recipient": (STR, LIST),
    "queue": (STR,), "site": (STR,), "size": (INT,), "response": (DICT,),
    "peer_address": (DICT, NULL), "timestamp": (INT,), "event_time": (STR,),
    "created": (INT,), "created_time": (STR,), "num_attempts": (INT,),
    "bounce_classification": (STR,), "egress_pool": (STR, NULL),
    "egress_source": (STR, NULL), "source_address": (DICT, NULL),
    "feedback_report": (DICT, NULL), "meta": (DICT,), "headers": (DICT,),
    "delivery_protocol": (STR, NULL), "reception_protocol": (STR, NULL),
    "nodeid": (STR,), "tls_cipher": (STR,), "tls_protocol_version": (STR,),
    "tls_peer_subject_name": (LIST,), "provider_name": (STR,), "session_id": (STR,),
}
# Fields KumoMTA always serializes (no skip_serializing_if).
KUMO_ALWAYS = {
    "type", "id", "sender", "recipient", "queue", "site", "size", "response",
    "peer_address", "timestamp", "created", "num_attempts", "bounce_classification",
    "egress_pool", "egress_source", "source_address", "feedback_report", "meta",
    "headers", "delivery_protocol", "reception_protocol", "nodeid",
}
# egress's choice: no SMTP session id on a record yet (KumoMTA skips it when None).
EGRESS_OMITS = {"session_id"}
# Response { code: u16, enhanced_code: Option<EnhancedStatusCode>, content: String,
#            command: Option<String> }; EnhancedStatusCode { class, subject, detail }.
KUMO_RESPONSE = {"code": (INT,), "enhanced_code": (DICT, NULL), "content": (STR,),
                 "command": (STR, NULL)}


def assert_kumo_shape(rec: dict[str, object]) -> None:
    unknown = set(rec) - set(KUMO_RECORD)
    assert not unknown, f"not a KumoMTA field: {sorted(unknown)}"
    missing = KUMO_ALWAYS - set(rec) - EGRESS_OMITS
    assert not missing, f"KumoMTA always writes {sorted(missing)}"
    for name, value in rec.items():
        assert isinstance(value, KUMO_RECORD[name]), (name, value)
    response = rec["response"]
    assert isinstance(response, dict) and set(response) == set(KUMO_RESPONSE)
    for name, value in response.items():
        assert isinstance(value, KUMO_RESPONSE[name]), (name, value)
    if response["enhanced_code"] is not None:
        assert set(response["enhanced_code"]) == {"class", "subject", "detail"}
    if rec["peer_address"] is not None:
        assert isinstance(rec["peer_address"], dict)
        assert set(rec["peer_address"]) == {"name", "addr"}  # is_secure skipped when false



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
    assert_kumo_shape(json.loads(json.dumps(rec)))
    assert list(rec) == [*KUMO_ORDER,
        "tls_cipher", "tls_protocol_version", "tls_peer_subject_name", "provider_name"]


def test_batch_recipient_is_a_list_and_no_tls_fields_without_tls() -> None:
    m = Message("id2", "s@x.org", ("a@example.com", "b@example.com"), 1, Q, 0.0)
    rec = make_record("TransientFailure", m, 1.0, 0.0, Reply(code=400, text="later"))
    assert rec["recipient"] == ["a@example.com", "b@example.com"]
    assert rec["response"]["enhanced_code"] is None and rec["peer_address"] is None
    assert "tls_cipher" not in rec and "provider_name" not in rec
    assert rec["site"] == "" and rec["egress_source"] is None
    assert list(rec) == list(KUMO_ORDER)
    assert rec["delivery_protocol"] is None  # no ready queue: not an SMTP attempt
    assert_kumo_shape(json.loads(json.dumps(rec)))


def test_the_reference_tables_are_consistent() -> None:
    assert set(KUMO_RECORD) >= KUMO_ALWAYS | EGRESS_OMITS
    with pytest.raises(AssertionError, match="not a KumoMTA field"):
        assert_kumo_shape({"type": "Delivery", "recipients": []})


def test_tls_peer_subject_name_is_a_list_as_kumos_option_vec_string() -> None:
    # KumoMTA: tls_peer_subject_name: Option<Vec<String>> (a JSON list)
    m = Message("id3", "s@x.org", ("a@example.com",), 1, Q, 0.0)
    rec = make_record("Delivery", m, 1.0, 0.0, Reply.make(250, "2.0.0", "ok"),
                      tls=("TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=mx"))
    assert isinstance(rec["tls_peer_subject_name"], KUMO_RECORD["tls_peer_subject_name"])
