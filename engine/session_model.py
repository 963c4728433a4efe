"""The vocabulary of the SMTP session machine: states, input kinds, outcomes.

Kept apart from the table (`engine.session_table`) and the handlers
(`engine.session_handlers`) so that both can name the states and outcomes
without importing each other, and so that the engine can import the
outcome types without pulling in the machine.  Everything here is a plain
value: enums, and frozen slotted dataclasses like events and effects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from engine.effects import Effect
from engine.reply import Reply

__all__ = [
    "DELIVERED",
    "PERMANENT",
    "TRANSIENT",
    "HostFailed",
    "Input",
    "Outcome",
    "RecipientResult",
    "ReconnectInClear",
    "SessionClosed",
    "SessionReady",
    "State",
    "Status",
    "Step",
    "TransactionDone",
    "TxnMessage",
    "parse_ehlo",
]


class State(enum.Enum):
    """Where one SMTP client connection stands.  `*_SENT` states wait for the
    reply to that command (with PIPELINING, for the reply to the earliest
    command of the batch still unanswered)."""

    AWAIT_CONNECT = enum.auto()  # Connect emitted, waiting for Connected
    AWAIT_BANNER = enum.auto()  # connected, waiting for the 220
    EHLO_SENT = enum.auto()
    HELO_SENT = enum.auto()  # EHLO was refused with 5xx; HELO fallback
    STARTTLS_SENT = enum.auto()
    TLS_HANDSHAKE = enum.auto()  # StartTls emitted, waiting for TlsEstablished/TlsFailed
    EHLO2_SENT = enum.auto()  # EHLO again, inside TLS
    AUTH_SENT = enum.auto()
    IDLE = enum.auto()  # ready for a transaction (or QUIT)
    RSET_SENT = enum.auto()
    MAIL_SENT = enum.auto()
    RCPT_SENT = enum.auto()
    DATA_SENT = enum.auto()
    BODY_SENT = enum.auto()  # content and final dot sent, waiting for its reply
    QUIT_SENT = enum.auto()
    CLOSED = enum.auto()  # terminal

    # Hashed by identity (members are singletons and compare by identity): the
    # table is looked up once per event, and Enum's own __hash__ is Python code.
    __hash__ = object.__hash__


class Input(enum.Enum):
    """The kinds of input the table is keyed by: each event type, a reply by
    its class (421 on its own, since it ends the connection whatever was
    asked), and the three calls the engine makes."""

    CONNECT = enum.auto()  # Session.connect()
    START = enum.auto()  # Session.start_transaction()
    QUIT = enum.auto()  # Session.quit()
    CONNECTED = enum.auto()
    CONNECT_FAILED = enum.auto()
    TLS_OK = enum.auto()
    TLS_FAILED = enum.auto()
    R2XX = enum.auto()
    R3XX = enum.auto()
    R4XX = enum.auto()
    R421 = enum.auto()
    R5XX = enum.auto()
    TIMEOUT = enum.auto()  # TimerFired(("conn", conn))
    CLOSED = enum.auto()
    MALFORMED = enum.auto()

    __hash__ = object.__hash__  # as State's


Status = Literal["delivered", "transient", "permanent"]
DELIVERED: Status = "delivered"
TRANSIENT: Status = "transient"
PERMANENT: Status = "permanent"


@dataclass(frozen=True, slots=True)
class TxnMessage:
    """What a transaction needs of a message: its id (the BODY argument, by
    which the driver finds the spooled content), envelope and size."""

    id: str
    sender: str
    recipients: tuple[str, ...]
    size: int = 0

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError(f"message {self.id}: a transaction needs at least one recipient")


@dataclass(frozen=True, slots=True)
class SessionReady:
    """The session reached IDLE: give it a message, or arm the idle timer."""


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome for one recipient of a transaction: exactly one per
    recipient.  `command` is the command line the reply answered (without
    CRLF; ``"."`` for the end of data), for the record's ``response.command``."""

    message_id: str
    recipient: str
    status: Status
    reply: Reply
    command: str


@dataclass(frozen=True, slots=True)
class TransactionDone:
    """Every recipient of `message_id` has its RecipientResult.  Emitted for
    every transaction, also when the connection ended during it."""

    message_id: str


@dataclass(frozen=True, slots=True)
class HostFailed:
    """This host cannot be used (before any transaction on this connection):
    try the next one.  `reply` is what to log; synthetic when the server
    said nothing (connect failure, timeout, a TLS or AUTH rule)."""

    reason: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class ReconnectInClear:
    """The TLS handshake failed and the mode allows clear text with this
    host: connect again to the same address with TLS disabled."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The connection is gone and the session is done.  Always the last
    outcome of a session, emitted exactly once."""

    reason: str


Outcome = (
    SessionReady | RecipientResult | TransactionDone | HostFailed | ReconnectInClear | SessionClosed
)
Step = tuple[list[Effect], list[Outcome]]
"""What each call of the session returns: effects for the driver, outcomes for
the engine."""


def parse_ehlo(text: str) -> dict[str, tuple[str, ...]]:
    """The EHLO keywords of a 250 reply's text (lines joined with ``"\\n"``,
    the first being the server's greeting), upper-cased, each with its
    parameters: ``{"PIPELINING": (), "AUTH": ("PLAIN", "LOGIN"), "SIZE": ("1000",)}``.
    The obsolete ``AUTH=PLAIN`` spelling counts as AUTH."""
    caps: dict[str, tuple[str, ...]] = {}
    for line in text.split("\n")[1:]:
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        params = tuple(w.upper() for w in words[1:])
        if keyword.startswith("AUTH="):
            params = (keyword[5:], *params)
            keyword = "AUTH"
        if keyword in caps:
            params = caps[keyword] + tuple(p for p in params if p not in caps[keyword])
        caps[keyword] = params
    return caps
