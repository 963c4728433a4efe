"""A raw asyncio SMTP server that does exactly what its script says, and ready-made faults.

Faults must be exact to the byte and the millisecond (a 421 banner, a drop in
the middle of DATA, a reply 2 s late, a malformed or overlong line), which a
real SMTP implementation fights, so this server is a small loop over a
`Script`: per command verb, a `Step` (wait, reply, then continue / close /
hang).  It records every read as it arrived, so a test can also see whether a
pipelined batch came in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tests.support.smtp_base import ServerBase, check_loopback


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


class ScriptedServer(ServerBase):
    """A raw asyncio SMTP server that does exactly what its `Script` says."""

    def __init__(self, script: Script | None = None, host: str = "127.0.0.1", port: int = 0):
        super().__init__()
        check_loopback(host)
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
    check_loopback(host)
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
