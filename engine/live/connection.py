"""One outbound SMTP connection as an asyncio `Protocol`: bytes in, events out.

Kept apart from the driver (`engine.live.driver`) because it is the one part
that runs per read: `data_received` feeds the core's pure reply parser
(`engine.wire.ReplyParser`) and every complete reply becomes one `Response`
event, so a pipelined batch costs one write and one read wake-up rather than
a stream read per line.  It decides nothing: whatever it learns goes to the
driver, which feeds the engine.

Parsing is memoised per read: the parser is a pure function of its state
and the bytes, so when it holds nothing (no partial line, no open multi-line
reply) and a read is byte for byte one it parsed before from that same empty
state, ending on a reply boundary, the replies are the same values.  A
server answers a pipelined MAIL/RCPT/DATA batch with the same bytes every
time, so most reads skip the parser; a read that differs (a queue id in the
reply) is parsed as usual.  The cache is small, shared by the driver's
connections, and holds only successful parses of short reads.

Three flags keep the events honest across the connection's life:
`closing` (we asked for the close: no `Closed` event), `broken` (the parser
refused a line: nothing more is read) and `upgrading` (STARTTLS ordered:
bytes still read in clear are dropped, RFC 3207 4.2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol

from engine.errors import ReplyParseError
from engine.events import Event, Malformed, Response
from engine.reply import Reply
from engine.wire import ReplyParser

__all__ = ["CACHED_READS", "CACHED_READ_BYTES", "ConnectionHost", "SmtpClientProtocol"]

CACHED_READS = 256
"""Distinct reads remembered with their replies (the cache is emptied when full)."""

CACHED_READ_BYTES = 1024
"""Longest read remembered (an EHLO answer fits; a long multi-line reply does not)."""


class ConnectionHost(Protocol):
    """What a connection needs from its driver (`engine.live.driver.LiveDriver`)."""

    reply_cache: dict[bytes, tuple[Reply, ...]]

    def handle_io(self, event: Event) -> bool: ...

    def connection_made(self, conn: int, proto: SmtpClientProtocol) -> None: ...

    def connection_lost(self, conn: int, reason: str) -> None: ...


class SmtpClientProtocol(asyncio.Protocol):
    """One outbound SMTP connection: bytes in -> `Response` events out."""

    def __init__(self, driver: ConnectionHost, conn: int) -> None:
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
        parser = self.parser
        cache = self.driver.reply_cache
        fresh = not parser.pending
        if fresh:
            replies = cache.get(data)
            if replies is not None:
                self._replies(replies)
                return
        try:
            got = parser.feed(data)
        except ReplyParseError as exc:
            self.broken = True
            self._replies(getattr(exc, "replies", ()))
            if not (self.closing or self.upgrading):
                self.driver.handle_io(Malformed(at=time.time(), conn=self.conn,
                                                detail=str(exc)))
            return
        if fresh and got and len(data) <= CACHED_READ_BYTES and not parser.pending:
            if len(cache) >= CACHED_READS:
                cache.clear()
            cache[data] = tuple(got)
        self._replies(got)

    def _replies(self, replies: Iterable[Reply]) -> None:
        at = time.time()  # read together, so arrived together
        handle = self.driver.handle_io
        conn = self.conn
        for reply in replies:
            if self.closing or self.upgrading:
                return
            handle(Response(at=at, conn=conn, reply=reply))

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
