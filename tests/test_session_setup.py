"""Tests for engine.session_setup (through Session): from connecting to IDLE:
the banner, HELO fallback, the five TLS modes, AUTH PLAIN, and the EHLO
keywords."""

from __future__ import annotations

from typing import Any

import pytest

from engine.effects import Close, Send, SmtpCommand, Verb
from engine.events import (
    Connected,
    ConnectFailed,
    TlsEstablished,
    TlsFailed,
)
from engine.reply import Reply
from engine.session import (
    HostFailed,
    SessionClosed,
    State,
)
from engine.session_setup import parse_ehlo
from tests.support.session_kit import (
    CONN,
    EHLO_CAPS,
    cancel,
    cmd,
    fire,
    greet,
    make,
    resp,
    send,
    timer,
)

# -- connecting and the greeting -----------------------------------------------------------


def test_connect_failed() -> None:
    s = make()
    s.connect(0.0)
    fx, out = s.handle(ConnectFailed(at=1.0, conn=CONN, reason="connection refused"))
    reason = "connect to mx.example.com [192.0.2.7]:25 failed: connection refused"
    assert fx == [cancel()]
    assert out == [HostFailed(reason, Reply.make(421, "4.4.1", reason)), SessionClosed(reason)]
    assert s.state is State.CLOSED


def test_banner_421_fails_the_host() -> None:
    s = make()
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    fx, out = s.handle(resp(2.0, 421, "too busy", "4.3.2"))
    reason = "mx.example.com [192.0.2.7]:25 refused the banner: 421 4.3.2 too busy"
    assert out == [HostFailed(reason, Reply.make(421, "4.3.2", "too busy")),
                   SessionClosed(reason)]
    assert fx == [cancel(), Close(conn=CONN)]


@pytest.mark.parametrize("tls", [False, True])
def test_ehlo_5xx_fails_the_host_without_helo_fallback(tls: bool) -> None:
    """crates/rfc5321/src/client.rs, ``ehlo_common``: a non-250 reply to EHLO is
    ``ClientError::Rejected``, and crates/kumod/src/smtp_dispatcher.rs fails the
    connection attempt with it ("EHLO after banner"); no HELO is sent."""
    s = make()
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220))
    if tls:
        s.handle(resp(3.0, 250, EHLO_CAPS))
        s.handle(resp(3.5, 220))
        s.handle(TlsEstablished(at=3.7, conn=CONN))
    fx, out = s.handle(resp(4.0, 502, "no EHLO here", "5.5.1"))
    assert [c for e in fx if isinstance(e, Send) for c in e.commands] == []
    assert Close(conn=CONN) in fx
    assert isinstance(out[0], HostFailed) and out[0].reply.code == 502
    assert s.state is State.CLOSED


def test_parse_ehlo() -> None:
    assert parse_ehlo(EHLO_CAPS) == {"PIPELINING": (), "SIZE": ("10000000",), "STARTTLS": (),
                                     "AUTH": ("LOGIN", "PLAIN"), "8BITMIME": ()}
    assert parse_ehlo("mx\nauth=login\nAUTH PLAIN\n\n") == {"AUTH": ("LOGIN", "PLAIN")}
    assert parse_ehlo("mx only") == {}


# -- TLS modes -----------------------------------------------------------------------------


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
                if s.state is State.EHLO2_SENT:  # OpportunisticInsecure: on in clear
                    steps.append(s.handle(resp(6.0, 250, caps)))
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
        ("OpportunisticInsecure", "handshake fails", State.IDLE, READY, [E, S_, E]),
        ("Required", "handshake fails", State.CLOSED, FAILED, [E, S_]),
        ("RequiredInsecure", "handshake fails", State.CLOSED, FAILED, [E, S_]),
        ("Disabled", "handshake fails", State.IDLE, READY, [E]),
        # STARTTLS answered with 454: the host fails in every mode (KumoMTA)
        ("Opportunistic", "refused", State.CLOSED, FAILED, [E, S_]),
        ("OpportunisticInsecure", "refused", State.CLOSED, FAILED, [E, S_]),
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
    # the site's TLS is remembered broken for 15 min by default with that key
    assert got == (State.CLOSED, ["TlsBroken", *CLEAR], [E, S_])


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


def test_starttls_reply_and_handshake_are_timed_separately() -> None:
    s = make("OpportunisticInsecure", starttls_timeout=7)
    s.connect(0.0)
    s.handle(Connected(at=1.0, conn=CONN))
    s.handle(resp(2.0, 220))
    assert s.handle(resp(3.0, 250, "mx\nSTARTTLS")) == ([send(cmd(Verb.STARTTLS)), timer(10.0)],
                                                        [])
    fx, _ = s.handle(resp(4.0, 220))
    assert timer(11.0) in fx  # a fresh starttls_timeout for the handshake
    fx, out = s.handle(fire(11.0))
    reason = "TLS handshake with mx.example.com [192.0.2.7]:25 timed out after 7s"
    assert fx == [Close(conn=CONN)]
    assert out == [HostFailed(reason, Reply.make(421, "4.4.2", reason)), SessionClosed(reason)]


# -- AUTH PLAIN ----------------------------------------------------------------------------


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
