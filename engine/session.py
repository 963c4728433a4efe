"""The SMTP client session machine: one `Session` per TCP connection.

Sans-IO, like h11 and h2: the session is fed events (`Connected`,
`Response`, `TimerFired`...) and the engine's calls (`connect`,
`start_transaction`, `quit`), and answers with a `Step`: effects for the
driver (`Send`, `StartTls`, `SetTimer`, `Close`...) and outcomes for the
engine (`RecipientResult`, `HostFailed`, `SessionReady`...).  The engine
decides what follows; the session only speaks SMTP.

What may follow what is the table in `engine.session_table`; the handlers
it names live in `engine.session_handlers` (connect, greeting, TLS, AUTH)
and `engine.session_txn` (transactions, QUIT); the vocabulary (states,
input kinds, outcomes) in `engine.session_model`.  This module only turns
an input into its kind, looks the row up, and commits the next state.

Illegal input (a pair with no row) raises `ProtocolError` of one fixed
shape, ``"session 17 cannot handle Response(354) in state MAIL_SENT"``,
before anything has changed: the lookup happens first and handlers never
raise, so a rejected input leaves the session exactly as it was.

Per-event cost matters (the simulator runs about ten per message): one
type check or arithmetic step for the kind, one dict lookup for the row,
and no allocation beyond the effects and outcomes themselves.

Command timeouts use one timer per connection, ``("conn", conn)``, armed
(re-armed) when a command is sent or, in a pipelined batch, as each reply
arrives with the timeout of the command answered next; cancelled on
reaching IDLE or on closing.  A timeout before IDLE makes the host
unusable (`HostFailed`); inside a transaction it defers the in-flight
recipients with ``421 4.4.2 ... timed out``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.effects import CancelTimer, SetTimer, SmtpCommand, TlsSettings
from engine.errors import ProtocolError
from engine.events import (
    Closed,
    Connected,
    ConnectFailed,
    ConnEvent,
    Malformed,
    Response,
    TimerFired,
    TlsEstablished,
    TlsFailed,
    trusted_factory,
)
from engine.session_handlers import QUIT_TIMEOUT, reply_status
from engine.session_model import (
    DELIVERED,
    PERMANENT,
    TRANSIENT,
    HostFailed,
    Input,
    Outcome,
    RecipientResult,
    ReconnectInClear,
    SessionClosed,
    SessionReady,
    State,
    Status,
    Step,
    TransactionDone,
    TxnMessage,
    parse_ehlo,
)
from engine.session_table import TRANSITIONS, Row

if TYPE_CHECKING:
    from engine.config import EgressPathConfig

__all__ = [
    "DELIVERED",
    "PERMANENT",
    "QUIT_TIMEOUT",
    "TRANSIENT",
    "TRANSITIONS",
    "HostFailed",
    "Input",
    "Outcome",
    "RecipientResult",
    "ReconnectInClear",
    "Session",
    "SessionClosed",
    "SessionReady",
    "State",
    "Status",
    "Step",
    "TransactionDone",
    "TxnMessage",
    "parse_ehlo",
    "reply_status",
]

_EVENT_KINDS: dict[type, Input] = {
    Connected: Input.CONNECTED,
    ConnectFailed: Input.CONNECT_FAILED,
    TlsEstablished: Input.TLS_OK,
    TlsFailed: Input.TLS_FAILED,
    Malformed: Input.MALFORMED,
    Closed: Input.CLOSED,
}
_REPLY_KINDS = {2: Input.R2XX, 3: Input.R3XX, 4: Input.R4XX, 5: Input.R5XX}


def _reply_kind(code: int) -> Input | None:
    """The input kind of a reply code: its class, 421 on its own."""
    return Input.R421 if code == 421 else _REPLY_KINDS.get(code // 100)


# The table, reshaped for the one lookup made per input (TRANSITIONS stays the
# one place rows are written): per state, the rows by input kind, and for
# replies a list indexed by the reply code itself, so a Response costs one
# list index instead of classifying the code and hashing a (state, kind) pair.
_ROWS: dict[State, dict[Input, Row]] = {state: {} for state in State}
for (_state, _kind), _row in TRANSITIONS.items():
    _ROWS[_state][_kind] = _row
_REPLY_ROWS: dict[State, list[Row | None]] = {
    state: [None if (k := _reply_kind(code)) is None else rows.get(k) for code in range(600)]
    for state, rows in _ROWS.items()
}
_SetTimer = trusted_factory(SetTimer)
_CancelTimer = trusted_factory(CancelTimer)


def _describe(ev: Any) -> str:
    t = type(ev)
    if t is Response:
        return f"Response({ev.reply.code})"
    if t is TimerFired:
        return f"TimerFired({ev.timer!r})"
    return t.__name__


class Session:
    """One SMTP client connection to `host` at `address`:`port`.

    `tls` is the effective TLS mode (after MTA-STS and DANE; an `EnableTls`
    or its string value), `tls_settings` what the driver's handshake needs.
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
        "tls_peer_subject",
        "tls_protocol",
        "tls_settings",
        "transactions",
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
        self.state = State.AWAIT_CONNECT
        self.timer = ("conn", conn)
        self.cancel_timer = _CancelTimer(self.timer)  # immutable, so shared
        self.timeout = 0.0  # seconds of the timer armed last (for messages)
        self.capabilities: dict[str, tuple[str, ...]] = {}
        self.esmtp = True  # False after the HELO fallback
        self.tls_active = False
        self.tls_protocol = ""
        self.tls_cipher = ""
        self.tls_peer_subject = ""
        self.transactions = 0
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

    # -- what the engine calls -----------------------------------------------------

    def connect(self, at: float) -> Step:
        """Arm the connect timeout (the engine emits `Connect` itself)."""
        return self._run(Input.CONNECT, at, None, "connect()")

    def handle(self, ev: ConnEvent | TimerFired) -> Step:
        """Feed one event about this connection (or its ``("conn", conn)`` timer)."""
        t = type(ev)
        if t is Response:  # most inputs: straight to the row by the reply code
            if ev.conn != self.conn:  # type: ignore[union-attr]
                self._refuse(f"{_describe(ev)} of conn {ev.conn}")  # type: ignore[union-attr]
            row = _REPLY_ROWS[self.state][ev.reply.code]  # type: ignore[union-attr]
        elif t is TimerFired:
            if ev.timer != self.timer:  # type: ignore[union-attr]
                self._refuse(_describe(ev))
            row = _ROWS[self.state].get(Input.TIMEOUT)
        else:
            kind = _EVENT_KINDS.get(t)
            if kind is None:
                self._refuse(_describe(ev))
            if ev.conn != self.conn:  # type: ignore[union-attr]
                self._refuse(f"{_describe(ev)} of conn {ev.conn}")  # type: ignore[union-attr]
            row = _ROWS[self.state].get(kind)  # type: ignore[arg-type]
        if row is None:
            self._refuse(ev)  # described only when refused
        handler, targets = row  # type: ignore[misc]
        fx: list[Any] = []
        out: list[Outcome] = []
        nxt = handler(self, ev.at, ev, fx, out)
        if nxt is None:
            nxt = targets[0]
        elif nxt not in targets:
            raise AssertionError(f"{handler.__name__} chose {nxt.name}, not in {targets}")
        self.state = nxt
        return fx, out

    def start_transaction(self, at: float, msg: TxnMessage) -> Step:
        """Send one message (only in IDLE)."""
        return self._run(Input.START, at, msg, "start_transaction()")

    def quit(self, at: float) -> Step:
        """Say goodbye (only in IDLE): QUIT, then Close on its reply or after
        QUIT_TIMEOUT seconds."""
        return self._run(Input.QUIT, at, None, "quit()")

    # -- what handlers use ---------------------------------------------------------

    def set_timer(self, at: float) -> SetTimer:
        """The effect arming this connection's command timer."""
        return _SetTimer(self.timer, at)

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

    # -- the machine -----------------------------------------------------------------

    def _refuse(self, what: Any) -> None:
        if not isinstance(what, str):
            what = _describe(what)
        raise ProtocolError(
            f"session {self.conn} cannot handle {what} in state {self.state.name}"
        ) from None

    def _run(self, kind: Input, at: float, payload: Any, what: Any) -> Step:
        row = _ROWS[self.state].get(kind)
        if row is None:
            self._refuse(what)
        handler, targets = row  # type: ignore[misc]
        fx: list[Any] = []
        out: list[Outcome] = []
        nxt = handler(self, at, payload, fx, out)
        if nxt is None:
            nxt = targets[0]
        elif nxt not in targets:
            raise AssertionError(f"{handler.__name__} chose {nxt.name}, not in {targets}")
        self.state = nxt
        return fx, out
