"""A raw-bytes SMTP client for listener tests: send exactly these bytes, read replies.

aiosmtplib cannot split a command across writes, pipeline a whole
transaction in one write, or send a bare LF; the listener tests need all of
that, so this client writes what it is given and parses replies itself
(multi-line replies joined, ``(code, [text, ...])``).  Loopback only.
"""

from __future__ import annotations

import asyncio
import ssl

__all__ = ["RawClient"]


class RawClient:
    """``async with RawClient(port) as c``: the 220 greeting is read on entry."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        if not (host.startswith("127.") or host == "::1"):
            raise ValueError(f"loopback only, not {host!r}")
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.greeting: tuple[int, list[str]] = (0, [])

    async def __aenter__(self) -> RawClient:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout)
        self.greeting = await self.reply()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close without QUIT."""
        if self.writer is not None:
            self.writer.close()

    async def send(self, data: bytes) -> None:
        """Write `data` as one write."""
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> tuple[int, list[str]]:
        """Read one (possibly multi-line) reply; (0, []) when the server closed."""
        assert self.reader is not None
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not raw:
                return 0, lines
            text = raw.decode().rstrip("\r\n")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), lines

    async def replies(self, n: int) -> list[tuple[int, str]]:
        """Read `n` replies: (code, first line's text) each."""
        out = []
        for _ in range(n):
            code, lines = await self.reply()
            out.append((code, lines[0] if lines else ""))
        return out

    async def cmd(self, line: bytes) -> tuple[int, str]:
        """Send one line (CRLF added) and read its reply: (code, first line's text)."""
        await self.send(line + b"\r\n")
        code, lines = await self.reply()
        return code, lines[0] if lines else ""

    async def starttls(self, ctx: ssl.SSLContext) -> None:
        """Upgrade this connection after a 220 to STARTTLS."""
        assert self.writer is not None
        await self.writer.start_tls(ctx)

    async def closed(self) -> bool:
        """True when the server has closed the connection (EOF within the timeout)."""
        assert self.reader is not None
        try:
            return await asyncio.wait_for(self.reader.read(), self.timeout) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
