"""What the listener tests share: a stand-in for the journal, TLS contexts, a client.

The SMTP listener's tests (tests/test_live_listener*.py) each need a submit
callback that records what was committed (and can hold the commit back or
fail it), a trustme server/client context pair for STARTTLS, and an
aiosmtplib client pointed at the listener's loopback port.  They were copied
from file to file; one copy lives here.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiosmtplib
import trustme

from engine.live.submission import Submission

__all__ = ["MSG", "CommitRecorder", "smtp_client", "tls_contexts"]

MSG = (b"From: a@sender.test\r\nTo: x@one.test\r\nX-Tenant: acme\r\n"
       b"X-Campaign:  spring\r\n  sale\r\nSubject: hi\r\n\r\nbody line\r\n")
"""A message with X-Tenant "acme" and a folded X-Campaign "spring sale"."""


class CommitRecorder:
    """A stand-in for the journal's submit callback: records, can wait for a gate or fail.

    Returns ``["id<n>"]`` where n counts the submissions committed so far.
    """

    def __init__(self) -> None:
        self.committed: list[Submission] = []
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.entered = 0  # calls begun (a test waits on this, not on a sleep)

    async def __call__(self, sub: Submission) -> list[str]:
        self.entered += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("disk full")
        self.committed.append(sub)
        return [f"id{len(self.committed)}"]


def tls_contexts(hostname: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts: a fresh trustme CA, a leaf for `hostname`, trusted.

    The client does not check the host name (the tests dial 127.0.0.1); the
    chain is still verified.
    """
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(hostname).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_ctx.check_hostname = False
    return server_ctx, client_ctx


def smtp_client(server: Any, **kw: Any) -> aiosmtplib.SMTP:
    """An aiosmtplib client for `server` (anything with ``.port``) on 127.0.0.1, no TLS."""
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False,
                           timeout=5, **kw)
