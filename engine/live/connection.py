"""One outbound SMTP connection as an asyncio `Protocol`: bytes in, events out.

Kept apart from the driver (`engine.live.driver`) because it is the one part
that runs per read: `data_received` feeds the core's pure reply parser
(`engine.wire.ReplyParser`) and every complete reply becomes one `Response`
event, so a pipelined batch costs one write and one read wake-up rather than
a stream read per line.  It decides nothing: whatever it learns goes to the
driver, which feeds the engine.

Three flags keep the events honest across the connection's life:
`closing` (we asked for the close: no `Closed` event), `broken` (the parser
refused a line: nothing more is read) and `upgrading` (STARTTLS ordered:
bytes still read in clear are dropped, RFC 3207 4.2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from engine.errors import ReplyParseError
from engine.events import Malformed, Response
from engine.reply import Reply
from engine.wire import ReplyParser

if TYPE_CHECKING:
    from engine.live.driver import LiveDriver

__all__ = ["SmtpClientProtocol"]


class SmtpClientProtocol(asyncio.Protocol):
    """One outbound SMTP connection: bytes in -> `Response` events out."""

    def __init__(self, driver: LiveDriver, conn: int) -> None:
        self.driver = driver
        self.conn = conn
        self.parser = ReplyParser()
        self.transport: asyncio.Transport | None = None
        self.closing = False  # we asked for the close: no `Closed` event then
        self.broken = False
        # StartTls ordered: bytes still read in clear are dropped (RFC 3207 4.2:
        # nothing learnt before TLS is kept; a real server sends nothing here).
        self.upgrading = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Report the connection from here, not after create_connection returns:
        the banner may be read before the connecting coroutine resumes."""
        self.transport = transport  # type: ignore[assignment]
        self.driver.connection_made(self.conn, self)

    def data_received(self, data: bytes) -> None:
        """Parse what arrived; one `Response` per complete reply, `Malformed` once."""
        if self.closing or self.broken or self.upgrading:
            return
        try:
            replies = self.parser.feed(data)
        except ReplyParseError as exc:
            self.broken = True
            self._replies(getattr(exc, "replies", ()))
            if not (self.closing or self.upgrading):
                self.driver.feed(Malformed(at=time.time(), conn=self.conn, detail=str(exc)))
            return
        self._replies(replies)

    def _replies(self, replies: Iterable[Reply]) -> None:
        for reply in replies:
            if self.closing or self.upgrading:
                return
            self.driver.feed(Response(at=time.time(), conn=self.conn, reply=reply))

    def eof_received(self) -> bool | None:
        """The peer closed its side: close ours too."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Report a close we did not ask for (ours and a failing handshake's are silent:
        the upgrade reports `TlsFailed` itself)."""
        if self.closing or self.upgrading:
            return
        self.closing = True
        reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        self.driver.connection_lost(self.conn, reason)
