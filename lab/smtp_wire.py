"""The SMTP wire of a lab server: replies as bytes, transactions, counters.

Split from `lab.servers` so that module holds only the connection's life;
what a reply looks like on the wire and what a host counts live here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from engine.reply import Reply

if TYPE_CHECKING:
    pass


def wire(reply: Reply) -> bytes:
    """A reply as the server sends it: one CRLF line per text line, enhanced
    code repeated on each line, ``-`` after the code on all lines but the last."""
    lines = reply.text.split("\n") or [""]
    code = str(reply.code)
    enhanced = f"{reply.enhanced} " if reply.enhanced is not None else ""
    out = []
    for i, line in enumerate(lines):
        sep = "-" if i < len(lines) - 1 else " "
        out.append(f"{code}{sep}{enhanced}{line}\r\n")
    return "".join(out).encode()


@dataclass(slots=True)
class HostCounters:
    """What one host saw.  `deferred` counts 4xx replies to MAIL, RCPT and the
    dot; `rejected` 5xx ones; `refused` connections refused or reset at once;
    `busy` 421 banners beyond max_connections."""

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

    def to_dict(self) -> dict[str, int]:
        """Plain values for JSON and tables."""
        return asdict(self)


class Txn:
    """The transaction state of one connection (what MAIL/RCPT have said)."""

    __slots__ = ("any_rcpt", "mail_ok")

    def __init__(self) -> None:
        self.mail_ok = False
        self.any_rcpt = False


def take_lines(buf: bytearray) -> list[bytes]:
    """Every complete line in `buf` (removed from it), CRLF kept."""
    end = buf.rfind(b"\n")
    if end < 0:
        return []
    chunk = bytes(buf[: end + 1])
    del buf[: end + 1]
    return chunk.splitlines(keepends=True)
