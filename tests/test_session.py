"""Tests for engine.session: the SMTP client session machine.

Trace tests feed events and compare the exact effects and outcomes; the
totality tests try every (state, input kind) pair; a Hypothesis test runs
random input sequences and checks the bookkeeping invariants.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from engine.config import make_egress_path
from engine.effects import (
    CancelTimer,
    Close,
    Send,
    SetTimer,
    SmtpCommand,
    StartTls,
    TlsMode,
    TlsSettings,
    Verb,
)
from engine.errors import ProtocolError
from engine.events import (
    Closed,
    Connected,
    ConnectFailed,
    Malformed,
    Response,
    TimerFired,
    TlsEstablished,
    TlsFailed,
)
from engine.reply import Reply
from engine.session import (
    QUIT_TIMEOUT,
    TRANSITIONS,
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
    parse_ehlo,
)
from engine.session_handlers import _PHASE

CONN = 17
TIMER = ("conn", CONN)
SETTINGS = TlsSettings(mode=TlsMode.VERIFY, server_name="mx.example.com")
EHLO_CAPS = "mx.example.com hello\nPIPELINING\nSIZE 10000000\nSTARTTLS\nAUTH LOGIN PLAIN\n8BITMIME"
MSG = TxnMessage("m1", "sender@example.org", ("a@example.com", "b@example.com"), 1234)


def cmd(verb: Verb, arg: str = "", params: str = "") -> SmtpCommand:
    return SmtpCommand(verb=verb, arg=arg, params=params)


def send(*commands: SmtpCommand) -> Send:
    return Send(conn=CONN, commands=commands)


def timer(at: float) -> SetTimer:
    return SetTimer(timer=TIMER, at=at)


def make(tls: str = "Opportunistic", **keys: Any) -> Session:
    cfg = make_egress_path(**keys)
    return Session(conn=CONN, host="mx.example.com", address="192.0.2.7", port=25, cfg=cfg,
                   tls=tls, tls_settings=SETTINGS, ehlo_domain="out.example.org", opened_at=0.0)


def resp(at: float, code: int, text: str = "", enhanced: str | None = None) -> Response:
    return Response(at=at, conn=CONN, reply=Reply.make(code, enhanced, text))


def fire(at: float) -> TimerFired:
    return TimerFired(at=at, timer=TIMER)


def greet(s: Session, caps: str = "mx.example.com hello\nPIPELINING\nSIZE 10000000") -> None:
    """Drive `s` from AWAIT_CONNECT to IDLE (no TLS unless the caps offer it)."""
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220, "mx.example.com ESMTP"))
    s.handle(resp(3.0, 250, caps))
    assert s.state is State.IDLE


def cancel() -> CancelTimer:
    return CancelTimer(timer=TIMER)


# -- the full dialog ------------------------------------------------------------------


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
        [StartTls(conn=CONN, settings=SETTINGS)], [])
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
    assert s.quit(20.0) == ([send(cmd(Verb.QUIT)), timer(20.0 + QUIT_TIMEOUT)], [])
    assert s.handle(resp(21.0, 221, "bye")) == (
        [cancel(), Close(conn=CONN)], [SessionClosed("QUIT")])
    assert s.state is State.CLOSED


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


# -- RSET ------------------------------------------------------------------------------


def _deliver(s: Session, at: float, msg: TxnMessage = MSG) -> None:
    s.start_transaction(at, msg)
    while s.state is not State.IDLE:
        code = {State.DATA_SENT: 354}.get(s.state, 250)
        s.handle(resp(at, code))


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
    _deliver(s, 10.0)
    assert s.start_transaction(20.0, MSG) == ([send(cmd(Verb.RSET)), timer(25.0)], [])
    assert s.handle(resp(21.0, 250)) == ([send(cmd(Verb.MAIL, "sender@example.org")),
                                          timer(321.0)], [])


def test_no_rset_when_disabled() -> None:
    s = make(enable_rset=False)
    greet(s)
    _deliver(s, 10.0)
    fx, _ = s.start_transaction(20.0, MSG)
    assert fx[0].commands[0].verb is Verb.MAIL


def test_rset_refused_defers_everyone_and_closes() -> None:
    s = make()
    greet(s)
    _deliver(s, 10.0)
    s.start_transaction(20.0, MSG)
    fx, out = s.handle(resp(21.0, 500, "what"))
    bad = Reply.make(500, None, "what")
    assert fx == [cancel(), Close(conn=CONN)]
    assert out == [RecipientResult("m1", "a@example.com", "transient", bad, "RSET"),
                   RecipientResult("m1", "b@example.com", "transient", bad, "RSET"),
                   TransactionDone("m1"), SessionClosed("RSET refused: 500 what")]


# -- HELO fallback ----------------------------------------------------------------------


def test_helo_fallback_after_ehlo_5xx() -> None:
    s = make()
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220))
    assert s.handle(resp(3.0, 502, "no EHLO here")) == (
        [send(cmd(Verb.HELO, "out.example.org")), timer(303.0)], [])
    assert s.state is State.HELO_SENT
    assert s.handle(resp(4.0, 250, "mx")) == ([cancel()], [SessionReady()])
    assert s.esmtp is False
    assert s.capabilities == {}
    fx, _ = s.start_transaction(5.0, MSG)  # no PIPELINING after HELO
    assert fx[0] == send(cmd(Verb.MAIL, "sender@example.org"))


def test_helo_refused_fails_the_host() -> None:
    s = make()
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220))
    s.handle(resp(3.0, 500))
    fx, out = s.handle(resp(4.0, 554, "go away", "5.7.1"))
    reason = "mx.example.com [192.0.2.7]:25 refused HELO: 554 5.7.1 go away"
    assert fx == [cancel(), Close(conn=CONN)]
    assert out == [HostFailed(reason, Reply.make(554, "5.7.1", "go away")), SessionClosed(reason)]


def test_banner_421_fails_the_host() -> None:
    s = make()
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    fx, out = s.handle(resp(2.0, 421, "too busy", "4.3.2"))
    reason = "mx.example.com [192.0.2.7]:25 refused the banner: 421 4.3.2 too busy"
    assert out == [HostFailed(reason, Reply.make(421, "4.3.2", "too busy")),
                   SessionClosed(reason)]
    assert fx == [cancel(), Close(conn=CONN)]


def test_connect_failed() -> None:
    s = make()
    s.connect(0.0)
    fx, out = s.handle(ConnectFailed(at=1.0, conn=CONN, reason="connection refused"))
    reason = "connect to mx.example.com [192.0.2.7]:25 failed: connection refused"
    assert fx == [cancel()]
    assert out == [HostFailed(reason, Reply.make(421, "4.4.1", reason)), SessionClosed(reason)]
    assert s.state is State.CLOSED


# -- TLS modes -------------------------------------------------------------------------

MODES = ["Opportunistic", "OpportunisticInsecure", "Required", "RequiredInsecure", "Disabled"]


def _tls_run(mode: str, scenario: str, **keys: Any) -> tuple[State, list[str], list[Verb]]:
    """Greet with STARTTLS offered or not, then play `scenario`; return the
    final state, the outcome type names and every verb sent."""
    s = make(mode, **keys)
    steps = [s.connect(0.0), s.handle(Connected(at=1.0, conn=CONN)), s.handle(resp(2.0, 220))]
    caps = "mx hello\nPIPELINING" + ("" if scenario == "not offered" else "\nSTARTTLS")
    steps.append(s.handle(resp(3.0, 250, caps)))
    if s.state is State.STARTTLS_SENT:
        if scenario == "refused":
            steps.append(s.handle(resp(4.0, 454, "TLS not available", "4.7.0")))
        else:
            steps.append(s.handle(resp(4.0, 220)))
            if scenario == "handshake fails":
                steps.append(s.handle(TlsFailed(at=5.0, conn=CONN, reason="bad certificate")))
            else:
                steps.append(s.handle(TlsEstablished(at=5.0, conn=CONN, protocol="TLSv1.3")))
                steps.append(s.handle(resp(6.0, 250, caps)))
    outcomes = [type(o).__name__ for _, out in steps for o in out]
    verbs = [c.verb for fx, _ in steps for e in fx if isinstance(e, Send) for c in e.commands]
    return s.state, outcomes, verbs


READY = ["SessionReady"]
FAILED = ["HostFailed", "SessionClosed"]
CLEAR = ["ReconnectInClear", "SessionClosed"]
E, S_, H = Verb.EHLO, Verb.STARTTLS, Verb.HELO


@pytest.mark.parametrize(
    ("mode", "scenario", "state", "outcomes", "verbs"),
    [
        # STARTTLS offered, handshake succeeds: EHLO again inside TLS
        ("Opportunistic", "ok", State.IDLE, READY, [E, S_, E]),
        ("OpportunisticInsecure", "ok", State.IDLE, READY, [E, S_, E]),
        ("Required", "ok", State.IDLE, READY, [E, S_, E]),
        ("RequiredInsecure", "ok", State.IDLE, READY, [E, S_, E]),
        ("Disabled", "ok", State.IDLE, READY, [E]),
        # not offered
        ("Opportunistic", "not offered", State.IDLE, READY, [E]),
        ("OpportunisticInsecure", "not offered", State.IDLE, READY, [E]),
        ("Required", "not offered", State.CLOSED, FAILED, [E]),
        ("RequiredInsecure", "not offered", State.CLOSED, FAILED, [E]),
        ("Disabled", "not offered", State.IDLE, READY, [E]),
        # offered but the handshake fails
        ("Opportunistic", "handshake fails", State.CLOSED, FAILED, [E, S_]),
        ("OpportunisticInsecure", "handshake fails", State.CLOSED, CLEAR, [E, S_]),
        ("Required", "handshake fails", State.CLOSED, FAILED, [E, S_]),
        ("RequiredInsecure", "handshake fails", State.CLOSED, FAILED, [E, S_]),
        ("Disabled", "handshake fails", State.IDLE, READY, [E]),
        # STARTTLS answered with 454: opportunistic modes carry on in clear
        ("Opportunistic", "refused", State.IDLE, READY, [E, S_]),
        ("OpportunisticInsecure", "refused", State.IDLE, READY, [E, S_]),
        ("Required", "refused", State.CLOSED, FAILED, [E, S_]),
        ("RequiredInsecure", "refused", State.CLOSED, FAILED, [E, S_]),
    ],
)
def test_tls_modes(mode: str, scenario: str, state: State, outcomes: list[str],
                   verbs: list[Verb]) -> None:
    assert _tls_run(mode, scenario) == (state, outcomes, verbs)


def test_opportunistic_reconnects_in_clear_when_configured() -> None:
    got = _tls_run("Opportunistic", "handshake fails",
                   opportunistic_tls_reconnect_on_failed_handshake=True)
    assert got == (State.CLOSED, CLEAR, [E, S_])


def test_tls_failure_details() -> None:
    s = make("Opportunistic")
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220))
    s.handle(resp(3.0, 250, "mx\nSTARTTLS"))
    s.handle(resp(4.0, 220))
    fx, out = s.handle(TlsFailed(at=5.0, conn=CONN, reason="certificate verify failed"))
    reason = "TLS handshake with mx.example.com [192.0.2.7]:25 failed: certificate verify failed"
    assert fx == [cancel(), Close(conn=CONN)]
    assert out == [HostFailed(reason, Reply.make(421, "4.7.0", reason)), SessionClosed(reason)]


def test_required_tls_not_offered_reason() -> None:
    s = make("RequiredInsecure")
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220))
    fx, out = s.handle(resp(3.0, 250, "mx\nPIPELINING"))
    reason = ("enable_tls is RequiredInsecure but mx.example.com [192.0.2.7]:25 did not "
              "advertise STARTTLS")
    assert fx == [cancel(), Close(conn=CONN)]
    assert out == [HostFailed(reason, Reply.make(421, "4.7.0", reason)), SessionClosed(reason)]


def test_starttls_timeout_covers_the_handshake() -> None:
    s = make("OpportunisticInsecure", starttls_timeout=7)
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220))
    assert s.handle(resp(3.0, 250, "mx\nSTARTTLS")) == ([send(cmd(Verb.STARTTLS)), timer(10.0)],
                                                        [])
    fx, _ = s.handle(resp(4.0, 220))
    assert not any(isinstance(e, SetTimer) for e in fx)  # the same timer runs on
    fx, out = s.handle(fire(10.0))
    reason = "TLS handshake with mx.example.com [192.0.2.7]:25 timed out after 7s"
    assert fx == [Close(conn=CONN)]
    assert out == [ReconnectInClear(reason), SessionClosed(reason)]


# -- AUTH PLAIN ----------------------------------------------------------------------


def _auth_run(mode: str, caps: str, **keys: Any) -> tuple[list[Any], list[Any]]:
    s = make(mode, smtp_auth_plain_username="scott",
             smtp_auth_plain_password={"key_data": "tiger"}, **keys)
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220))
    return s.handle(resp(3.0, 250, caps))


def test_auth_without_tls_is_refused_and_nothing_is_sent() -> None:
    fx, out = _auth_run("Disabled", "mx\nAUTH PLAIN")
    reason = ("AUTH PLAIN as 'scott' refused: the connection to mx.example.com [192.0.2.7]:25 "
              "is not using TLS and allow_smtp_auth_plain_without_tls is false; the credential "
              "was not sent")
    assert fx == [cancel(), Close(conn=CONN)]
    assert out == [HostFailed(reason, Reply.make(421, "4.7.0", reason)), SessionClosed(reason)]


def test_auth_without_tls_when_allowed() -> None:
    fx, out = _auth_run("Opportunistic", "mx\nAUTH=PLAIN",
                        allow_smtp_auth_plain_without_tls=True)
    assert fx == [send(SmtpCommand(verb=Verb.AUTH_PLAIN, arg="scott")), timer(63.0)]
    assert fx[0].commands[0].secret.resolve() == "tiger"
    assert out == []


def test_auth_not_advertised_fails_the_host() -> None:
    fx, out = _auth_run("Opportunistic", "mx\nAUTH LOGIN", allow_smtp_auth_plain_without_tls=True)
    reason = ("smtp_auth_plain_username is set but mx.example.com [192.0.2.7]:25 does not "
              "advertise AUTH PLAIN")
    assert out == [HostFailed(reason, Reply.make(421, "4.7.0", reason)), SessionClosed(reason)]
    assert not any(isinstance(e, Send) for e in fx)


def test_auth_refused_fails_the_host() -> None:
    s = make("Disabled", smtp_auth_plain_username="scott",
             smtp_auth_plain_password={"key_data": "tiger"},
             allow_smtp_auth_plain_without_tls=True)
    greet_steps = [s.connect(0.0), s.handle(Connected(at=1.0, conn=CONN)),
                   s.handle(resp(2.0, 220)), s.handle(resp(3.0, 250, "mx\nAUTH PLAIN"))]
    assert greet_steps[-1][0][0].commands[0].verb is Verb.AUTH_PLAIN
    fx, out = s.handle(resp(4.0, 535, "bad credentials", "5.7.8"))
    reason = "mx.example.com [192.0.2.7]:25 refused AUTH PLAIN: 535 5.7.8 bad credentials"
    assert out == [HostFailed(reason, Reply.make(535, "5.7.8", "bad credentials")),
                   SessionClosed(reason)]
    assert fx == [cancel(), Close(conn=CONN)]


def test_no_auth_without_a_user_name() -> None:
    s = make("Disabled")
    greet(s, "mx\nAUTH PLAIN")
    assert s.state is State.IDLE


# -- timeouts ------------------------------------------------------------------------

TIMEOUTS = dict(connect_timeout=11, banner_timeout=12, ehlo_timeout=13, starttls_timeout=14,
                auth_timeout=15, mail_from_timeout=16, rcpt_to_timeout=17, data_timeout=18,
                data_dot_timeout=19, rset_timeout=20)
AUTH = dict(smtp_auth_plain_username="scott", smtp_auth_plain_password={"key_data": "tiger"})
ONE = TxnMessage("m1", "s@example.org", ("a@example.com",), 10)


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
    _deliver(s, 10.0)
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


# -- illegal input -----------------------------------------------------------------------


def _snapshot(s: Session) -> dict[str, Any]:
    values = {name: getattr(s, name) for name in Session.__slots__}
    return {name: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
            for name, v in values.items()}


def test_protocol_error_shape_and_nothing_changes() -> None:
    s = make()
    s.connect(0.0)
    before = _snapshot(s)
    with pytest.raises(ProtocolError) as info:
        s.handle(resp(1.0, 354))
    assert str(info.value) == "session 17 cannot handle Response(354) in state AWAIT_CONNECT"
    assert info.value.__suppress_context__ is True
    assert _snapshot(s) == before


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


def in_state(state: State) -> Session:
    """A session driven (without pipelining) into `state`."""
    s = make("Opportunistic", enable_pipelining=False, **AUTH)
    script: list[Any] = [
        lambda: s.connect(0.0),
        lambda: s.handle(Connected(at=1.0, conn=CONN)),
        lambda: s.handle(resp(2.0, 220)),
        lambda: s.handle(resp(3.0, 250, "mx\nSTARTTLS\nAUTH PLAIN")),
        lambda: s.handle(resp(4.0, 220)),
        lambda: s.handle(TlsEstablished(at=5.0, conn=CONN)),
        lambda: s.handle(resp(6.0, 250, "mx\nAUTH PLAIN")),
        lambda: s.handle(resp(7.0, 235)),
        lambda: s.start_transaction(8.0, ONE),
        lambda: s.handle(resp(9.0, 250)),
        lambda: s.handle(resp(10.0, 250)),
        lambda: s.handle(resp(11.0, 354)),
        lambda: s.handle(resp(12.0, 250)),
        lambda: s.start_transaction(13.0, ONE),
    ]
    if state is State.HELO_SENT:
        script[3] = lambda: s.handle(resp(3.0, 500))
    elif state is State.QUIT_SENT:
        script[8] = lambda: s.quit(8.0)
    elif state is State.CLOSED:
        script[1] = lambda: s.handle(ConnectFailed(at=1.0, conn=CONN))
    for step in script:
        if s.state is state:
            return s
        step()
    assert s.state is state, (state, s.state)
    return s


AT = 500.0
INPUTS: dict[Input, tuple[str, Any]] = {
    Input.CONNECT: ("connect()", lambda s: s.connect(AT)),
    Input.START: ("start_transaction()", lambda s: s.start_transaction(AT, ONE)),
    Input.QUIT: ("quit()", lambda s: s.quit(AT)),
    Input.CONNECTED: ("Connected", lambda s: s.handle(Connected(at=AT, conn=CONN))),
    Input.CONNECT_FAILED: ("ConnectFailed", lambda s: s.handle(ConnectFailed(at=AT, conn=CONN))),
    Input.TLS_OK: ("TlsEstablished", lambda s: s.handle(TlsEstablished(at=AT, conn=CONN))),
    Input.TLS_FAILED: ("TlsFailed", lambda s: s.handle(TlsFailed(at=AT, conn=CONN))),
    Input.R2XX: ("Response(250)", lambda s: s.handle(resp(AT, 250))),
    Input.R3XX: ("Response(354)", lambda s: s.handle(resp(AT, 354))),
    Input.R4XX: ("Response(451)", lambda s: s.handle(resp(AT, 451))),
    Input.R421: ("Response(421)", lambda s: s.handle(resp(AT, 421))),
    Input.R5XX: ("Response(550)", lambda s: s.handle(resp(AT, 550))),
    Input.TIMEOUT: ("TimerFired(('conn', 17))", lambda s: s.handle(fire(AT))),
    Input.CLOSED: ("Closed", lambda s: s.handle(Closed(at=AT, conn=CONN))),
    Input.MALFORMED: ("Malformed", lambda s: s.handle(Malformed(at=AT, conn=CONN, detail="x"))),
}


@pytest.mark.parametrize("state", list(State), ids=lambda st: st.name)
def test_totality_every_input_in_every_state(state: State) -> None:
    """Every (state, input kind) is a row (taken without error, to a listed
    state) or a ProtocolError that leaves the session unchanged."""
    legal = 0
    for kind, (what, call) in INPUTS.items():
        s = in_state(state)
        row = TRANSITIONS.get((state, kind))
        if row is None:
            before = _snapshot(s)
            with pytest.raises(ProtocolError) as info:
                call(s)
            assert str(info.value) == f"session 17 cannot handle {what} in state {state.name}"
            assert _snapshot(s) == before
        else:
            legal += 1
            _, out = call(s)
            assert s.state in row[1], (state, kind, s.state)
            if s.state is State.CLOSED:
                assert isinstance(out[-1], SessionClosed)
    assert (legal == 0) == (state is State.CLOSED)


def test_every_state_but_closed_has_a_phase_name() -> None:
    assert set(_PHASE) == set(State) - {State.CLOSED}


def test_table_rows_name_known_states() -> None:
    for (state, kind), (handler, targets) in TRANSITIONS.items():
        assert targets and all(isinstance(t, State) for t in targets), (state, kind)
        assert callable(handler)
        assert state is not State.CLOSED


# -- random dialogs (Hypothesis) ---------------------------------------------------------

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
        legal = sorted((k for (st_, k) in TRANSITIONS if st_ is s.state), key=lambda k: k.value)
        anything = sorted(Input, key=lambda k: k.value)
        happy = _HAPPY.get(s.state, _OK) if legal else []
        bias = data.draw(st.integers(0, 9), label="bias")
        pool = happy if bias >= 3 and happy else legal if bias >= 1 and legal else anything
        kind = data.draw(st.sampled_from(pool), label="input")
        before = _snapshot(s)
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
            assert _snapshot(s) == before
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
        assert sorted(results) == sorted(msg.recipients)
        assert len(done) == 1
        last_result = max(i for i, o in enumerate(outcomes)
                          if isinstance(o, RecipientResult) and o.message_id == msg.id)
        assert last_result < done[0]
        assert isinstance(outcomes[done[0] + 1], SessionReady | SessionClosed)


def test_parse_ehlo() -> None:
    assert parse_ehlo(EHLO_CAPS) == {"PIPELINING": (), "SIZE": ("10000000",), "STARTTLS": (),
                                     "AUTH": ("LOGIN", "PLAIN"), "8BITMIME": ()}
    assert parse_ehlo("mx\nauth=login\nAUTH PLAIN\n\n") == {"AUTH": ("LOGIN", "PLAIN")}
    assert parse_ehlo("mx only") == {}


# -- against a real server on loopback (aiosmtpd), through engine.wire -----------------


def _run_against(sink: Any, session: Session, messages: list[tuple[TxnMessage, bytes]],
                 ctx: Any = None) -> list[Any]:
    """A minimal blocking driver: carries out the session's effects on a real
    socket, parses what comes back with `ReplyParser`, and feeds it in."""
    import socket
    import time

    from engine.wire import ReplyParser, encode_auth_plain, encode_body, encode_command

    bodies = {m.id: body for m, body in messages}
    todo = list(messages)
    outcomes: list[Any] = []
    sock: Any = socket.create_connection(sink.address, timeout=5)
    parser = ReplyParser()
    pending = list(session.connect(time.time())[0])
    step = session.handle(Connected(at=time.time(), conn=CONN))
    while True:
        effects, outs = step
        outcomes += outs
        for e in [*pending, *effects]:
            if isinstance(e, Send):
                wire = b""
                for c in e.commands:
                    if c.verb is Verb.BODY:
                        wire += encode_body(bodies[c.arg])
                    elif c.verb is Verb.AUTH_PLAIN:
                        wire += encode_auth_plain(c.arg, c.secret.resolve())
                    else:
                        wire += encode_command(c)
                sock.sendall(wire)
            elif isinstance(e, StartTls):
                sock = ctx.wrap_socket(sock, server_hostname=e.settings.server_name)
                step = session.handle(TlsEstablished(
                    at=time.time(), conn=CONN, protocol=sock.version(), cipher=sock.cipher()[0],
                    peer_subject="CN=mx.example.com"))
            elif isinstance(e, Close):
                sock.close()
        pending = []
        if isinstance(outcomes[-1] if outcomes else None, SessionClosed):
            return outcomes
        if any(isinstance(e, StartTls) for e in effects):
            continue
        if session.state is State.IDLE:
            if todo:
                msg, _ = todo.pop(0)
                step = session.start_transaction(time.time(), msg)
            else:
                step = session.quit(time.time())
            continue
        replies: list[Reply] = []
        while not replies:
            data = sock.recv(65536)
            if not data:
                step = session.handle(Closed(at=time.time(), conn=CONN))
                break
            replies = parser.feed(data)
        else:
            effects_all: list[Any] = []
            for r in replies:
                fx, outs = session.handle(Response(at=time.time(), conn=CONN, reply=r))
                effects_all += fx
                outcomes += outs
            step = (effects_all, [])


def test_a_real_dialog_with_aiosmtpd_over_starttls_and_auth() -> None:
    from tests.support.smtp_servers import SinkServer

    with SinkServer(hostname="mx.example.com", tls="trustme", auth=("scott", "tiger"),
                    reject_recipients={"bad@example.com": "550 5.1.1 no such user"}) as sink:
        s = make("Required", smtp_auth_plain_username="scott",
                 smtp_auth_plain_password={"key_data": "tiger"})
        s.address, s.port = sink.address
        body = b"Subject: hi\n\n.leading dot\nbye"
        msgs = [(TxnMessage("m1", "s@example.org", ("bad@example.com", "good@example.com"),
                            len(body)), body),
                (TxnMessage("m2", "", ("good@example.com",), 3), b"two")]
        outcomes = _run_against(sink, s, msgs, sink.client_context())
        assert [(type(o).__name__, getattr(o, "recipient", ""), getattr(o, "status", ""))
                for o in outcomes] == [
            ("SessionReady", "", ""),
            ("RecipientResult", "bad@example.com", "permanent"),
            ("RecipientResult", "good@example.com", "delivered"),
            ("TransactionDone", "", ""),
            ("SessionReady", "", ""),
            ("RecipientResult", "good@example.com", "delivered"),
            ("TransactionDone", "", ""),
            ("SessionReady", "", ""),
            ("SessionClosed", "", ""),
        ]
        assert outcomes[1].reply == Reply.make(550, "5.1.1", "no such user")
        assert outcomes[2].reply.code == 250
        assert s.tls_info["tls_protocol_version"].startswith("TLS")
        assert [(m.sender, m.recipients, m.content, m.tls, m.login) for m in sink.messages] == [
            ("s@example.org", ("good@example.com",), b"Subject: hi\r\n\r\n.leading dot\r\nbye\r\n",
             True, "scott"),
            ("<>", ("good@example.com",), b"two\r\n", True, "scott"),  # aiosmtpd: null sender
        ]
        assert sink.auth_seen_in_plaintext is False
