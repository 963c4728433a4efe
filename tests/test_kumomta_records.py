"""Records and bounce classification as KumoMTA writes them.

Follows crates/kumo-log-types/src/lib.rs (JsonLogRecord: fields, order, types;
RecordType::is_bounce_classifiable), crates/kumod/src/logging/disposition.rs
(delivery_protocol only from a dispatcher), crates/rfc5321/src/client_types.rs
(Response: content one line via remove_line_break, to_single_line),
crates/rfc5321/src/parser.rs (Command::encode ends in CRLF; DataDot is
".\\r\\n") and crates/bounce-classify/src/lib.rs (rules files, first match,
Uncategorized, the IANA corpus of its test_bounce_classify_iana).
"""

from __future__ import annotations

import json
import random

import pytest

from engine.bounce_classify import BOUNCE_CLASSES, BounceClassifier, single_line
from engine.errors import ConfigError
from engine.message import Message, QueueInfo
from engine.records import make_record, rfc3339, subject_names
from engine.reply import Reply

Q = QueueInfo("spring:acme@example.com", "example.com", "acme", "spring", "", None, "pool1")


def msg() -> Message:
    return Message("id1", "s@x.org", ("a@example.com",), 10, Q, 0.0)


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (1_757_675_281.0, "2025-09-12T11:08:01Z"),
        (1_757_675_281.44, "2025-09-12T11:08:01.440Z"),
        (1_757_675_281.440526, "2025-09-12T11:08:01.440526Z"),
        (0.0, "1970-01-01T00:00:00Z"),
    ],
)
def test_event_time_is_chrono_rfc3339(t: float, text: str) -> None:
    assert rfc3339(t) == text


def test_timestamps_floor_and_pair_with_rfc3339() -> None:
    rec = make_record("Delivery", msg(), 1.75, 1_700_000_000.0, Reply.make(250, "2.0.0", "ok"))
    assert rec["timestamp"] == 1_700_000_001
    assert rec["event_time"] == "2023-11-14T22:13:21.750Z"
    assert rec["created_time"] == "2023-11-14T22:13:20Z"


def test_command_keeps_crlf_and_content_is_one_line() -> None:
    reply = Reply(code=550, text="no such user\nsee https://help")
    rec = make_record("Bounce", msg(), 0.0, 0.0, reply, command="RCPT TO:<a@example.com>",
                      site="src->mx")
    assert rec["response"]["command"] == "RCPT TO:<a@example.com>\r\n"
    assert rec["response"]["content"] == "no such user see https://help"
    assert rec["delivery_protocol"] == "ESMTP"
    json.dumps(rec)


def test_tls_peer_subject_name_is_a_list_in_certificate_order() -> None:
    # RFC 4514 writes the most specific RDN first; KumoMTA lists the certificate's order
    assert subject_names("CN=do.havedane.net,O=Fort-Funston,C=US") == [
        "C=US", "O=Fort-Funston", "CN=do.havedane.net"]
    assert subject_names(r"CN=a\,b,C=US") == ["C=US", r"CN=a\,b"]
    assert subject_names("") == []


def test_optional_fields_only_when_known() -> None:
    rec = make_record("Delivery", msg(), 0.0, 0.0, Reply(code=250, text="ok"),
                      source_address="10.0.0.1:53210",
                      session_id="9bcd689e-23d9-41b7-a015-63a1382f8b57")
    assert rec["source_address"] == {"address": "10.0.0.1:53210"}
    assert rec["session_id"] == "9bcd689e-23d9-41b7-a015-63a1382f8b57"
    assert list(rec)[-1] == "session_id"
    bare = make_record("Delivery", msg(), 0.0, 0.0, Reply(code=250, text="ok"))
    assert bare["source_address"] is None and "session_id" not in bare


IANA_CORPUS = [  # bounce-classify's test_bounce_classify_iana
    ("552 5.2.2 mailbox is stuffed", "QuotaIssues"),
    ("552 4.2.2 mailbox is stuffed", "QuotaIssues"),
    ("352 5.2.2 mailbox is stuffed", "Uncategorized"),
    ("525 4.7.13 user account is disabled", "InactiveMailbox"),
    ("551 4.7.17 mailbox owner has changed", "InvalidRecipient"),
    ("551 4.7.18 domain owner has changed", "BadDomain"),
]


@pytest.mark.parametrize(("line", "cls"), IANA_CORPUS)
def test_iana_rules(line: str, cls: str) -> None:
    assert BounceClassifier.iana().classify_line(line) == cls


def test_rule_order_first_file_first_rule_wins() -> None:
    # bounce-classify's test_rule_order
    c = BounceClassifier.from_files([
        ("f1.toml", '[rules]\nfoo = ["woot", "aaa"]\nbar = ["woot", "aaa", "bbb"]\n'),
        ("f2.json", '{"rules": {"second_file": ["bbb", "ccc"]}}'),
    ])
    assert [c.classify_line(s) for s in ("woot", "aaa", "bbb", "ccc", "zzz")] == [
        "foo", "foo", "bar", "second_file", "Uncategorized"]


def test_classification_only_for_classifiable_types() -> None:
    c = BounceClassifier.iana()
    reply = Reply.make(552, "5.2.2", "mailbox is stuffed")
    bounce = make_record("Bounce", msg(), 0.0, 0.0, reply, classifier=c)
    assert bounce["bounce_classification"] == "QuotaIssues"
    delivery = make_record("Delivery", msg(), 0.0, 0.0, reply, classifier=c)
    assert delivery["bounce_classification"] == "Uncategorized"
    plain = make_record("Bounce", msg(), 0.0, 0.0, reply)
    assert plain["bounce_classification"] == "Uncategorized"  # no classifier configured
    assert c.classify_record(dict(plain))["bounce_classification"] == "QuotaIssues"


def test_single_line_and_categories() -> None:
    assert single_line(451, {"class": 4, "subject": 4, "detail": 1}, "a\r\nb") == \
        "451 4.4.1 a b"
    assert single_line(421, None, "bye") == "421 bye"
    assert BOUNCE_CLASSES[0] == "InvalidRecipient" and BOUNCE_CLASSES[-1] == "Uncategorized"
    assert len(BOUNCE_CLASSES) == 29


@pytest.mark.parametrize(
    ("text", "why"),
    [("rules = 3", "exactly one table"), ("[rules]\nx = [1]", "not a list of strings"),
     ('[rules]\nx = ["("]', "does not compile"), ("not toml [", "not a rules file")],
)
def test_bad_rules_files_are_refused(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match="bounce classifier") as err:
        BounceClassifier.from_files([("r.toml", text)])
    assert why in str(err.value)


def test_no_pool_on_reception_delayed_and_admin_bounce() -> None:
    # smtp_server.rs (Reception), queue.rs (Delayed), admin_bounce_v1.rs (AdminBounce)
    for kind in ("Reception", "Delayed", "AdminBounce"):
        assert make_record(kind, msg(), 0.0, 0.0, Reply(code=250))["egress_pool"] is None
    assert make_record("Delivery", msg(), 0.0, 0.0, Reply(code=250))["egress_pool"] == "pool1"


def test_rfc3339_dates_match_the_calendar_over_eight_millennia() -> None:
    """`rfc3339` makes the date from integers (the C library's strftime left
    blocks behind after a burst); it must be the calendar's date, leap
    centuries included, and pad years as chrono does."""
    from datetime import UTC, datetime

    rng = random.Random(3339)
    instants = [rng.randrange(-30_610_224_000, 253_402_300_799) for _ in range(50_000)]
    instants += [0, -1, 86_399, 86_400, 951_782_400, 951_868_800, 4_107_542_400, 4_107_628_800]
    for t in instants:
        assert rfc3339(float(t)) == datetime.fromtimestamp(t, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"), t
    assert rfc3339(-53_382_656_804.0) == "0278-05-16T04:13:16Z"
