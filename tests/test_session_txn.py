"""Tests for engine.session_txn (through Session): starting a transaction
(pipelined or not, RSET, the batch limit), reply classes inside it, how it
ends, the idle connection and QUIT."""

from __future__ import annotations

from typing import Any

import pytest

from engine.effects import Close, SetTimer, Verb
from engine.events import (
    Closed,
    Malformed,
)
from engine.reply import Reply
from engine.session import (
    RecipientResult,
    SessionClosed,
    SessionReady,
    State,
    TransactionDone,
    TxnMessage,
)
from tests.support.session_kit import (
    CONN,
    MSG,
    ONE,
    TIMEOUTS,
    cancel,
    cmd,
    deliver,
    fire,
    greet,
    make,
    resp,
    send,
    timer,
)

# -- starting a transaction ----------------------------------------------------------------


def test_one_command_at_a_time_without_pipelining() -> None:
    s = make()
    greet(s, "mx hello\nSIZE")
    assert s.start_transaction(10.0, MSG) == (
        [send(cmd(Verb.MAIL, "sender@example.org", "SIZE=1234")), timer(310.0)], [])
    assert s.handle(resp(11.0, 250)) == ([send(cmd(Verb.RCPT, "a@example.com")), timer(311.0)], [])
    assert s.handle(resp(12.0, 451, "later", "4.2.0"))[0] == [
        send(cmd(Verb.RCPT, "b@example.com")), timer(312.0)]
    assert s.handle(resp(13.0, 250)) == ([send(cmd(Verb.DATA)), timer(43.0)], [])
    assert s.handle(resp(14.0, 354)) == ([send(cmd(Verb.BODY, "m1")), timer(74.0)], [])
    _, out = s.handle(resp(15.0, 250))
    assert [o.recipient for o in out if isinstance(o, RecipientResult)] == ["b@example.com"]


def test_pipelining_disabled_by_config() -> None:
    s = make(enable_pipelining=False)
    greet(s)
    fx, _ = s.start_transaction(10.0, MSG)
    assert fx[0] == send(cmd(Verb.MAIL, "sender@example.org", "SIZE=1234"))


def test_null_sender_and_no_size_when_not_advertised() -> None:
    s = make()
    greet(s, "mx hello")
    fx, _ = s.start_transaction(10.0, TxnMessage("m2", "", ("a@example.com",), 5))
    assert fx[0] == send(cmd(Verb.MAIL, ""))


def test_recipients_beyond_the_batch_limit_get_no_result() -> None:
    """The excess is not attempted and gets no record: the engine sends it next
    on the same connection (crates/kumod/src/smtp_dispatcher.rs,
    ``retry_immediately``)."""
    s = make(max_recipients_per_batch=2)
    greet(s)
    msg = TxnMessage("m9", "s@example.org", ("a@x.example", "b@x.example", "c@x.example"), 1)
    fx, out = s.start_transaction(10.0, msg)
    assert [c.arg for c in fx[0].commands if c.verb is Verb.RCPT] == ["a@x.example", "b@x.example"]
    assert out == []


# -- RSET ----------------------------------------------------------------------------------


def test_rset_before_the_second_transaction_but_not_the_first() -> None:
    s = make()
    greet(s)
    fx, _ = s.start_transaction(10.0, MSG)
    assert fx[0].commands[0].verb is Verb.MAIL
    for code in (250, 250, 250, 354, 250):
        s.handle(resp(11.0, code))
    fx, _ = s.start_transaction(20.0, MSG)
    assert [c.verb for c in fx[0].commands] == [Verb.RSET, Verb.MAIL, Verb.RCPT, Verb.RCPT,
                                                Verb.DATA]
    assert fx[1] == timer(25.0)  # rset_timeout
    assert s.state is State.RSET_SENT
    assert s.handle(resp(21.0, 250)) == ([timer(321.0)], [])  # then mail_from_timeout
    assert s.state is State.MAIL_SENT


def test_rset_one_at_a_time_then_mail() -> None:
    s = make()
    greet(s, "mx hello")
    deliver(s, 10.0)
    assert s.start_transaction(20.0, MSG) == ([send(cmd(Verb.RSET)), timer(25.0)], [])
    assert s.handle(resp(21.0, 250)) == ([send(cmd(Verb.MAIL, "sender@example.org")),
                                          timer(321.0)], [])


def test_no_rset_when_disabled() -> None:
    s = make(enable_rset=False)
    greet(s)
    deliver(s, 10.0)
    fx, _ = s.start_transaction(20.0, MSG)
    assert fx[0].commands[0].verb is Verb.MAIL


def test_rset_refused_defers_everyone_and_closes() -> None:
    s = make()
    greet(s)
    deliver(s, 10.0)
    s.start_transaction(20.0, MSG)
    fx, out = s.handle(resp(21.0, 500, "what"))
    bad = Reply.make(500, None, "what")
    assert fx == [cancel(), Close(conn=CONN)]
    assert out == [RecipientResult("m1", "a@example.com", "transient", bad, "RSET"),
                   RecipientResult("m1", "b@example.com", "transient", bad, "RSET"),
                   TransactionDone("m1"), SessionClosed("RSET refused: 500 what")]


# -- timeouts inside a transaction ---------------------------------------------------------


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


# -- reply classes -------------------------------------------------------------------------


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


def test_mail_refused_one_at_a_time_still_writes_rcpt_and_data() -> None:
    """crates/rfc5321/src/client.rs, ``pipeline_commands``: without PIPELINING
    every command of the batch is written and its reply read, MAIL refused or
    not; the recipients have their result from the MAIL reply."""
    s = make()
    greet(s, "mx")
    s.start_transaction(10.0, ONE)
    fx, out = s.handle(resp(11.0, 451, "try later", "4.3.0"))
    assert fx == [send(cmd(Verb.RCPT, "a@example.com")), timer(311.0)]
    assert out == [RecipientResult("m1", "a@example.com", "transient",
                                   Reply.make(451, "4.3.0", "try later"),
                                   "MAIL FROM:<s@example.org>")]
    fx, out = s.handle(resp(12.0, 503, "need MAIL"))
    assert fx == [send(cmd(Verb.DATA)), timer(42.0)] and out == []
    fx, out = s.handle(resp(13.0, 503, "need MAIL"))
    assert fx == [cancel()]
    assert out == [TransactionDone("m1"), SessionReady()]
    assert s.state is State.IDLE


def test_without_enable_rset_a_failed_transaction_is_still_followed_by_rset() -> None:
    """crates/rfc5321/src/client.rs, ``use_rset``: set before every
    transaction is sent, and set back to ``enable_rset`` only once the final
    dot got 250; so enable_rset=false skips RSET only after a delivered one."""
    s = make(enable_rset=False)
    greet(s)
    fx, _ = s.start_transaction(10.0, ONE)
    assert fx[0].commands[0].verb is Verb.MAIL
    for code in (250, 250, 354, 250):
        s.handle(resp(11.0, code))
    fx, _ = s.start_transaction(20.0, ONE)
    assert fx[0].commands[0].verb is Verb.MAIL  # after a delivery: no RSET
    s.handle(resp(21.0, 451, "later", "4.3.0"))  # MAIL refused (pipelined: RCPT, DATA owed)
    s.handle(resp(21.0, 503, "need MAIL"))
    s.handle(resp(21.0, 503, "need MAIL"))
    assert s.state is State.IDLE
    fx, _ = s.start_transaction(30.0, ONE)
    assert fx[0].commands[0].verb is Verb.RSET  # after a failure: RSET all the same


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


def test_no_recipient_accepted_but_data_354_sends_a_lone_dot() -> None:
    """crates/rfc5321/src/client.rs, ``send_mail_multi_recip`` (RFC 2920 3.1):
    a pipelined DATA answered 354 although every RCPT was refused gets a lone
    dot; its reply ends the transaction and the connection carries on, with
    RSET before the next transaction."""
    s = make()
    greet(s)
    s.start_transaction(10.0, ONE)
    s.handle(resp(11.0, 250))
    s.handle(resp(12.0, 550, "no"))
    fx, out = s.handle(resp(13.0, 354, "go ahead anyway"))
    assert fx == [send(cmd(Verb.DOT)), timer(73.0)]  # data_dot_timeout
    assert out == [] and s.state is State.BODY_SENT
    fx, out = s.handle(resp(14.0, 554, "no valid recipients"))
    assert out == [TransactionDone("m1"), SessionReady()] and s.state is State.IDLE
    fx, _ = s.start_transaction(20.0, ONE)
    assert fx[0].commands[0].verb is Verb.RSET


def test_no_recipient_accepted_one_at_a_time_still_sends_data() -> None:
    """The same rule: DATA follows the refused RCPT; its refusal ends the
    transaction (a 354 would get a lone dot, as pipelined)."""
    s = make()
    greet(s, "mx")
    s.start_transaction(10.0, ONE)
    s.handle(resp(11.0, 250))
    fx, out = s.handle(resp(12.0, 550, "no such user", "5.1.1"))
    assert fx == [send(cmd(Verb.DATA)), timer(42.0)]
    assert [type(o).__name__ for o in out] == ["RecipientResult"]
    fx, out = s.handle(resp(13.0, 554, "no valid recipients", "5.5.1"))
    assert fx == [cancel()]
    assert [type(o).__name__ for o in out] == ["TransactionDone", "SessionReady"]


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


# -- idle and QUIT -------------------------------------------------------------------------


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


def test_quit_waits_idle_timeout_as_kumomta() -> None:
    """crates/rfc5321/src/parser.rs, ``Command::client_timeout``: QUIT is read
    with ``timeouts.idle_timeout``, not a fixed 5 s."""
    s = make(idle_timeout="20s")
    greet(s)
    fx, _ = s.quit(50.0)
    assert fx[-1] == timer(70.0)
    assert s.handle(fire(70.0)) == (
        [Close(conn=CONN)], [SessionClosed("no reply to QUIT within 20s")])


def test_closed_after_quit() -> None:
    s = make()
    greet(s)
    s.quit(10.0)
    assert s.handle(Closed(at=10.5, conn=CONN)) == (
        [cancel()], [SessionClosed("QUIT (closed by peer)")])
