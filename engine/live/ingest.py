"""SMTP ingestion for the live mode, and the Python API that shares its path.

Mail enters egress in one shape, a `Submission` (sender, recipients of one
domain, the raw message, tenant, campaign), handed to an async callback that
returns the new message ids only once the journal has committed them.  Both
doors use it: `IngestServer` (an aiosmtpd listener) and `submit()` (for
programs).  Keeping the callback the only coupling means the delivery driver
owns the journal and the engine, and the listener could be swapped for a
faster one later without touching either.

What the listener promises, as an operator of KumoMTA would expect:

* No open relay.  RCPT is accepted only from clients inside
  `allowed_networks` (loopback by default) or clients that authenticated;
  anyone else gets ``550 5.7.1 relaying denied``.  AUTH PLAIN/LOGIN is offered
  only over TLS, or in clear to a loopback client (nothing crosses a wire).
* No acknowledgement before durability.  The 250 after the final dot is sent
  only after every submission of the message has been committed; if the
  callback raises, the client gets ``451 4.3.0`` and will retry.  A message
  whose recipients span several domains is split into one submission per
  domain (as KumoMTA does); if a later one fails after an earlier one was
  committed, the 451 makes the client resend the whole message, so that
  domain may receive it twice: at-least-once, never lost.
* Tenant and campaign come from the X-Tenant / X-Campaign headers (KumoMTA's
  convention; the names are configurable).  The headers are left in place.
* Graceful stop: `stop()` refuses new connections, lets transactions already
  committing finish (up to `grace` seconds), then closes the rest; a client
  cut off mid-message has no 250 and retries.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from engine.cidr import CidrSet

__all__ = [
    "DEFAULT_ALLOWED_NETWORKS",
    "IngestServer",
    "Submission",
    "SubmitCallback",
    "metadata_from_headers",
    "split_by_domain",
    "submit",
]

log = logging.getLogger("egress.ingest")

DEFAULT_ALLOWED_NETWORKS = ("127.0.0.0/8", "::1")
DEFAULT_MAX_MESSAGE_SIZE = 20 * 1024 * 1024  # KumoMTA's default max_message_size


def _domain(address: str) -> str:
    at = address.rfind("@")
    if at <= 0 or at == len(address) - 1:
        raise ValueError(f"recipient {address!r} is not an address of the form local@domain")
    return address[at + 1 :].lower()


@dataclass(frozen=True, slots=True)
class Submission:
    """One message to accept: recipients all in one domain, the raw RFC 5322 bytes.

    `peer` is the submitting client's address ("" from the Python API), for
    the Reception record.
    """

    sender: str
    recipients: tuple[str, ...]
    content: bytes
    tenant: str = ""
    campaign: str = ""
    peer: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.recipients, tuple) or not self.recipients:
            raise ValueError(f"Submission.recipients must be a non-empty tuple, not "
                             f"{self.recipients!r}")
        if not isinstance(self.content, bytes):
            raise ValueError(f"Submission.content must be bytes, not {type(self.content).__name__}")
        first = _domain(self.recipients[0])
        for r in self.recipients[1:]:
            if _domain(r) != first:
                raise ValueError(f"Submission recipients {self.recipients[0]!r} and {r!r} are in "
                                 "different domains; use split_by_domain()")

    @property
    def domain(self) -> str:
        """The recipients' domain, lowercased."""
        return _domain(self.recipients[0])


SubmitCallback = Callable[[Submission], Awaitable[Sequence[str]]]
"""``await callback(submission)`` returns the new message ids once committed."""


def split_by_domain(
    sender: str, recipients: Iterable[str], content: bytes, *, tenant: str = "",
    campaign: str = "", peer: str = "",
) -> list[Submission]:
    """One `Submission` per recipient domain, domains in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for r in recipients:
        groups.setdefault(_domain(r), []).append(r)
    if not groups:
        raise ValueError("a message needs at least one recipient")
    return [Submission(sender, tuple(rs), content, tenant, campaign, peer)
            for rs in groups.values()]


_HEADER_PARSER = BytesHeaderParser(policy=compat32)


def metadata_from_headers(
    content: bytes, tenant_header: str = "X-Tenant", campaign_header: str = "X-Campaign",
) -> tuple[str, str]:
    """(tenant, campaign) read from the message's header block; "" when absent."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 4]
    headers = _HEADER_PARSER.parsebytes(head)

    def value(name: str) -> str:
        v = headers.get(name)
        return "" if v is None else " ".join(str(v).split())

    return value(tenant_header), value(campaign_header)


async def submit(
    callback: SubmitCallback,
    *,
    sender: str,
    recipients: Iterable[str],
    content: bytes,
    tenant: str | None = None,
    campaign: str | None = None,
    tenant_header: str = "X-Tenant",
    campaign_header: str = "X-Campaign",
) -> list[str]:
    """Accept a message from Python exactly as the SMTP listener would.

    Tenant and campaign default to the headers; explicit values win.  Returns
    every message id, after all of them were committed.
    """
    h_tenant, h_campaign = metadata_from_headers(content, tenant_header, campaign_header)
    subs = split_by_domain(
        sender, recipients, content,
        tenant=h_tenant if tenant is None else tenant,
        campaign=h_campaign if campaign is None else campaign,
    )
    ids: list[str] = []
    for sub in subs:
        ids.extend(await callback(sub))
    return ids


def _peer_ip(session: Session) -> str:
    peer = session.peer
    host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
    return host.split("%", 1)[0]


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class _IngestSMTP(SMTP):
    """aiosmtpd's SMTP, with AUTH allowed in clear to loopback clients only."""

    def __init__(self, owner: IngestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # the TCP connection, not the TLS layer
            peer = transport.get_extra_info("peername")
            self._auth_require_tls = not _is_loopback(str(peer[0]) if peer else "")
            self._owner._transports.add(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._transports.discard(self._original_transport or self.transport)
        super().connection_lost(error)


class _Handler:
    def __init__(self, owner: IngestServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.owner.auth is None:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        responses.insert(1, "250-PIPELINING")  # aiosmtpd reads pipelined commands fine
        return responses

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str],
    ) -> Any:
        if self.owner.auth is None:
            return "502 5.5.1 AUTH not available"
        return MISSING

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        options: list[str],
    ) -> str:
        owner = self.owner
        if not session.authenticated and _peer_ip(session) not in owner.allowed_networks:
            return "550 5.7.1 relaying denied"
        try:
            _domain(address)
        except ValueError:
            return "501 5.1.3 recipient must be an address of the form local@domain"
        if len(envelope.rcpt_tos) >= owner.max_recipients:
            return f"452 4.5.3 too many recipients (at most {owner.max_recipients})"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        content = envelope.original_content
        assert isinstance(content, bytes)
        tenant, campaign = metadata_from_headers(content, owner.tenant_header,
                                                 owner.campaign_header)
        # aiosmtpd reports the null reverse-path as "<>"; the engine's null sender is "".
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        subs = split_by_domain(sender, envelope.rcpt_tos, content,
                               tenant=tenant, campaign=campaign, peer=_peer_ip(session))
        owner._busy += 1
        owner._idle.clear()
        try:
            ids: list[str] = []
            for sub in subs:
                ids.extend(await owner.submit(sub))
        except Exception:
            log.exception("ingest: submission from %s failed; replying 451", _peer_ip(session))
            return "451 4.3.0 temporary failure, message not accepted; try again later"
        finally:
            owner._busy -= 1
            if owner._busy == 0:
                owner._idle.set()
        owner.accepted += len(subs)
        return f"250 2.0.0 OK ids={','.join(ids)}"


class IngestServer:
    """An SMTP listener that turns accepted mail into `Submission`s.

    `submit` is awaited per submission and must return the new message ids
    after the journal committed them.  `allowed_networks` (a `CidrSet` or a
    list of CIDR strings) may relay without AUTH; `auth` maps user -> password
    for AUTH PLAIN/LOGIN (None: AUTH not offered).  `tls_context` enables
    STARTTLS.  Start with ``await server.start()`` or ``async with``; `port`
    0 picks a free port, readable as ``.port`` afterwards.
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
    ) -> None:
        if not callable(submit):
            raise TypeError(f"IngestServer submit must be an async callable, not {submit!r}")
        for name, value in (("max_message_size", max_message_size),
                            ("max_recipients", max_recipients)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"IngestServer {name} must be an integer above 0, not {value!r}")
        if auth is not None and not all(
            isinstance(u, str) and isinstance(p, str) and u and p for u, p in auth.items()
        ):
            raise ValueError("IngestServer auth must map non-empty user names to non-empty "
                             "password strings")
        self.host = host
        self.port = port
        self.submit = submit
        if allowed_networks is None:
            allowed_networks = DEFAULT_ALLOWED_NETWORKS
        self.allowed_networks = CidrSet.coerce(
            allowed_networks if isinstance(allowed_networks, CidrSet | str)
            else list(allowed_networks), key="allowed_networks")
        self.auth = dict(auth) if auth is not None else None
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients
        self.tls_context = tls_context
        self.hostname = hostname or socket.gethostname()
        self.tenant_header = tenant_header
        self.campaign_header = campaign_header
        self.timeout = timeout
        self.accepted = 0  # submissions committed and acknowledged
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[Any] = set()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any,
    ) -> AuthResult:
        if self.auth is None or mechanism not in ("PLAIN", "LOGIN") or not isinstance(
            data, LoginPassword
        ):
            return AuthResult(success=False, handled=False)
        user = data.login.decode("utf-8", "replace")
        expected = self.auth.get(user)
        ok = expected is not None and hmac.compare_digest(expected.encode(), data.password)
        if not ok:
            log.warning("ingest: AUTH %s failed for user %r from %s", mechanism, user,
                        _peer_ip(session))
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        return _IngestSMTP(
            self, _Handler(self), loop=loop, hostname=self.hostname,
            data_size_limit=self.max_message_size, tls_context=self.tls_context,
            auth_require_tls=True, authenticator=self._authenticate, timeout=self.timeout,
        )

    async def start(self) -> None:
        """Listen on the running loop."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self._protocol(loop), self.host,
                                                self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ingest: listening on %s:%d", self.host, self.port)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let committing transactions finish (up to `grace` s), close."""
        if self._server is not None:
            self._server.close()
            self._server = None
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning("ingest: %d transactions still committing after %.1fs; closing",
                        self._busy, grace)
        for transport in list(self._transports):
            transport.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
