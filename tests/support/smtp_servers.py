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
refuses connections.  Every server binds 127.0.0.1 (or another 127.0.0.x) on a
free port unless told otherwise; nothing here ever touches another address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

T = TypeVar("T")


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"test servers bind loopback only, not host={host!r}")


class _LoopThread:
    """An event loop running in a daemon thread; `run` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class _Server:
    """Start/stop on the current loop (``async with``) or a background one (``with``)."""

    host: str
    port: int

    def __init__(self) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._thread: _LoopThread | None = None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(AttributeError):
                self._server.close_clients()  # type: ignore[attr-defined]  # 3.13+
            self._server = None

    def _bound(self, server: asyncio.AbstractServer) -> None:
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        return self.host, self.port

    async def __aenter__(self) -> _Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> _Server:
        self._thread = _LoopThread()
        self._thread.run(self.start())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None
        self._thread.run(self.stop())
        self._thread.close()
        self._thread = None


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
        )
        with self.sink._cond:
            self.sink.messages.append(message)
            self.sink._cond.notify_all()
            n = len(self.sink.messages)
        return f"250 2.0.0 OK queued as {n}"


class SinkServer(_Server):
    """aiosmtpd recording sink, optionally with STARTTLS and required AUTH.

    `tls`: None (STARTTLS not offered), "trustme" (valid for `hostname`),
    "self-signed", or a `TlsMaterial`.  `auth=(user, password)` requires AUTH
    PLAIN/LOGIN before MAIL; it is offered only over TLS unless
    `auth_require_tls=False` (a plaintext server that would accept it).
    `reject_recipients` maps an address to the reply its RCPT gets.
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
    ) -> None:
        super().__init__()
        _check_loopback(host)
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


# --------------------------------------------------------------------------
# The scripted raw server


@dataclass(frozen=True)
class Step:
    """What the server does for one command: wait `delay`, send `reply`, then act.

    `reply`: a str (lines joined by "\\n"; each sent with CRLF), bytes sent
    verbatim (malformed or overlong replies), or None (send nothing).  `then`:
    "continue", "close" (drop the connection) or "hang" (never answer again,
    keep the connection open until the client leaves).
    """

    reply: str | bytes | None = None
    delay: float = 0.0
    then: Literal["continue", "close", "hang"] = "continue"

    def wire(self) -> bytes:
        if self.reply is None:
            return b""
        if isinstance(self.reply, bytes):
            return self.reply
        return b"".join(line.encode() + b"\r\n" for line in self.reply.split("\n"))


DEFAULT_EXTENSIONS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 10485760")
_DEFAULT_REPLIES: dict[str, Step] = {
    "HELO": Step("250 mx.test"),
    "MAIL": Step("250 2.1.0 OK"),
    "RCPT": Step("250 2.1.5 OK"),
    "DATA": Step("354 End data with <CR><LF>.<CR><LF>"),
    "DOT": Step("250 2.0.0 OK queued"),
    "RSET": Step("250 2.0.0 OK"),
    "NOOP": Step("250 2.0.0 OK"),
    "QUIT": Step("221 2.0.0 Bye", then="close"),
    "STARTTLS": Step("454 4.7.0 TLS not available"),
    "AUTH": Step("235 2.7.0 Authentication successful"),
}


@dataclass
class Script:
    """Replies by command verb; anything unscripted behaves like a plain server.

    Keys: "BANNER", "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA",
    "BODY" (done when the first body byte arrives: use it to drop mid-DATA),
    "DOT" (the reply after the final "."), "RSET", "NOOP", "QUIT".  A value may
    be a list of steps used in turn across the server's life, the last one
    repeating, so "first connection 421, then fine" is ``[Step("421 ..."), Step("220 ...")]``.
    """

    steps: Mapping[str, Step | Sequence[Step]] = field(default_factory=dict)
    extensions: Sequence[str] = DEFAULT_EXTENSIONS
    hostname: str = "mx.test"

    def default(self, verb: str) -> Step | None:
        if verb == "BANNER":
            return Step(f"220 {self.hostname} ESMTP scripted")
        if verb == "EHLO":
            lines = [self.hostname, *self.extensions]
            return Step("\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}"
                                  for i, x in enumerate(lines)))
        if verb == "BODY":
            return None
        return _DEFAULT_REPLIES.get(verb, Step("500 5.5.2 command not recognized"))


@dataclass
class ConnectionLog:
    """What one client connection did on a `ScriptedServer`."""

    peer: str
    chunks: list[bytes] = field(default_factory=list)  # each read, as it arrived
    commands: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # dot-stuffed, without the final "."
    closed_by_server: bool = False
    reply_times: list[tuple[str, float]] = field(default_factory=list)  # (verb, monotonic)


class ScriptedServer(_Server):
    """A raw asyncio SMTP server that does exactly what its `Script` says."""

    def __init__(self, script: Script | None = None, host: str = "127.0.0.1", port: int = 0):
        super().__init__()
        _check_loopback(host)
        self.host, self.port = host, port
        self.script = script or Script()
        self.connections: list[ConnectionLog] = []
        self._uses: dict[str, int] = {}
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen (on the running loop)."""
        self._bound(await asyncio.start_server(self._serve, self.host, self.port))

    async def stop(self) -> None:
        for w in list(self._writers):
            w.close()
        await super().stop()

    @property
    def commands(self) -> list[str]:
        """Every command line received, all connections, in order."""
        return [c for log in self.connections for c in log.commands]

    @property
    def received(self) -> bytes:
        """Every byte received, all connections, in order."""
        return b"".join(b"".join(log.chunks) for log in self.connections)

    def _step(self, verb: str) -> Step | None:
        scripted = self.script.steps.get(verb)
        if scripted is None:
            return self.script.default(verb)
        if isinstance(scripted, Step):
            return scripted
        n = self._uses.get(verb, 0)
        self._uses[verb] = n + 1
        return scripted[min(n, len(scripted) - 1)]

    async def _act(self, verb: str, log: ConnectionLog, writer: asyncio.StreamWriter) -> str:
        return await self._perform(self._step(verb), verb, log, writer)

    async def _perform(
        self, step: Step | None, verb: str, log: ConnectionLog, writer: asyncio.StreamWriter
    ) -> str:
        if step is None:
            return "continue"
        if step.delay:
            await asyncio.sleep(step.delay)
        data = step.wire()
        if data:
            writer.write(data)
            log.reply_times.append((verb, time.monotonic()))
        if step.then == "close":
            log.closed_by_server = True
            writer.close()
        return step.then

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log = ConnectionLog(peer=str(writer.get_extra_info("peername")[0]))
        self.connections.append(log)
        self._writers.add(writer)
        try:
            then = await self._act("BANNER", log, writer)
            buffer, in_data, body_seen = b"", False, False
            while then == "continue":
                chunk = await reader.read(65536)
                if not chunk:
                    break
                log.chunks.append(chunk)
                buffer += chunk
                while then == "continue":
                    if in_data:
                        if buffer and not body_seen:
                            body_seen = True
                            then = await self._act("BODY", log, writer)
                            continue
                        end = 0 if buffer.startswith(b".\r\n") else buffer.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        cut = end + 2 if end else 0
                        log.bodies.append(buffer[:cut])
                        buffer, in_data = buffer[cut + 3 :], False
                        then = await self._act("DOT", log, writer)
                        continue
                    line, sep, rest = buffer.partition(b"\n")
                    if not sep:
                        break
                    buffer = rest
                    text = line.rstrip(b"\r").decode("latin-1")
                    log.commands.append(text)
                    verb = text.split(" ", 1)[0].upper()
                    step = self._step(verb)
                    if verb == "DATA" and step is not None:  # does it open the body?
                        in_data, body_seen = step.wire().startswith(b"354"), False
                    then = await self._perform(step, verb, log, writer)
            if then == "hang":
                while await reader.read(65536):
                    pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


# --------------------------------------------------------------------------
# Faults, ready made


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[tuple[str, int]]:
    """An address that refuses connections: a port bound but not listening.

    Holding the bound socket (rather than closing it) keeps anyone else from
    taking the port while the test runs, so the refusal is certain.
    """
    _check_loopback(host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.bind((host, 0))
        yield host, sock.getsockname()[1]
    finally:
        sock.close()


def banner_421() -> Script:
    """421 at the banner, then the connection is closed."""
    return Script({"BANNER": Step("421 4.3.2 Service not available, closing channel",
                                  then="close")})


def drop_mid_data() -> Script:
    """Accept DATA, then drop the connection as soon as the body starts."""
    return Script({"BODY": Step(then="close")})


def fail_at(verb: str, reply: str, then: Literal["continue", "close"] = "continue") -> Script:
    """Answer `verb` ("MAIL", "RCPT", "DATA", "DOT", ...) with `reply`."""
    return Script({verb: Step(reply, then=then)})


def slow_reply(verb: str, delay: float, reply: str | None = None) -> Script:
    """Wait `delay` seconds before the (normal, or given) reply to `verb`."""
    normal = Script().default(verb)
    text = reply if reply is not None else (normal.reply if normal else None)
    return Script({verb: Step(text, delay=delay)})


def hang_at(verb: str) -> Script:
    """Never answer `verb`; keep the connection open."""
    return Script({verb: Step(None, then="hang")})


def malformed_reply(verb: str = "MAIL") -> Script:
    """Answer `verb` with a line that is not an SMTP reply."""
    return Script({verb: Step(b"hello, this is not SMTP\r\n")})


def overlong_reply(verb: str = "EHLO", length: int = 5000) -> Script:
    """Answer `verb` with a single 250 line of `length` bytes before its CRLF."""
    return Script({verb: Step(b"250 " + b"x" * (length - 4) + b"\r\n")})


def no_pipelining() -> Script:
    """A server that does not advertise PIPELINING."""
    return Script(extensions=tuple(x for x in DEFAULT_EXTENSIONS if x != "PIPELINING"))


def tls_handshake_failure() -> Script:
    """Offer STARTTLS, say 220, then send bytes that are not TLS."""
    return Script({"STARTTLS": Step(b"220 2.0.0 Ready to start TLS\r\nthis is not TLS\r\n")},
                  extensions=(*DEFAULT_EXTENSIONS, "STARTTLS"))
