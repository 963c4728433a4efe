"""What an SMTP client session reports to the engine (its outcomes) and what a
transaction is given (`TxnMessage`).

Kept apart from the transition table (`engine.session_model`, which
re-exports every name here) so the table's module holds only what decides
what may follow what: states, input kinds, handler names and rows.  These
values are what crosses the line between the session and the engine's
decisions (`engine.outcomes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from engine.effects import Effect
from engine.reply import Reply

__all__ = [
    "DELIVERED",
    "PERMANENT",
    "TRANSIENT",
    "HostFailed",
    "Outcome",
    "RecipientResult",
    "ReconnectInClear",
    "SessionClosed",
    "SessionReady",
    "Status",
    "Step",
    "TlsBroken",
    "TransactionDone",
    "TxnMessage",
]


@dataclass(frozen=True, slots=True, init=False)
class TxnMessage:
    """What a transaction needs of a message (the payload of Input.START): its
    id (the BODY argument, by which the driver finds the spooled content),
    envelope and size."""

    id: str
    sender: str
    recipients: tuple[str, ...]
    size: int = 0

    def __init__(self, id: str, sender: str, recipients: tuple[str, ...],
                 size: int = 0) -> None:
        # written out (init=False): mypyc makes a written __init__ native, a
        # generated one not, and the engine makes these on every message
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "size", size)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError(f"message {self.id}: a transaction needs at least one recipient")


# -- outcomes ----------------------------------------------------------------------

Status = Literal["delivered", "transient", "permanent"]
# Final: literals to the compiled build (setup.py), not a dict lookup per use
DELIVERED: Final = "delivered"
TRANSIENT: Final = "transient"
PERMANENT: Final = "permanent"


@dataclass(frozen=True, slots=True)
class SessionReady:
    """The session reached IDLE: give it a message, or arm the idle timer."""


@dataclass(frozen=True, slots=True, init=False)
class RecipientResult:
    """The outcome for one recipient of a transaction: exactly one per
    recipient.  `command` is the command line the reply answered (without
    CRLF; ``"."`` for the end of data), for the record's ``response.command``."""

    message_id: str
    recipient: str
    status: Status
    reply: Reply
    command: str

    def __init__(self, message_id: str, recipient: str, status: Status, reply: Reply,
                 command: str) -> None:
        # written out, as TxnMessage's
        object.__setattr__(self, "message_id", message_id)
        object.__setattr__(self, "recipient", recipient)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "reply", reply)
        object.__setattr__(self, "command", command)


@dataclass(frozen=True, slots=True, init=False)
class TransactionDone:
    """Every recipient of `message_id` has its RecipientResult.  Emitted for
    every transaction, also when the connection ended during it."""

    message_id: str

    def __init__(self, message_id: str) -> None:
        object.__setattr__(self, "message_id", message_id)  # written out, as TxnMessage's


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
class TlsBroken:
    """The TLS handshake (or the EHLO after it) failed: the engine skips
    STARTTLS on this site for `duration` seconds when the mode is
    opportunistic.  KumoMTA's ``remember_broken_tls``
    (crates/kumod/src/smtp_dispatcher.rs): reported only when that key is set,
    or 15 min when opportunistic_tls_reconnect_on_failed_handshake is."""

    duration: float


@dataclass(frozen=True, slots=True, init=False)
class SessionClosed:
    """The connection is gone and the session is done.  Always the last
    outcome of a session, emitted exactly once."""

    reason: str

    def __init__(self, reason: str) -> None:
        object.__setattr__(self, "reason", reason)  # written out, as TxnMessage's


Outcome = (
    SessionReady
    | RecipientResult
    | TransactionDone
    | HostFailed
    | ReconnectInClear
    | TlsBroken
    | SessionClosed
)
Step = tuple[list[Effect], list[Outcome]]
"""What each call of the session returns: effects for the driver, outcomes for
the engine."""

