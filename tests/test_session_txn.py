"""Tests for engine.session_txn (through Session): every timeout kind, reply
classes inside a transaction, how a transaction ends, idle and QUIT."""

from __future__ import annotations

from typing import Any

import pytest

from engine.effects import (
    Close,
    SetTimer,
    Verb,
)
from engine.events import (
    Closed,
    Connected,
    Malformed,
    TlsEstablished,
)
from engine.reply import Reply
from engine.session import (
    HostFailed,
    RecipientResult,
    Session,
    SessionClosed,
    SessionReady,
    State,
    TransactionDone,
    TxnMessage,
)
from tests.support.session_kit import (
    AUTH,
    CONN,
    MSG,
    ONE,
    cancel,
    deliver,
    fire,
    greet,
    make,
    resp,
    timer,
)

# -- timeouts ------------------------------------------------------------------------

TIMEOUTS = dict(connect_timeout=11, banner_timeout=12, ehlo_timeout=13, starttls_timeout=14,
                auth_timeout=15, mail_from_timeout=16, rcpt_to_timeout=17, data_timeout=18,
                data_dot_timeout=19, rset_timeout=20)


def _script(s: Session) -> list[tuple[str, Any]]:
    """Every step of a dialog that arms each timeout in turn (no pipelining)."""
    caps = "mx\nSTARTTLS\nAUTH PLAIN"
    return [
        ("connect_timeout", lambda: s.connect(100.0)),
        ("banner_timeout", lambda: s.handle(Connected(at=101.0, conn=CONN))),
        ("ehlo_timeout", lambda: s.handle(resp(102.0, 220))),
        ("starttls_timeout", lambda: s.handle(resp(103.0, 250, caps))),
        ("", lambda: s.handle(resp(104.0, 220))),
        ("ehlo_timeout", lambda: s.handle(TlsEstablished(at=105.0, conn=CONN))),
        ("auth_timeout", lambda: s.handle(resp(106.0, 250, caps))),
        ("", lambda: s.handle(resp(107.0, 235))),
        ("mail_from_timeout", lambda: s.start_transaction(108.0, ONE)),
        ("rcpt_to_timeout", lambda: s.handle(resp(109.0, 250))),
        ("data_timeout", lambda: s.handle(resp(110.0, 250))),
        ("data_dot_timeout", lambda: s.handle(resp(111.0, 354))),
        ("", lambda: s.handle(resp(112.0, 250))),
        ("rset_timeout", lambda: s.start_transaction(113.0, ONE)),
    ]


PRE_READY = {
    "connect_timeout": "connect to mx.example.com [192.0.2.7]:25 timed out after 11s",
    "banner_timeout": "waiting for the banner timed out after 12s",
    "ehlo_timeout": "waiting for the reply to EHLO timed out after 13s",
    "starttls_timeout": "waiting for the reply to STARTTLS timed out after 14s",
    "auth_timeout": "waiting for the reply to AUTH PLAIN timed out after 15s",
}
IN_TXN = {
    "mail_from_timeout": ("waiting for the reply to MAIL FROM timed out after 16s",
                          "MAIL FROM:<s@example.org>"),
    "rcpt_to_timeout": ("waiting for the reply to RCPT TO timed out after 17s",
                        "RCPT TO:<a@example.com>"),
    "data_timeout": ("waiting for the reply to DATA timed out after 18s", "DATA"),
    "data_dot_timeout": ("waiting for the reply to the end of DATA (.) timed out after 19s", "."),
    "rset_timeout": ("waiting for the reply to RSET timed out after 20s", "RSET"),
}


@pytest.mark.parametrize("key", list(TIMEOUTS))
def test_each_timeout_is_armed_with_its_value_and_fires(key: str) -> None:
    s = make("Required", **TIMEOUTS, **AUTH)
    for name, step in _script(s):
        fx, _ = step()
        if name == key:
            break
    else:
        pytest.fail(f"{key} never armed")
    armed = [e for e in fx if isinstance(e, SetTimer)]
    start = {"connect_timeout": 100.0, "banner_timeout": 101.0, "ehlo_timeout": 102.0,
             "starttls_timeout": 103.0, "auth_timeout": 106.0, "mail_from_timeout": 108.0,
             "rcpt_to_timeout": 109.0, "data_timeout": 110.0, "data_dot_timeout": 111.0,
             "rset_timeout": 113.0}[key]
    assert armed == [timer(start + TIMEOUTS[key])]
    fired_at = start + TIMEOUTS[key]
    fx, out = s.handle(fire(fired_at))
    assert fx == [Close(conn=CONN)]
    assert s.state is State.CLOSED
    if key in PRE_READY:
        text = PRE_READY[key]
        reason = text if key == "connect_timeout" else f"mx.example.com [192.0.2.7]:25: {text}"
        assert out == [HostFailed(reason, Reply.make(421, "4.4.2", text)), SessionClosed(reason)]
    else:
        text, command = IN_TXN[key]
        assert out == [
            RecipientResult("m1", "a@example.com", "transient", Reply.make(421, "4.4.2", text),
                            command),
            TransactionDone("m1"),
            SessionClosed(text),
        ]


def test_pipelined_batch_rearms_per_reply() -> None:
    s = make(**TIMEOUTS)
    greet(s)
    deliver(s, 10.0)
    steps = [s.start_transaction(20.0, MSG)] + [s.handle(resp(21.0 + i, c))
                                                 for i, c in enumerate([250, 250, 250, 250, 354])]
    assert [[e for e in fx if isinstance(e, SetTimer)] for fx, _ in steps] == [
        [timer(40.0)],  # RSET reply: rset_timeout
        [timer(37.0)],  # then MAIL: mail_from_timeout
        [timer(39.0)],  # then RCPT a: rcpt_to_timeout
        [timer(40.0)],  # then RCPT b
        [timer(42.0)],  # then DATA: data_timeout
        [timer(44.0)],  # then the dot: data_dot_timeout
    ]


def test_pipelined_timeout_defers_unanswered_and_accepted() -> None:
    s = make()
    greet(s)
    s.start_transaction(10.0, MSG)
    s.handle(resp(11.0, 250))
    s.handle(resp(12.0, 250))  # a accepted; waiting for b's reply
    _, out = s.handle(fire(400.0))
    text = "waiting for the reply to RCPT TO timed out after 300s"
    r = Reply.make(421, "4.4.2", text)
    b_cmd = "RCPT TO:<b@example.com>"
    assert out == [RecipientResult("m1", "a@example.com", "transient", r, b_cmd),
                   RecipientResult("m1", "b@example.com", "transient", r, b_cmd),
                   TransactionDone("m1"), SessionClosed(text)]


def test_quit_timeout() -> None:
    s = make()
    greet(s)
    s.quit(50.0)
    assert s.handle(fire(55.0)) == (
        [Close(conn=CONN)], [SessionClosed("no reply to QUIT within 5s")])


# -- transactions: reply classes --------------------------------------------------------


def _pipelined(codes: list[tuple[int, str | None, str]], msg: TxnMessage = MSG) -> list[Any]:
    s = make()
    greet(s)
    s.start_transaction(10.0, msg)
    out: list[Any] = []
    for i, (code, enh, text) in enumerate(codes):
        out += s.handle(resp(11.0 + i, code, text, enh))[1]
    return [s.state, *out]


def test_421_mid_transaction_defers_in_flight_and_closes() -> None:
    s = make()
    greet(s)
    s.start_transaction(10.0, MSG)
    s.handle(resp(11.0, 250))
    s.handle(resp(12.0, 550, "no", "5.1.1"))
    fx, out = s.handle(resp(13.0, 421, "shutting down", "4.3.2"))
    r = Reply.make(421, "4.3.2", "shutting down")
    assert fx == [cancel(), Close(conn=CONN)]
    assert out == [
        RecipientResult("m1", "b@example.com", "transient", r, "RCPT TO:<b@example.com>"),
        TransactionDone("m1"),
        SessionClosed("server closing the connection during RCPT TO: 421 4.3.2 shutting down"),
    ]


def test_closed_mid_data() -> None:
    s = make()
    greet(s)
    s.start_transaction(10.0, MSG)
    for code in (250, 250, 250, 354):
        s.handle(resp(11.0, code))
    assert s.state is State.BODY_SENT
    fx, out = s.handle(Closed(at=12.0, conn=CONN, reason="connection reset"))
    text = "connection closed by peer during DATA: connection reset"
    r = Reply.make(421, "4.4.2", text)
    assert fx == [cancel()]
    assert out == [RecipientResult("m1", "a@example.com", "transient", r, "."),
                   RecipientResult("m1", "b@example.com", "transient", r, "."),
                   TransactionDone("m1"), SessionClosed(text)]


def test_malformed_mid_transaction() -> None:
    s = make()
    greet(s)
    s.start_transaction(10.0, ONE)
    fx, out = s.handle(Malformed(at=11.0, conn=CONN, detail="not an SMTP reply line: 'HTTP/1.1'"))
    text = "malformed reply to MAIL FROM: not an SMTP reply line: 'HTTP/1.1'"
    assert fx == [cancel(), Close(conn=CONN)]
    assert out == [RecipientResult("m1", "a@example.com", "transient",
                                   Reply.make(421, "4.5.0", text),
                                   "MAIL FROM:<s@example.org> SIZE=10"),
                   TransactionDone("m1"), SessionClosed(text)]


def test_mail_refused_pipelined_consumes_the_rest() -> None:
    r = Reply.make(550, "5.7.1", "sender blocked")
    got = _pipelined([(550, "5.7.1", "sender blocked"), (503, "5.5.1", "no MAIL"),
                      (503, "5.5.1", "no MAIL"), (503, "5.5.1", "no MAIL")])
    mail = "MAIL FROM:<sender@example.org> SIZE=1234"
    assert got == [State.IDLE,
                   RecipientResult("m1", "a@example.com", "permanent", r, mail),
                   RecipientResult("m1", "b@example.com", "permanent", r, mail),
                   TransactionDone("m1"), SessionReady()]


def test_mail_refused_one_at_a_time_ends_at_once() -> None:
    s = make()
    greet(s, "mx")
    s.start_transaction(10.0, ONE)
    fx, out = s.handle(resp(11.0, 451, "try later", "4.3.0"))
    assert fx == [cancel()]
    assert out == [RecipientResult("m1", "a@example.com", "transient",
                                   Reply.make(451, "4.3.0", "try later"),
                                   "MAIL FROM:<s@example.org>"),
                   TransactionDone("m1"), SessionReady()]
    assert s.state is State.IDLE


def test_503_to_rcpt_is_transient_and_4xx_rcpt_is_transient() -> None:
    got = _pipelined([(250, None, ""), (503, "5.5.1", "bad sequence"), (450, "4.2.1", "busy"),
                      (554, "5.5.1", "no valid recipients")])
    assert got == [
        State.IDLE,
        RecipientResult("m1", "a@example.com", "transient", Reply.make(503, "5.5.1",
                        "bad sequence"), "RCPT TO:<a@example.com>"),
        RecipientResult("m1", "b@example.com", "transient", Reply.make(450, "4.2.1", "busy"),
                        "RCPT TO:<b@example.com>"),
        TransactionDone("m1"), SessionReady()]


def test_no_recipient_accepted_but_data_354_drops_the_connection() -> None:
    s = make()
    greet(s)
    s.start_transaction(10.0, ONE)
    s.handle(resp(11.0, 250))
    s.handle(resp(12.0, 550, "no"))
    fx, out = s.handle(resp(13.0, 354, "go ahead anyway"))
    assert fx == [cancel(), Close(conn=CONN)]  # no BODY is ever sent
    assert out == [TransactionDone("m1"),
                   SessionClosed("DATA accepted with no recipient accepted; connection dropped")]


def test_no_recipient_accepted_one_at_a_time_sends_no_data() -> None:
    s = make()
    greet(s, "mx")
    s.start_transaction(10.0, ONE)
    s.handle(resp(11.0, 250))
    fx, out = s.handle(resp(12.0, 550, "no such user", "5.1.1"))
    assert fx == [cancel()]
    assert [type(o).__name__ for o in out] == ["RecipientResult", "TransactionDone",
                                                "SessionReady"]


@pytest.mark.parametrize(("code", "status"), [(554, "permanent"), (451, "transient"),
                                              (503, "transient"), (250, "transient")])
def test_data_not_354_gives_accepted_recipients_that_reply(code: int, status: str) -> None:
    got = _pipelined([(250, None, ""), (250, None, ""), (550, None, "no"), (code, None, "x")])
    assert got == [State.IDLE,
                   RecipientResult("m1", "b@example.com", "permanent", Reply.make(550, None, "no"),
                                   "RCPT TO:<b@example.com>"),
                   RecipientResult("m1", "a@example.com", status, Reply.make(code, None, "x"),
                                   "DATA"),
                   TransactionDone("m1"), SessionReady()]


@pytest.mark.parametrize(("code", "status"), [(250, "delivered"), (552, "permanent"),
                                              (451, "transient"), (503, "transient"),
                                              (354, "transient")])
def test_final_dot_reply_goes_to_accepted_recipients(code: int, status: str) -> None:
    got = _pipelined([(250, None, ""), (250, None, ""), (354, None, ""), (code, None, "done")],
                     ONE)
    assert got == [State.IDLE,
                   RecipientResult("m1", "a@example.com", status, Reply.make(code, None, "done"),
                                   "."),
                   TransactionDone("m1"), SessionReady()]


def test_recipients_beyond_the_batch_limit_are_deferred_at_once() -> None:
    s = make(max_recipients_per_batch=2)
    greet(s)
    msg = TxnMessage("m9", "s@example.org", ("a@x.example", "b@x.example", "c@x.example"), 1)
    fx, out = s.start_transaction(10.0, msg)
    assert [c.arg for c in fx[0].commands if c.verb is Verb.RCPT] == ["a@x.example", "b@x.example"]
    assert out == [RecipientResult(
        "m9", "c@x.example", "transient",
        Reply.make(451, "4.5.3", "3 recipients exceed max_recipients_per_batch=2; the rest are "
                   "retried later"), "RCPT TO:<c@x.example>")]


# -- idle and quit ---------------------------------------------------------------------


def test_closed_while_idle() -> None:
    s = make()
    greet(s)
    assert s.handle(Closed(at=9.0, conn=CONN)) == (
        [], [SessionClosed("connection closed by peer while idle")])


def test_unsolicited_421_while_idle_closes() -> None:
    s = make()
    greet(s)
    assert s.handle(resp(9.0, 421, "idle too long", "4.4.2")) == (
        [Close(conn=CONN)], [SessionClosed("unexpected reply while idle: 421 4.4.2 idle too long")])


def test_closed_after_quit() -> None:
    s = make()
    greet(s)
    s.quit(10.0)
    assert s.handle(Closed(at=10.5, conn=CONN)) == (
        [cancel()], [SessionClosed("QUIT (closed by peer)")])
