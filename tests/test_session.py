"""Tests for engine.session: the full dialog (events in, the exact effects and
outcomes out), refused input, the command timer, the table's names bound to
handlers, and random dialogs that keep the books."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from engine.effects import Close, Send, SetTimer, SmtpCommand, StartTls, Verb
from engine.errors import ProtocolError
from engine.events import (
    Connected,
    Response,
    TimerFired,
    TlsEstablished,
)
from engine.reply import Reply
from engine.session import (
    HANDLERS,
    TRANSITIONS,
    Happened,
    HostFailed,
    Input,
    RecipientResult,
    ReconnectInClear,
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
    EHLO_CAPS,
    INPUTS,
    MODES,
    MSG,
    ONE,
    SETTINGS,
    TIMEOUTS,
    cancel,
    cmd,
    fire,
    greet,
    make,
    resp,
    send,
    snapshot,
    timer,
)

# -- the full dialog -----------------------------------------------------------------------


def test_full_dialog_trace() -> None:
    s = make("Opportunistic", smtp_auth_plain_username="scott",
             smtp_auth_plain_password={"key_data": "tiger"})
    cfg = s.cfg
    assert s.connect(0.0) == ([timer(60.0)], [])
    assert s.handle(Connected(at=0.5, conn=CONN)) == ([timer(60.5)], [])
    assert s.handle(resp(1.0, 220, "mx.example.com ESMTP")) == (
        [send(cmd(Verb.EHLO, "out.example.org")), timer(301.0)], [])
    assert s.state is State.EHLO_SENT
    assert s.handle(resp(2.0, 250, EHLO_CAPS)) == ([send(cmd(Verb.STARTTLS)), timer(7.0)], [])
    assert s.handle(resp(3.0, 220, "go ahead", "2.0.0")) == (
        [timer(8.0), StartTls(conn=CONN, settings=SETTINGS)], [])
    assert s.state is State.TLS_HANDSHAKE
    assert s.tls_info == {}
    ev = TlsEstablished(at=4.0, conn=CONN, protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
                        peer_subject="CN=mx.example.com")
    assert s.handle(ev) == ([send(cmd(Verb.EHLO, "out.example.org")), timer(304.0)], [])
    assert s.state is State.EHLO2_SENT
    assert s.capabilities == {}
    fx, out = s.handle(resp(5.0, 250, EHLO_CAPS))
    assert fx == [Send(conn=CONN, commands=(SmtpCommand(verb=Verb.AUTH_PLAIN, arg="scott"),)),
                  timer(65.0)]
    assert fx[0].commands[0].secret is cfg.smtp_auth_plain_password
    assert out == []
    assert s.handle(resp(6.0, 235, "ok", "2.7.0")) == ([cancel()], [SessionReady()])
    assert s.state is State.IDLE
    assert s.tls_info == {"tls_protocol_version": "TLSv1.3",
                          "tls_cipher": "TLS_AES_256_GCM_SHA384",
                          "tls_peer_subject_name": "CN=mx.example.com"}
    # one pipelined transaction: MAIL, RCPT a (550), RCPT b (250), DATA
    assert s.start_transaction(10.0, MSG) == ([
        send(cmd(Verb.MAIL, "sender@example.org", "SIZE=1234"),
             cmd(Verb.RCPT, "a@example.com"), cmd(Verb.RCPT, "b@example.com"), cmd(Verb.DATA)),
        timer(310.0)], [])
    assert s.state is State.MAIL_SENT
    assert s.handle(resp(11.0, 250, "ok", "2.1.0")) == ([timer(311.0)], [])
    no_user = Reply.make(550, "5.1.1", "no such user")
    assert s.handle(resp(12.0, 550, "no such user", "5.1.1")) == ([timer(312.0)], [
        RecipientResult("m1", "a@example.com", "permanent", no_user, "RCPT TO:<a@example.com>")])
    assert s.handle(resp(13.0, 250, "ok", "2.1.5")) == ([timer(43.0)], [])
    assert s.state is State.DATA_SENT
    assert s.handle(resp(14.0, 354, "go ahead")) == (
        [send(cmd(Verb.BODY, "m1")), timer(74.0)], [])
    assert s.state is State.BODY_SENT
    queued = Reply.make(250, "2.0.0", "queued as X")
    assert s.handle(resp(15.0, 250, "queued as X", "2.0.0")) == ([cancel()], [
        RecipientResult("m1", "b@example.com", "delivered", queued, "."),
        TransactionDone("m1"),
        SessionReady(),
    ])
    assert s.state is State.IDLE
    assert s.transactions == 1
    # QUIT
    # QUIT waits idle_timeout (crates/rfc5321/src/parser.rs, Command::client_timeout)
    assert s.quit(20.0) == ([send(cmd(Verb.QUIT)), timer(20.0 + s.cfg.idle_timeout)], [])
    assert s.handle(resp(21.0, 221, "bye")) == (
        [cancel(), Close(conn=CONN)], [SessionClosed("QUIT")])
    assert s.state is State.CLOSED


# -- refused input -------------------------------------------------------------------------


def test_protocol_error_shape_and_nothing_changes() -> None:
    s = make()
    s.connect(0.0)
    before = snapshot(s)
    with pytest.raises(ProtocolError) as info:
        s.handle(resp(1.0, 354))
    assert str(info.value) == "session 17 cannot handle Response(354) in state AWAIT_CONNECT"
    assert info.value.__suppress_context__ is True
    assert snapshot(s) == before


def test_protocol_errors_for_calls_foreign_timers_and_other_connections() -> None:
    s = make()
    greet(s)
    s.start_transaction(10.0, MSG)
    with pytest.raises(ProtocolError, match=r"^session 17 cannot handle start_transaction\(\) "
                                            r"in state MAIL_SENT$"):
        s.start_transaction(11.0, MSG)
    with pytest.raises(ProtocolError, match=r"^session 17 cannot handle quit\(\) in state "
                                            r"MAIL_SENT$"):
        s.quit(11.0)
    with pytest.raises(ProtocolError, match=r"^session 17 cannot handle "
                                            r"TimerFired\(\('idle', 17\)\)"
                                            r" in state MAIL_SENT$"):
        s.handle(TimerFired(at=11.0, timer=("idle", CONN)))
    with pytest.raises(ProtocolError, match=r"^session 17 cannot handle Response\(250\) of conn 18 "
                                            r"in state MAIL_SENT$"):
        s.handle(Response(at=11.0, conn=18, reply=Reply(code=250)))
    assert s.state is State.MAIL_SENT


# -- handlers ------------------------------------------------------------------------------


def test_every_name_in_the_table_is_bound_to_its_handler() -> None:
    assert set(HANDLERS) == set(Happened)
    for happened, handler in HANDLERS.items():
        assert handler.__name__ == happened.value


# -- the command timer ---------------------------------------------------------------------




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


# -- random dialogs (Hypothesis) -----------------------------------------------------------


CODES = {Input.R2XX: [220, 235, 250], Input.R3XX: [334, 354], Input.R4XX: [450, 451, 454],
         Input.R421: [421], Input.R5XX: [500, 503, 535, 550, 554]}


_OK = [Input.R2XX]


_HAPPY = {  # inputs that move a dialog on, so random runs reach transactions
    State.AWAIT_CONNECT: [Input.CONNECTED], State.TLS_HANDSHAKE: [Input.TLS_OK],
    State.STARTTLS_SENT: [Input.R2XX, Input.R4XX], State.IDLE: [Input.START],
    State.MAIL_SENT: [Input.R2XX, Input.R5XX], State.RCPT_SENT: [Input.R2XX, Input.R5XX],
    State.DATA_SENT: [Input.R3XX, Input.R5XX], State.BODY_SENT: [Input.R2XX, Input.R4XX],
}


@settings(max_examples=400, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    pipelining=st.booleans(),
    auth=st.booleans(),
    data=st.data(),
)
def test_random_dialogs_keep_the_books(mode: str, pipelining: bool, auth: bool,
                                       data: st.DataObject) -> None:
    """Random inputs, mostly legal ones (so dialogs get far), some not: a
    refused input changes nothing; one SessionClosed, last; every
    transaction gives each recipient one result, then TransactionDone."""
    keys: dict[str, Any] = dict(enable_pipelining=pipelining, max_recipients_per_batch=2)
    if auth:
        keys.update(AUTH, allow_smtp_auth_plain_without_tls=True)
    s = make(mode, **keys)
    at = 0.0
    outcomes: list[Any] = []
    txns: list[TxnMessage] = []
    for n in range(data.draw(st.integers(0, 60), label="length")):
        at += 1.0
        legal = sorted(TRANSITIONS[s.state], key=lambda k: k.value)
        anything = sorted(Input, key=lambda k: k.value)
        happy = _HAPPY.get(s.state, _OK) if legal else []
        bias = data.draw(st.integers(0, 9), label="bias")
        pool = happy if bias >= 3 and happy else legal if bias >= 1 and legal else anything
        kind = data.draw(st.sampled_from(pool), label="input")
        before = snapshot(s)
        try:
            if kind in CODES:
                code = data.draw(st.sampled_from(CODES[kind]), label="code")
                step = s.handle(resp(at, code, "mx\nPIPELINING\nSTARTTLS\nAUTH PLAIN"))
            elif kind is Input.START:
                nrcpt = data.draw(st.integers(1, 3), label="recipients")
                msg = TxnMessage(f"m{n}", "s@example.org",
                                 tuple(f"r{i}@example.com" for i in range(nrcpt)), 10)
                txns.append(msg)
                step = s.start_transaction(at, msg)
            else:
                step = INPUTS[kind][1](s)
        except ProtocolError:
            assert snapshot(s) == before
            if kind is Input.START:
                txns.pop()
            continue
        outcomes += step[1]
    closed = [o for o in outcomes if isinstance(o, SessionClosed)]
    assert len(closed) == (1 if s.state is State.CLOSED else 0)
    if closed:
        assert outcomes[-1] is closed[0]
    failed = [o for o in outcomes if isinstance(o, HostFailed | ReconnectInClear)]
    assert len(failed) <= 1
    if failed:
        assert not txns
    event(f"txns={min(len(txns), 3)} closed={bool(closed)}")
    for msg in txns:
        results = [o.recipient for o in outcomes
                   if isinstance(o, RecipientResult) and o.message_id == msg.id]
        done = [i for i, o in enumerate(outcomes)
                if isinstance(o, TransactionDone) and o.message_id == msg.id]
        if s.message is msg:
            assert done == []
            assert len(results) == len(set(results))
            continue
        assert sorted(results) == sorted(msg.recipients[:2])  # max_recipients_per_batch
        assert len(done) == 1
        last_result = max(i for i, o in enumerate(outcomes)
                          if isinstance(o, RecipientResult) and o.message_id == msg.id)
        assert last_result < done[0]
        assert isinstance(outcomes[done[0] + 1], SessionReady | SessionClosed)
