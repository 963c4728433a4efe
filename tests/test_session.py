"""Tests for engine.session: dialog traces (events in, the exact effects and
outcomes out) for the greeting, RSET, HELO fallback, the five TLS modes and
AUTH PLAIN.  Transactions and timeouts: test_session_txn.py; the table's
totality: test_session_table.py; a real server: test_session_live.py."""

from __future__ import annotations

from typing import Any

import pytest

from engine.effects import (
    Close,
    Send,
    SetTimer,
    SmtpCommand,
    StartTls,
    Verb,
)
from engine.events import (
    Connected,
    ConnectFailed,
    TlsEstablished,
    TlsFailed,
)
from engine.reply import Reply
from engine.session import (
    QUIT_TIMEOUT,
    HostFailed,
    RecipientResult,
    ReconnectInClear,
    SessionClosed,
    SessionReady,
    State,
    TransactionDone,
    TxnMessage,
)
from tests.support.session_kit import (
    CONN,
    EHLO_CAPS,
    MSG,
    SETTINGS,
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
