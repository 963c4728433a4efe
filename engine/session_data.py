"""What one SMTP client connection knows (`SessionData`), and the few
effect-making steps every handler shares: arm the command timer, send,
end the session, fail the host, reach IDLE.

Below the handlers (`engine.session_setup`, `engine.session_txn`) and
above the table (`engine.session_model`), so both handler modules can name
the session's fields and these steps without importing each other or
`engine.session`.  `engine.session.Session` adds the calls the engine
makes on top of these fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from engine.effects import Effect, SetTimer, SmtpCommand, TlsSettings
from engine.makers import (
    make_cancel_timer,
    make_close,
    make_command,
    make_recipient_result,
    make_send,
    make_session_closed,
    make_set_timer,
    make_transaction_done,
)
from engine.reply import Reply
from engine.session_model import (
    DELIVERED,
    PERMANENT,
    TRANSIENT,
    HostFailed,
    Outcome,
    SessionReady,
    State,
    Status,
    TxnMessage,
)

if TYPE_CHECKING:
    from engine.config import EgressPathConfig

__all__ = [
    "AWAITED",
    "PHASE",
    "READY",
    "Fx",
    "Handler",
    "Out",
    "SessionData",
    "arm",
    "end_session",
    "fail_host",
    "mail_line",
    "make_close",
    "make_command",
    "make_recipient_result",
    "make_send",
    "make_set_timer",
    "make_transaction_done",
    "reach_idle",
    "reply_status",
    "send",
    "where",
]

Fx = list[Effect]
Out = list[Outcome]

# The effects and outcomes made on every reply are built by `engine.makers`
# (the make_* names above are re-exported for the session's handlers).
# Final: the compiled build (setup.py) keeps a Final module name in a C static;
# any other is looked up in the module's dict at every use.
READY: Final = SessionReady()  # no fields: one value serves every session

# What the session is waiting for in each state, for messages ("... during DATA").
PHASE: Final = {
    State.AWAIT_CONNECT: "connect",
    State.AWAIT_BANNER: "the banner",
    State.EHLO_SENT: "EHLO",
    State.STARTTLS_SENT: "STARTTLS",
    State.TLS_HANDSHAKE: "the TLS handshake",
    State.EHLO2_SENT: "EHLO after STARTTLS",
    State.AUTH_SENT: "AUTH PLAIN",
    State.IDLE: "idle",
    State.RSET_SENT: "RSET",
    State.MAIL_SENT: "MAIL FROM",
    State.RCPT_SENT: "RCPT TO",
    State.DATA_SENT: "DATA",
    State.BODY_SENT: "DATA",
    State.QUIT_SENT: "QUIT",
}
# ... and what a timeout there waited for ("waiting for the reply to ... timed out").
AWAITED: Final = {**PHASE, State.BODY_SENT: "the end of DATA (.)"}


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class SessionData:
    """One SMTP client connection to `host` at `address`:`port`.

    `tls` is the effective TLS mode (after DANE, MTA-STS and broken TLS; an
    `EnableTls` or its string value), `tls_settings` what the driver's
    handshake needs (`engine.tls_policy.tls_for`).
    Read-only for the engine: `state`, `capabilities` (EHLO keywords),
    `tls_active` and the TLS details (`tls_info` for Delivery records),
    `transactions` (started on this connection), `message` (in flight).
    """

    __slots__ = (
        "accepted",
        "address",
        "batch",
        "cancel_timer",
        "capabilities",
        "cfg",
        "conn",
        "ehlo_domain",
        "esmtp",
        "host",
        "mail_cmd",
        "mail_failed",
        "mail_line",
        "message",
        "opened_at",
        "pipelined",
        "port",
        "replies",
        "state",
        "timeout",
        "timer",
        "tls",
        "tls_active",
        "tls_cipher",
        "tls_defer",
        "tls_failure",
        "tls_peer_subject",
        "tls_protocol",
        "tls_settings",
        "transactions",
        "use_rset",
    )

    def __init__(
        self,
        *,
        conn: int,
        host: str,
        address: str,
        port: int,
        cfg: EgressPathConfig,
        tls: str,
        tls_settings: TlsSettings,
        ehlo_domain: str,
        opened_at: float,
        tls_defer: str = "",
    ) -> None:
        self.conn = conn
        self.host = host
        self.address = address
        self.port = port
        self.cfg = cfg
        self.tls = tls
        self.tls_settings = tls_settings
        self.ehlo_domain = ehlo_domain
        self.opened_at = opened_at
        # why this host must be deferred once greeted (a TLSA lookup that failed:
        # KumoMTA bails after EHLO rather than go on unauthenticated); "" if not
        self.tls_defer = tls_defer
        self.state = State.AWAIT_CONNECT
        self.timer = ("conn", conn)
        self.cancel_timer = make_cancel_timer(self.timer)  # immutable, so shared
        self.timeout = 0.0  # seconds of the timer armed last (for messages)
        self.capabilities: dict[str, tuple[str, ...]] = {}
        self.esmtp = True  # no HELO fallback: KumoMTA fails the host on a 5xx to EHLO
        self.tls_active = False
        self.tls_protocol = ""
        self.tls_cipher = ""
        self.tls_peer_subject = ""
        # why the handshake failed, when the session went on in clear on the same
        # socket (OpportunisticInsecure, as KumoMTA): no second STARTTLS then
        self.tls_failure = ""
        self.transactions = 0
        # RSET before the next transaction: never before a connection's first,
        # always after a failed one, after a delivered one only with enable_rset
        # (crates/rfc5321/src/client.rs, ``use_rset``)
        self.use_rset = False
        # the transaction in flight
        self.message: TxnMessage | None = None
        self.batch: tuple[str, ...] = ()  # recipients attempted (max_recipients_per_batch)
        self.accepted: list[str] = []  # RCPT accepted, waiting for the DATA/dot reply
        self.replies = 0  # RCPT replies received so far
        self.mail_failed = False
        self.pipelined = False
        self.mail_cmd: SmtpCommand | None = None
        self.mail_line = ""

    def __repr__(self) -> str:
        return f"<Session {self.conn} {self.host} [{self.address}]:{self.port} {self.state.name}>"

    def set_timer(self, at: float) -> SetTimer:
        """The effect arming this connection's command timer."""
        return make_set_timer(self.timer, at)

    @property
    def tls_info(self) -> dict[str, str]:
        """The TLS fields of a Delivery record; empty when TLS is not in use."""
        if not self.tls_active:
            return {}
        return {
            "tls_protocol_version": self.tls_protocol,
            "tls_cipher": self.tls_cipher,
            "tls_peer_subject_name": self.tls_peer_subject,
        }


Handler = Callable[[SessionData, float, Any, Fx, Out], "State | None"]
"""Every handler: ``(session, at, payload, effects, outcomes) -> State | None``,
`payload` being the event, the `TxnMessage`, or None.  It appends effects and
outcomes, updates the session, and returns the next state when its row lists
more than one (None: the row's first).  It never raises: `Session` calls it
only once the table has a row."""


def reply_status(reply: Reply) -> Status:
    """KumoMTA's classes: 2xx delivered; 4xx, 3xx and 503 transient; other 5xx
    permanent (an unexpected 3xx is classified by its caller)."""
    klass = reply.code // 100
    if klass == 2:
        return DELIVERED
    if klass == 5 and reply.code != 503:
        return PERMANENT
    return TRANSIENT


def where(s: SessionData) -> str:
    """The peer, for messages: ``mx.example.com [192.0.2.7]:25``."""
    return f"{s.host} [{s.address}]:{s.port}"


def mail_line(s: SessionData) -> str:
    """The MAIL command line of the transaction, for `RecipientResult.command`
    (``"MAIL FROM:<a@b> SIZE=12"``); built on first use, since most
    transactions never need it."""
    if not s.mail_line:
        cmd = s.mail_cmd
        assert cmd is not None
        s.mail_line = f"MAIL FROM:<{cmd.arg}>" + (f" {cmd.params}" if cmd.params else "")
    return s.mail_line


def arm(s: SessionData, at: float, seconds: float, fx: Fx) -> None:
    """Arm the command timer for `seconds`.  The per-reply handlers spell
    these two lines out instead of calling this: one call fewer on nearly
    every reply."""
    s.timeout = seconds
    fx.append(make_set_timer(s.timer, at + seconds))


def send(s: SessionData, fx: Fx, *commands: SmtpCommand) -> None:
    fx.append(make_send(s.conn, commands))


def end_session(
    s: SessionData, fx: Fx, out: Out, reason: str, *, cancel: bool, close: bool
) -> State:
    """The connection is over: cancel the command timer unless it just fired,
    close unless the peer already did, and say so last."""
    if cancel:
        fx.append(s.cancel_timer)
    if close:
        fx.append(make_close(s.conn))
    out.append(make_session_closed(reason))
    return State.CLOSED


def fail_host(
    s: SessionData, fx: Fx, out: Out, reason: str, reply: Reply, *, cancel: bool = True,
    close: bool = True,
) -> State:
    """This host is unusable: say why, then end the session."""
    out.append(HostFailed(reason, reply))
    return end_session(s, fx, out, reason, cancel=cancel, close=close)


def reach_idle(s: SessionData, fx: Fx, out: Out) -> State:
    """Ready for a transaction: no command timer while idle."""
    fx.append(s.cancel_timer)
    out.append(READY)
    return State.IDLE
