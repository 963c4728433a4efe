"""Shared helpers for the session tests (tests/test_session*.py): a session on
a fixed connection, replies, timers and the commands it is expected to send."""

from __future__ import annotations

from typing import Any

from engine.config import make_egress_path
from engine.effects import (
    CancelTimer,
    Send,
    SetTimer,
    SmtpCommand,
    TlsMode,
    TlsSettings,
    Verb,
)
from engine.events import (
    Connected,
    Response,
    TimerFired,
)
from engine.reply import Reply
from engine.session import (
    Session,
    State,
    TxnMessage,
)

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


MODES = ["Opportunistic", "OpportunisticInsecure", "Required", "RequiredInsecure", "Disabled"]
AUTH = dict(smtp_auth_plain_username="scott", smtp_auth_plain_password={"key_data": "tiger"})
ONE = TxnMessage("m1", "s@example.org", ("a@example.com",), 10)


def deliver(s: Session, at: float, msg: TxnMessage = MSG) -> None:
    s.start_transaction(at, msg)
    while s.state is not State.IDLE:
        code = {State.DATA_SENT: 354}.get(s.state, 250)
        s.handle(resp(at, code))

