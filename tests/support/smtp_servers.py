"""Real SMTP peers for the tests, on loopback only.

Two kinds of server, because the tests need two different things:

* `SinkServer` is aiosmtpd, a real SMTP implementation: it records every
  envelope and body, and can offer STARTTLS (a trustme certificate valid for its
  host name, a self-signed one, or any `ssl.SSLContext`) and require AUTH.  It
  also records the raw bytes each connection sent before TLS, so a test can
  prove a credential never crossed the wire in clear.
* `ScriptedServer` is a bare asyncio server driven by a `Script`: a reply (or a
  delay, a close, a hang, raw malformed bytes) per command verb.  Faults must be
  exact to the byte and the millisecond, which a real implementation fights.

Both run either on the test's own event loop (``async with``) or on a private
loop in a background thread (``with``), so synchronous tests and a driver
running its own loop can use them alike.  `closed_port()` gives an address that
refuses connections.  Every server binds 127.0.0.1 (or another 127.0.0.x) on
a free port unless told otherwise; nothing here ever touches another address.

The scripted server and the fault presets live in smtp_scripted.py, the
shared plumbing in smtp_base.py; everything is importable from here.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.smtp_base import ServerBase, check_loopback
from tests.support.smtp_scripted import (
    DEFAULT_EXTENSIONS,
    ConnectionLog,
    Script,
    ScriptedServer,
    Step,
    banner_421,
    closed_port,
    drop_mid_data,
    fail_at,
    hang_at,
    malformed_reply,
    no_pipelining,
    overlong_reply,
    slow_reply,
    tls_handshake_failure,
)

__all__ = [
    "DEFAULT_EXTENSIONS",
    "ConnectionLog",
    "ReceivedMessage",
    "Script",
    "ScriptedServer",
    "SinkServer",
    "Step",
    "TlsMaterial",
    "banner_421",
    "closed_port",
    "drop_mid_data",
    "fail_at",
    "hang_at",
    "malformed_reply",
    "no_pipelining",
    "overlong_reply",
    "self_signed_tls",
    "slow_reply",
    "tls_handshake_failure",
    "trustme_tls",
]


# --------------------------------------------------------------------------
# Certificates


@dataclass
class TlsMaterial:
    """A server context plus what a client needs to trust it (None: nothing can)."""

    server_context: ssl.SSLContext
    ca: trustme.CA | None = None

    def client_context(self) -> ssl.SSLContext:
        """A client context that verifies the server (fails when self-signed)."""
        ctx = ssl.create_default_context()
        if self.ca is not None:
            self.ca.configure_trust(ctx)
        return ctx


def trustme_tls(*hosts: str) -> TlsMaterial:
    """A certificate from a fresh trustme CA, valid for `hosts`."""
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(ctx)
    return TlsMaterial(ctx, ca)


def self_signed_tls(host: str) -> TlsMaterial:
    """A self-signed certificate for `host` that no CA vouches for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with trustme.Blob(cert_pem + key_pem).tempfile() as path:
        ctx.load_cert_chain(path)
    return TlsMaterial(ctx, None)


# --------------------------------------------------------------------------
# The aiosmtpd sink


@dataclass(frozen=True)
class ReceivedMessage:
    """One message a sink accepted."""

    sender: str
    recipients: tuple[str, ...]
    content: bytes
    peer: str
    tls: bool
    login: str | None
    mail_options: tuple[str, ...] = ()


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP that records the bytes it received before TLS began."""

    def __init__(self, sink: SinkServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:
            self._sink.connections += 1
            self._sink._transports.add(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink._transports.discard(self._original_transport or self.transport)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self._tls_protocol is None:
            self._sink.plaintext += data
        super().data_received(data)


class _SinkHandler:
    def __init__(self, sink: SinkServer) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.sink.pipelining:  # aiosmtpd pipelines fine but never says so
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        options: list[str],
    ) -> str:
        reply = self.sink.reject_recipients.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.login_data.decode() if isinstance(session.login_data, bytes) else None
        message = ReceivedMessage(
            sender=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            peer=str(session.peer[0]),
            tls=session.ssl is not None,
            login=login,
            mail_options=tuple(envelope.mail_options),
        )
        with self.sink._cond:
            self.sink.messages.append(message)
            self.sink._cond.notify_all()
            n = len(self.sink.messages)
        return f"250 2.0.0 OK queued as {n}"


class SinkServer(ServerBase):
    """aiosmtpd recording sink, optionally with STARTTLS and required AUTH.

    `tls`: None (STARTTLS not offered), "trustme" (valid for `hostname`),
    "self-signed", or a `TlsMaterial`.  `auth=(user, password)` requires AUTH
    PLAIN/LOGIN before MAIL; it is offered only over TLS unless
    `auth_require_tls=False` (a plaintext server that would accept it).
    `reject_recipients` maps an address to the reply its RCPT gets.
    `smtputf8` offers SMTPUTF8 (aiosmtpd's enable_SMTPUTF8).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hostname: str = "mx.test",
        tls: Literal["trustme", "self-signed"] | TlsMaterial | None = None,
        auth: tuple[str, str] | None = None,
        auth_require_tls: bool = True,
        pipelining: bool = True,
        reject_recipients: Mapping[str, str] | None = None,
        data_size_limit: int = 10 * 1024 * 1024,
        smtputf8: bool = False,
    ) -> None:
        super().__init__()
        check_loopback(host)
        self.host, self.port, self.hostname = host, port, hostname
        if tls == "trustme":
            tls = trustme_tls(hostname)
        elif tls == "self-signed":
            tls = self_signed_tls(hostname)
        self.tls: TlsMaterial | None = tls
        self.auth = auth
        self.auth_require_tls = auth_require_tls
        self.pipelining = pipelining
        self.reject_recipients = dict(reject_recipients or {})
        self.data_size_limit = data_size_limit
        self.smtputf8 = smtputf8
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        self.plaintext = b""  # every byte clients sent before TLS, all connections
        self.auth_attempts: list[tuple[str, bool]] = []  # (login, succeeded)
        self._cond = threading.Condition()
        self._transports: set[Any] = set()

    async def stop(self) -> None:
        for t in list(self._transports):
            t.close()
        await super().stop()

    def _authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any,
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.auth is None:
            return AuthResult(success=False, handled=False)
        ok = (data.login.decode(), data.password.decode()) == self.auth
        self.auth_attempts.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False, auth_data=data)

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        return _RecordingSMTP(
            self, _SinkHandler(self), hostname=self.hostname, loop=loop,
            tls_context=self.tls.server_context if self.tls else None,
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=self.smtputf8,
            auth_required=self.auth is not None,
            auth_require_tls=self.auth_require_tls,
            authenticator=self._authenticator if self.auth else None,
        )

    async def start(self) -> None:
        """Listen (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._bound(await loop.create_server(lambda: self._protocol(loop), self.host, self.port))

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this sink's certificate (if anything can)."""
        if self.tls is None:
            raise ValueError("this sink offers no TLS")
        return self.tls.client_context()

    @property
    def auth_seen_in_plaintext(self) -> bool:
        """True if any AUTH command or the credential itself arrived before TLS."""
        raw = self.plaintext
        if any(line.upper().startswith(b"AUTH") for line in raw.splitlines()):
            return True
        if self.auth is None:
            return False
        user, password = (s.encode() for s in self.auth)
        secrets = [password, base64.b64encode(b"\0" + user + b"\0" + password),
                   base64.b64encode(password)]
        return any(s in raw for s in secrets)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until `count` messages arrived (thread mode); raise on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"sink got {len(self.messages)} messages, wanted {count}")
            return list(self.messages)

