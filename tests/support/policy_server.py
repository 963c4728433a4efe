"""A tiny HTTPS server on 127.0.0.1 serving one MTA-STS policy, for tests.

The service's end-to-end tests need a correct server that serves
``/.well-known/mta-sts.txt`` with a trustme certificate and counts the
requests (to prove a policy was, or was not, fetched); the MTA-STS fetcher's
own tests (tests/test_live_mta_sts.py) change the answer between fetches
(status, headers, body, chunked transfer) to probe HTTP corner cases.  One
server serves both: everything it answers is a plain attribute.
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
    """HTTPS on `host` (loopback) and a free port, answering every request with `body`.

    ``async with PolicyServer(ctx, policy_text("enforce", "mx1.example.com"))``;
    `port` is set once started.  `status`, `headers`, `body` and `chunked`
    (send the body in two chunks) may be changed between requests.
    `requests` holds each request's first line, `heads` its whole head.
    """

    def __init__(
        self, context: ssl.SSLContext, body: str | bytes, host: str = "127.0.0.1", *,
        headers: dict[str, str] | None = None,
    ) -> None:
        check_loopback(host)
        self.context = context
        self.body = body.encode() if isinstance(body, str) else body
        self.host = host
        self.status = "200 OK"
        self.headers = ({"Content-Type": "text/plain", "Connection": "close"}
                        if headers is None else dict(headers))
        self.chunked = False
        self.port = 0
        self.requests: list[str] = []
        self.heads: list[str] = []
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> PolicyServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _response(self) -> bytes:
        headers = dict(self.headers)
        if self.chunked:
            headers["Transfer-Encoding"] = "chunked"
            half = len(self.body) // 2
            parts = [self.body[:half], self.body[half:], b""]
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
        else:
            headers["Content-Length"] = str(len(self.body))
            payload = self.body
        lines = [f"HTTP/1.1 {self.status}", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head)
            self.requests.append(head.split("\r\n", 1)[0])
            writer.write(self._response())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
