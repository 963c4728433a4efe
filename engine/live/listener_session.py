"""One SMTP server connection of the fast listener, as an asyncio Protocol.

`SmtpConnection` holds the receive buffer and the session state (greeted,
TLS, authenticated, the envelope).  `data_received` appends to the buffer
and `_process` takes out every complete unit in order: a command line (up to
LF), an AUTH continuation line, or a whole DATA body (up to CRLF "." CRLF).
Replies are queued as bytes and written once per pass, so a pipelined batch
is answered by one write.  The only suspension is the commit of a finished
message: a task awaits the listener's submit callback, then queues the 250
(or 451) and resumes the pass; bytes arriving meanwhile are only buffered.
The commands' handlers are in `engine.live.listener_commands`, AUTH and
STARTTLS in `engine.live.listener_auth` (mixins).  The listener object itself
(`engine.live.listener.Listener`) holds the configuration and the commit
bookkeeping for `stop(grace)`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from engine.live.listener_auth import AUTH as _AUTH
from engine.live.listener_auth import CLOSED as _CLOSED
from engine.live.listener_auth import CMD as _CMD
from engine.live.listener_auth import DATA as _DATA
from engine.live.listener_auth import TLS as _TLS
from engine.live.listener_auth import AuthTlsMixin
from engine.live.listener_commands import CommandsMixin
from engine.live.listener_wire import fast_metadata, is_loopback, undot
from engine.live.submission import Submission, split_by_domain

if TYPE_CHECKING:
    from engine.live.listener import Listener

__all__ = ["MAX_COMMAND_LINE", "SmtpConnection"]

log = logging.getLogger("egress.listener")

MAX_COMMAND_LINE = 2048  # bytes with CRLF; Postfix's line_length_limit (RFC 5321 minimum 512)
MAX_BUFFERED = 1 << 20  # bytes buffered during a commit before reading pauses
BOGUS_LIMIT = 5  # unrecognised commands before the connection is dropped (as aiosmtpd)

_TOO_LONG = b"500 5.5.2 Error: command line too long\r\n"
_TOO_BIG = b"552 5.3.4 Error: too much mail data\r\n"


class SmtpConnection(CommandsMixin, AuthTlsMixin, asyncio.Protocol):
    """The server side of one SMTP connection (see the module docstring)."""

    def __init__(self, owner: Listener) -> None:
        self.owner = owner
        self.transport: Any = None
        self.peer = ""
        self.loopback = False
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.state = _CMD
        self.helo: str | None = None
        self.esmtp = False
        self.tls = False
        self.user: str | None = None
        self.sender: str | None = None
        self.rcpts: list[str] = []
        self.scan = 0  # where the next search for the end of DATA starts
        self.too_big = False
        self.skipping = False  # inside an overlong command line
        self.bogus = 0
        self.auth_step: tuple[str, bytes | None] | None = None
        self.committing = False
        self.paused = False  # reading paused while a commit runs and the buffer is full
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    # -- connection life ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]) if isinstance(peer, tuple) else str(peer or "")).split("%")[0]
        self.loopback = is_loopback(self.peer)
        owner = self.owner
        owner._conns.add(self)
        loop = asyncio.get_running_loop()
        self.last_active = loop.time()
        self.timer = loop.call_at(self.last_active + owner.timeout, self._check_idle)
        self.transport.write(f"220 {owner.hostname} ESMTP egress\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self.owner._conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        """Close the connection (what a half-received message is lost to: no 250 was sent)."""
        if self.state != _CLOSED:
            self.state = _CLOSED
            self.transport.close()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        due = self.last_active + self.owner.timeout
        if self.state == _CLOSED:
            return
        if self.committing or loop.time() < due:
            self.timer = loop.call_at(max(due, loop.time() + 1.0), self._check_idle)
            return
        log.info("listener: %s idle for %.0fs; closing", self.peer, self.owner.timeout)
        self.transport.write(b"421 4.4.2 " + self.owner.hostname.encode() +
                             b" idle timeout, closing connection\r\n")
        self.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.last_active = asyncio.get_running_loop().time()
        if not self.committing and self.state != _TLS:
            self._process()
        elif self.committing and not self.paused and len(self.buf) > MAX_BUFFERED:
            self.paused = True  # a client that does not wait for the 250: stop reading
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # close our side too; a half-received message is dropped

    # -- the pass over the buffer ------------------------------------------------

    def _process(self) -> None:
        buf = self.buf
        out = self.out
        pos = 0
        while not self.committing:
            state = self.state
            if state == _DATA:
                if pos:
                    del buf[:pos]
                    pos = 0
                if not self._take_body():
                    break
                continue
            if state != _CMD and state != _AUTH:
                break
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > MAX_COMMAND_LINE:
                    self.skipping = True
                    pos = len(buf)
                break
            line = bytes(buf[pos:nl]).rstrip(b"\r\n")
            pos = nl + 1
            if self.skipping or len(line) > MAX_COMMAND_LINE - 2:
                self.skipping = False
                out.append(_TOO_LONG)
            elif state == _AUTH:
                self._auth_continue(line)
            else:
                self._command(line)
                if self.state == _TLS:
                    pos = 0  # the buffer was emptied by STARTTLS
                    break
        if pos:
            del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
            out.clear()

    def _take_body(self) -> bool:
        """Complete the DATA body at the head of the buffer; False when more is needed."""
        buf = self.buf
        if not self.too_big and self.scan == 0 and buf[:3] == b".\r\n":
            end, after = 0, 3  # an empty message
        else:
            if self.scan == 0 and len(buf) < 3 and b".\r\n".startswith(bytes(buf)):
                return False
            i = buf.find(b"\r\n.\r\n", self.scan)
            if i < 0:
                if len(buf) > self.owner.max_message_size + 5:
                    self.too_big = True  # keep only what may begin the terminator
                    del buf[:-4]
                self.scan = max(0, len(buf) - 4)
                return False
            end, after = i + 2, i + 5
        raw = bytes(buf[:end])
        del buf[:after]
        self.scan = 0
        self.state = _CMD
        too_big, self.too_big = self.too_big, False
        if too_big or len(raw) > self.owner.max_message_size:
            self._reset()
            self.out.append(_TOO_BIG)
        else:
            self._message(undot(raw))
        return True

    # -- commands ----------------------------------------------------------------

    def _command(self, line: bytes) -> None:
        out = self.out
        sp = line.find(b" ")
        verb = (line if sp < 0 else line[:sp]).upper()
        handler = _HANDLERS.get(verb)
        if handler is None:
            if not line:
                out.append(b"500 5.5.2 Error: bad syntax\r\n")
                return
            self.bogus += 1
            if self.bogus >= BOGUS_LIMIT:
                out.append(b"502 5.5.1 Too many unrecognized commands, goodbye.\r\n")
                self._close_after_write()
                return
            name = verb.decode("ascii", "replace")
            out.append(f'500 5.5.1 Error: command "{name}" not recognized\r\n'.encode())
            return
        try:
            arg = "" if sp < 0 else line[sp + 1 :].strip().decode("ascii")
        except UnicodeDecodeError:
            out.append(b"500 5.5.2 Error: strict ASCII mode (SMTPUTF8 is not offered)\r\n")
            return
        handler(self, arg)

    def _close_after_write(self) -> None:
        self.transport.write(b"".join(self.out))
        self.out.clear()
        self.close()

    def _reset(self) -> None:
        self.sender = None
        self.rcpts = []

    # -- the message and its commit ------------------------------------------------

    def _message(self, content: bytes) -> None:
        owner = self.owner
        sender, rcpts = self.sender or "", self.rcpts
        self._reset()
        tenant, campaign = fast_metadata(content, owner._tenant_key, owner._campaign_key,
                                         owner.tenant_header, owner.campaign_header)
        subs = split_by_domain(sender, rcpts, content, tenant=tenant, campaign=campaign,
                               peer=self.peer)
        self.committing = True
        owner._commit_started()
        self.task = asyncio.get_running_loop().create_task(self._commit(subs))

    async def _commit(self, subs: list[Submission]) -> None:
        owner = self.owner
        try:
            ids: list[str] = []
            for sub in subs:
                ids.extend(await owner.submit(sub))
        except Exception:
            log.exception("listener: submission from %s failed; replying 451", self.peer)
            reply = b"451 4.3.0 temporary failure, message not accepted; try again later\r\n"
        else:
            owner.accepted += len(subs)
            reply = f"250 2.0.0 OK ids={','.join(ids)}\r\n".encode()
        finally:
            owner._commit_ended()
            self.committing = False
            self.task = None
        if self.state != _CLOSED:
            self.out.append(reply)
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            self._process()


_HANDLERS: dict[bytes, Any] = {
    b"EHLO": SmtpConnection._ehlo,
    b"HELO": SmtpConnection._helo,
    b"MAIL": SmtpConnection._mail,
    b"RCPT": SmtpConnection._rcpt,
    b"DATA": SmtpConnection._data,
    b"RSET": SmtpConnection._rset,
    b"NOOP": SmtpConnection._noop,
    b"QUIT": SmtpConnection._quit,
    b"HELP": SmtpConnection._help,
    b"VRFY": SmtpConnection._vrfy,
    b"EXPN": SmtpConnection._expn,
    b"AUTH": SmtpConnection._auth,
    b"STARTTLS": SmtpConnection._starttls,
}
