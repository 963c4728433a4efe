"""What a scenario host says, and what it counts: its replies, a connection
attempt's outcome, a transaction's progress and the host's counters.

Split from `sim.host_behaviour` (which decides *when* each is said) so that
module stays short; both realisations import these names from there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

from engine.reply import Reply
from engine.snapshot import by_fields

# -- the replies a scenario host gives ----------------------------------------------------

BUSY: Final = Reply.make(421, "4.7.0", "Too many concurrent connections; try again later")
MAIL_OK: Final = Reply.make(250, "2.1.0", "Sender OK")
MAIL_TEMPFAIL: Final = Reply.make(451, "4.3.0", "Temporary local problem; try again later")
MAIL_OUTAGE: Final = Reply.make(
    451, "4.3.0", "Service temporarily unavailable (outage); try again later")
RCPT_OK: Final = Reply.make(250, "2.1.5", "Recipient OK")
RCPT_TEMPFAIL: Final = Reply.make(450, "4.2.1", "Mailbox temporarily unavailable; try again later")
RCPT_PERMFAIL: Final = Reply.make(550, "5.1.1", "No such user here")
NEED_MAIL: Final = Reply.make(503, "5.5.1", "Need MAIL command first")
DATA_OK: Final = Reply(code=354, text="Start mail input; end with <CRLF>.<CRLF>")
NO_RECIPIENTS: Final = Reply.make(554, "5.5.1", "No valid recipients")
BODY_OK: Final = Reply.make(250, "2.0.0", "Message accepted for delivery")
BODY_TEMPFAIL: Final = Reply.make(451, "4.3.0", "Temporary failure after DATA; try again later")
BODY_PERMFAIL: Final = Reply.make(554, "5.7.1", "Message rejected by content policy")
RSET_OK: Final = Reply.make(250, "2.0.0", "OK")
QUIT_OK: Final = Reply.make(221, "2.0.0", "Bye")
STARTTLS_OK: Final = Reply.make(220, "2.0.0", "Ready to start TLS")
NOT_OFFERED: Final = Reply.make(502, "5.5.1", "Command not implemented")
AUTH_OK: Final = Reply.make(235, "2.7.0", "Authentication successful")
UNKNOWN: Final = Reply.make(500, "5.5.2", "Command unrecognized")

# Replies after which the connection stops reading commands: the body
# follows (354), the TLS handshake (220 to STARTTLS), or the close (221).
TURNS: Final = (DATA_OK, STARTTLS_OK, QUIT_OK)


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """What a connection attempt meets.

    `kind` is ``"ok"`` (the TCP connection opens and `banner` arrives after
    `delay`: 220, or 421 4.7.0 beyond max_connections), ``"refused"`` (after
    `delay`), or ``"blackhole"`` (nothing ever answers; `delay` is inf and
    the client's connect or banner timeout decides).  Every ``"ok"`` holds
    one of the host's connection slots until it closes.
    """

    kind: str
    delay: float
    banner: Reply | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)  # compiled, a frozen class pickles no other way


BLACKHOLE: Final = ConnectResult("blackhole", math.inf, None)


class Txn:
    """What MAIL and RCPT have said on one connection.  `any_rcpt` is None
    until a RCPT is seen, so DATA after a batch holding no RCPT is taken as
    following accepted ones (how the simulator answers one batch at a time)."""

    __slots__ = ("any_rcpt", "mail_ok")

    def __init__(self, mail_ok: bool = False, any_rcpt: bool | None = False) -> None:
        self.mail_ok = mail_ok
        self.any_rcpt = any_rcpt


@dataclass(slots=True)
class HostCounters:
    """What one host saw.  `deferred` counts 4xx replies to MAIL, RCPT and the
    dot; `rejected` 5xx ones; `refused` connections refused or reset at once;
    `busy` 421 banners beyond max_connections; `open` the connections held now
    (421 ones too) and `peak_connections` the most at once."""

    connections: int = 0
    accepted: int = 0
    deferred: int = 0
    rejected: int = 0
    refused: int = 0
    busy: int = 0
    blackholed: int = 0
    tls_handshakes: int = 0
    tls_failures: int = 0
    open: int = 0
    peak_connections: int = 0

    def connected(self, result: ConnectResult) -> None:
        """Count one connection attempt and what `HostBehaviour.connect` said."""
        self.connections += 1
        kind = result.kind
        if kind == "ok":
            self.open += 1
            if self.open > self.peak_connections:
                self.peak_connections = self.open
            if result.banner is BUSY:
                self.busy += 1
        elif kind == "refused":
            self.refused += 1
        else:
            self.blackholed += 1

    def released(self) -> None:
        """A connection that was ``"ok"`` has closed."""
        if self.open <= 0:
            raise ValueError("released() without an open connection")
        self.open -= 1

    def failed(self, reply: Reply) -> None:
        """A fault's reply to MAIL, RCPT or the dot."""
        if reply.code >= 500:
            self.rejected += 1
        else:
            self.deferred += 1

    def to_dict(self) -> dict[str, int]:
        """Plain values for JSON and tables."""
        return asdict(self)
