"""The listener's shared vocabulary: connection states, settings, one session's state.

The bottom of the listener's modules: `listener_commands` and `listener_auth`
(plain functions over a `Session`) and `listener_session` (the asyncio
Protocol that owns a `Session`) import this, never each other upward, and
`listener` (the server) sits on top.
"""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from engine.cidr import CidrSet

__all__ = ["ListenerSettings", "PasswordCheck", "Session", "State"]


class State(IntEnum):
    """Where a server connection is: reading commands, a DATA body, an AUTH
    continuation line, in the STARTTLS handshake, or closed."""

    CMD = 0
    DATA = 1
    AUTH = 2
    TLS = 3
    CLOSED = 4


class PasswordCheck(Protocol):
    """AUTH users whose passwords are checked by a slow hash (bcrypt:
    `engine.live.authfile.AuthFile`); the connection calls `check` off the
    event loop."""

    def check(self, user: str, password: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """What every connection of one listener reads and never changes."""

    hostname: str
    allowed_networks: CidrSet
    auth: dict[str, str] | PasswordCheck | None  # user -> password, or a hash check
    max_message_size: int
    max_recipients: int
    tls_context: ssl.SSLContext | None
    timeout: float
    tenant_header: str
    campaign_header: str


@dataclass(slots=True)
class Session:
    """One connection's SMTP session: what the client said and what it may do next.

    Command handlers append their replies (CRLF-terminated bytes) to `out` and
    set `close_after` when the connection must close once they are written.
    """

    peer: str = ""
    loopback: bool = False
    state: State = State.CMD
    out: list[bytes] = field(default_factory=list)
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    user: str | None = None
    sender: str | None = None
    smtputf8: bool = False
    rcpts: list[str] = field(default_factory=list)
    bogus: int = 0
    auth_step: tuple[str, bytes | None] | None = None
    auth_failed: bool = False  # a password was refused: the connection slows the 535
    # (mech, user, password) for `ListenerSettings.auth.check`, run off the loop
    auth_check: tuple[str, str, bytes] | None = None
    close_after: bool = False
    # this connection's UUID (KumoMTA's SmtpServerSession session_id, Uuid::new_v4)
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def reset(self) -> None:
        """Forget the envelope (RSET, a new EHLO, a finished or refused message)."""
        self.sender = None
        self.smtputf8 = False
        self.rcpts = []
