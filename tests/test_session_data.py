"""Tests for engine.session_data: KumoMTA's reply classes, the phase names
messages use, the MAIL line of a result, and how a session names its peer."""

from __future__ import annotations

import pytest

from engine.reply import Reply
from engine.session import State, TxnMessage
from engine.session_data import AWAITED, PHASE, mail_line, reply_status, where
from tests.support.session_kit import greet, make


@pytest.mark.parametrize(("code", "status"), [
    (250, "delivered"), (221, "delivered"), (354, "transient"), (421, "transient"),
    (451, "transient"), (503, "transient"), (550, "permanent"), (554, "permanent"),
])
def test_reply_status_follows_kumomta_classes(code: int, status: str) -> None:
    assert reply_status(Reply.make(code, None, "x")) == status


def test_every_state_but_closed_has_a_phase_name() -> None:
    assert set(PHASE) == set(State) - {State.CLOSED}
    assert set(AWAITED) == set(PHASE)


def test_mail_line_with_and_without_size() -> None:
    s = make()
    greet(s)  # SIZE advertised
    s.start_transaction(10.0, TxnMessage("m1", "a@example.org", ("b@example.com",), 12))
    assert mail_line(s) == "MAIL FROM:<a@example.org> SIZE=12"
    t = make()
    greet(t, "mx hello")
    t.start_transaction(10.0, TxnMessage("m2", "", ("b@example.com",), 12))
    assert mail_line(t) == "MAIL FROM:<>"


def test_where_and_repr_name_the_peer() -> None:
    s = make()
    assert where(s) == "mx.example.com [192.0.2.7]:25"
    assert repr(s) == "<Session 17 mx.example.com [192.0.2.7]:25 AWAIT_CONNECT>"
