"""The SMTP listener: accepted mail becomes `Submission`s, acknowledged once durable.

A plain asyncio server (no aiosmtpd: its per-line stream reads and address
parser cost most of the relay's time).  What it promises:

* No open relay.  RCPT is accepted only from clients inside
  `allowed_networks` (loopback by default) or clients that authenticated;
  anyone else gets ``550 5.7.1 relaying denied``.  AUTH PLAIN/LOGIN is offered
  only over TLS, or in clear to a loopback client (nothing crosses a wire).
* No acknowledgement before durability.  The 250 after the final dot is sent
  only after every `Submission` of the message has been committed; if the
  callback raises, the client gets ``451 4.3.0`` and will retry.  A message
  whose recipients span several domains is split into one submission per
  domain (`engine.live.submission.split_by_domain`); if a later one fails
  after an earlier one was committed, the 451 makes the client resend the
  whole message, so that domain may receive it twice: at-least-once, never
  lost.  A message over `max_message_size` gets ``552``.
* Tenant and campaign come from the X-Tenant / X-Campaign headers (the names
  are configurable).  The headers are left in place.
* Bounded: connections (globally and per client), DATA buffered in memory
  across connections, and AUTH failures per client
  (`engine.live.listener_limits`).
* Graceful stop: `stop(grace)` refuses new connections, lets transactions
  already committing finish (up to `grace` seconds), then closes the rest; a
  client cut off mid-message has no 250 and retries.

The protocol itself is `engine.live.listener_session`: one receive buffer per
connection, every complete command answered in one write (RFC 2920
pipelining falls out of this), DATA found by searching for CRLF "." CRLF.
8BITMIME and SMTPUTF8 are offered, as KumoMTA's listener does; a UTF-8
address needs SMTPUTF8 on that transaction's MAIL (else ``553 5.6.7``).
Replies carry enhanced status codes; the null sender ``MAIL FROM:<>`` is
submitted as ``""``; command lines may be up to 2048 bytes; an idle client
is told ``421 4.4.2`` before the close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from engine.cidr import CidrSet
from engine.live.listener_limits import Limits, LimitSettings
from engine.live.listener_session import SmtpConnection
from engine.live.listener_state import ListenerSettings
from engine.live.submission import SubmitCallback

__all__ = ["DEFAULT_ALLOWED_NETWORKS", "DEFAULT_MAX_MESSAGE_SIZE", "Listener"]

log = logging.getLogger("egress.listener")

DEFAULT_ALLOWED_NETWORKS = ("127.0.0.0/8", "::1")
DEFAULT_MAX_MESSAGE_SIZE = 20 * 1024 * 1024  # KumoMTA's default max_message_size


class Listener:
    """An SMTP listener that turns accepted mail into `Submission`s.

    `submit` is awaited per submission and must return the new message ids
    after the journal committed them.  `allowed_networks` (a `CidrSet` or a
    list of CIDR strings) may relay without AUTH; `auth` maps user -> password
    for AUTH PLAIN/LOGIN (None: AUTH not offered), offered only over TLS or to
    a loopback client.  `tls_context` enables STARTTLS.  `timeout` closes a
    connection idle that many seconds.  `limits` bounds connections, buffered
    DATA and AUTH failures (`engine.live.listener_limits`).  Start with ``await listener.start()``
    or ``async with``; `port` 0 picks a free port, readable as ``.port``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2525,
        *,
        submit: SubmitCallback,
        allowed_networks: CidrSet | Iterable[str] | None = None,
        auth: Mapping[str, str] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_recipients: int = 1024,
        tls_context: ssl.SSLContext | None = None,
        hostname: str | None = None,
        tenant_header: str = "X-Tenant",
        campaign_header: str = "X-Campaign",
        timeout: float = 300.0,
        limits: LimitSettings | None = None,
    ) -> None:
        if not callable(submit):
            raise TypeError(f"Listener submit must be an async callable, not {submit!r}")
        for name, value in (("max_message_size", max_message_size),
                            ("max_recipients", max_recipients)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Listener {name} must be an integer above 0, not {value!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"Listener timeout must be a number of seconds above 0, not "
                             f"{timeout!r}")
        if auth is not None and not hasattr(auth, "check") and not all(
            isinstance(u, str) and isinstance(p, str) and u and p for u, p in auth.items()
        ):
            raise ValueError("Listener auth must map non-empty user names to non-empty "
                             "password strings")
        for name, header in (("tenant_header", tenant_header),
                             ("campaign_header", campaign_header)):
            if not isinstance(header, str) or not header or not header.isascii() or any(
                c in header for c in ": \t\r\n"
            ):
                raise ValueError(f"Listener {name} must be a header field name such as "
                                 f"'X-Tenant', not {header!r}")
        self.host = host
        self.port = port
        self.submit = submit
        if allowed_networks is None:
            allowed_networks = DEFAULT_ALLOWED_NETWORKS
        self.settings = ListenerSettings(
            hostname=hostname or socket.gethostname(),
            allowed_networks=CidrSet.coerce(
                allowed_networks if isinstance(allowed_networks, CidrSet | str)
                else list(allowed_networks), key="allowed_networks"),
            # user -> password, or an object whose check(user, password) says
            # (bcrypt hashes: engine.live.authfile.AuthFile)
            auth=(auth if hasattr(auth, "check") else dict(auth)) if auth is not None else None,
            max_message_size=max_message_size,
            max_recipients=max_recipients,
            tls_context=tls_context,
            timeout=float(timeout),
            tenant_header=tenant_header,
            campaign_header=campaign_header,
        )
        self.limits = Limits(limits if limits is not None else LimitSettings())
        self.tenant_key = tenant_header.lower().encode() + b":"
        self.campaign_key = campaign_header.lower().encode() + b":"
        self.accepted = 0  # submissions committed and acknowledged
        self.reuse_port = False  # set before start(): share the port with other processes
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[SmtpConnection] = set()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Listen on the running loop."""
        loop = asyncio.get_running_loop()
        # reuse_port: several worker processes share one port (SO_REUSEPORT; the
        # kernel spreads the connections over them)
        self._server = await loop.create_server(lambda: SmtpConnection(self), self.host,
                                                self.port, reuse_port=self.reuse_port or None)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listener: listening on %s:%d", self.host, self.port)

    # -- what connections report (`engine.live.listener_session.ListenerHost`) --

    def opened(self, conn: SmtpConnection) -> None:
        self._conns.add(conn)

    def closed(self, conn: SmtpConnection) -> None:
        self._conns.discard(conn)

    def commit_started(self) -> None:
        self._busy += 1
        self._idle.clear()

    def commit_ended(self, accepted: int) -> None:
        self.accepted += accepted
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let committing transactions finish (up to `grace` s), close."""
        if self._server is not None:
            self._server.close()
            self._server = None
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning("listener: %d transactions still committing after %.1fs; closing",
                        self._busy, grace)
        for conn in list(self._conns):
            conn.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> Listener:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
