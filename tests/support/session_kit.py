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
    Input,
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
# a distinct value per command timer, so each is recognisable in the effects
TIMEOUTS = dict(connect_timeout=11, banner_timeout=12, ehlo_timeout=13, starttls_timeout=14,
                auth_timeout=15, mail_from_timeout=16, rcpt_to_timeout=17, data_timeout=18,
                data_dot_timeout=19, rset_timeout=20)
ONE = TxnMessage("m1", "s@example.org", ("a@example.com",), 10)


def deliver(s: Session, at: float, msg: TxnMessage = MSG) -> None:
    s.start_transaction(at, msg)
    while s.state is not State.IDLE:
        code = {State.DATA_SENT: 354}.get(s.state, 250)
        s.handle(resp(at, code))


def snapshot(s: Session) -> dict[str, Any]:
    """Every field of `s`, its lists and dicts copied: to compare before and after."""
    names = [name for cls in type(s).__mro__ for name in getattr(cls, "__slots__", ())]
    assert "state" in names and "accepted" in names
    values = {name: getattr(s, name) for name in names}
    return {name: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
            for name, v in values.items()}


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
    if state is State.QUIT_SENT:
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
