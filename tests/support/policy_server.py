"""A tiny HTTPS server on 127.0.0.1 serving one MTA-STS policy, for end-to-end tests.

The MTA-STS fetcher's own tests (tests/test_live_mta_sts.py) probe HTTP
corner cases; the service's end-to-end tests only need a correct server that
serves ``/.well-known/mta-sts.txt`` with a trustme certificate and counts the
requests (to prove a policy was, or was not, fetched).
"""

from __future__ import annotations

import asyncio
import ssl

from tests.support.smtp_base import check_loopback


def policy_text(mode: str, *mx: str, max_age: int = 86400) -> str:
    """An RFC 8461 policy body: version, mode, one ``mx:`` line per pattern, max_age."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


class PolicyServer:
    """HTTPS on `host` (loopback) and a free port, answering every GET with `body`.

    ``async with PolicyServer(ctx, policy_text("enforce", "mx1.example.com"))``;
    `port` is set once started; `requests` holds each request's first line.
    """

    def __init__(self, context: ssl.SSLContext, body: str, host: str = "127.0.0.1") -> None:
        check_loopback(host)
        self.context = context
        self.body = body
        self.host = host
        self.port = 0
        self.requests: list[str] = []
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> PolicyServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head.decode("latin-1").split("\r\n", 1)[0])
            payload = self.body.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(payload), payload))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
