"""One SMTP server connection of the listener, as an asyncio Protocol.

`SmtpConnection` holds the receive buffer and a `Session` (greeted, TLS,
authenticated, the envelope).  `data_received` appends to the buffer and
`_process` takes out every complete unit in order: a command line (up to
LF), an AUTH continuation line, or a whole DATA body (up to CRLF "." CRLF).
Replies are queued as bytes and written once per pass, so a pipelined batch
is answered by one write.  The only suspensions are the commit of a finished
message (a task awaits the listener's submit callback, then queues the 250
or 451 and resumes the pass; bytes arriving meanwhile are only buffered) and
the STARTTLS handshake.  Command handlers are plain functions over the
session (`listener_commands`, `listener_auth`); the server that owns the
connections is reached through `ListenerHost`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from engine.errors import JournalError
from engine.live import listener_auth, listener_commands
from engine.live.listener_limits import AUTH_LOCKED, NO_MEMORY, Limits
from engine.live.listener_state import ListenerSettings, Session, State
from engine.live.listener_wire import NOT_ASCII_PATH, fast_metadata, is_loopback, undot
from engine.live.submission import Submission, SubmitCallback, split_by_domain

__all__ = ["BOGUS_LIMIT", "MAX_COMMAND_LINE", "ListenerHost", "SmtpConnection"]

log = logging.getLogger("egress.listener")

MAX_COMMAND_LINE = 2048  # bytes with CRLF; Postfix's line_length_limit (RFC 5321 minimum 512)
MAX_BUFFERED = 1 << 20  # bytes buffered during a commit before reading pauses
BOGUS_LIMIT = 5  # unrecognised commands before the connection is dropped (as aiosmtpd)

_TOO_LONG = b"500 5.5.2 Error: command line too long\r\n"
_TOO_BIG = b"552 5.3.4 Error: too much mail data\r\n"
_NOT_ACCEPTED = b"451 4.3.0 temporary failure, message not accepted; try again later\r\n"
_NOT_ASCII = b"500 5.5.2 Error: non-ASCII bytes are allowed only in MAIL and RCPT paths\r\n"

Handler = Callable[[Session, ListenerSettings, str], None]

_HANDLERS: dict[bytes, Handler] = {
    b"EHLO": listener_commands.ehlo,
    b"HELO": listener_commands.helo,
    b"MAIL": listener_commands.mail,
    b"RCPT": listener_commands.rcpt,
    b"DATA": listener_commands.data,
    b"RSET": listener_commands.rset,
    b"NOOP": listener_commands.noop,
    b"QUIT": listener_commands.quit_,
    b"HELP": listener_commands.help_,
    b"VRFY": listener_commands.vrfy,
    b"EXPN": listener_commands.expn,
    b"AUTH": listener_auth.auth,
    b"STARTTLS": listener_auth.starttls,
}


class ListenerHost(Protocol):
    """What a connection needs from the server that accepted it (`Listener`)."""

    settings: ListenerSettings
    limits: Limits
    submit: SubmitCallback
    tenant_key: bytes
    campaign_key: bytes

    def opened(self, conn: SmtpConnection) -> None: ...

    def closed(self, conn: SmtpConnection) -> None: ...

    def commit_started(self) -> None: ...

    def commit_ended(self, accepted: int) -> None: ...


class SmtpConnection(asyncio.Protocol):
    """The server side of one SMTP connection (see the module docstring)."""

    def __init__(self, owner: ListenerHost) -> None:
        self.owner = owner
        self.cfg = owner.settings
        self.s = Session()
        self.transport: Any = None
        self.buf = bytearray()
        self.scan = 0  # where the next search for the end of DATA starts
        self.refuse: bytes | None = None  # the DATA body is being dropped; its reply
        self.held = 0  # bytes of `buf` counted in the listener's `Limits`
        self.admitted = False
        self.holding_back = False  # replies held back after a failed AUTH
        self.skipping = False  # inside an overlong command line
        self.committing = False
        self.paused = False  # reading paused while a commit runs and the buffer is full
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    # -- connection life ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        s = self.s
        s.peer = (str(peer[0]) if isinstance(peer, tuple) else str(peer or "")).split("%")[0]
        s.loopback = is_loopback(s.peer)
        refused = self.owner.limits.admit(s.peer)
        if refused is not None:
            s.state = State.CLOSED
            self.transport.write(refused)
            self.transport.close()
            return
        self.admitted = True
        self.owner.opened(self)
        loop = asyncio.get_running_loop()
        self.last_active = loop.time()
        self.timer = loop.call_at(self.last_active + self.cfg.timeout, self._check_idle)
        self.transport.write(f"220 {self.cfg.hostname} ESMTP egress\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.s.state = State.CLOSED
        if not self.admitted:
            return
        self.admitted = False
        limits = self.owner.limits
        limits.hold(-self.held)
        self.held = 0
        limits.release(self.s.peer)
        self.owner.closed(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        """Close the connection (what a half-received message is lost to: no 250 was sent)."""
        if self.s.state != State.CLOSED:
            self.s.state = State.CLOSED
            self.transport.close()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.cfg.timeout
        due = self.last_active + timeout
        if self.s.state == State.CLOSED:
            return
        if self.committing or loop.time() < due:
            self.timer = loop.call_at(max(due, loop.time() + 1.0), self._check_idle)
            return
        log.info("listener: %s idle for %.0fs; closing", self.s.peer, timeout)
        self.transport.write(b"421 4.4.2 " + self.cfg.hostname.encode() +
                             b" idle timeout, closing connection\r\n")
        self.close()

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        self.buf += data
        self._account()
        self.last_active = asyncio.get_running_loop().time()
        if not self.committing and not self.holding_back and self.s.state != State.TLS:
            self._process()
        elif self.committing and not self.paused and len(self.buf) > MAX_BUFFERED:
            self.paused = True  # a client that does not wait for the 250: stop reading
            self.transport.pause_reading()

    def _account(self) -> None:
        """Tell the listener's `Limits` how much this connection buffers now."""
        size = len(self.buf)
        if size != self.held:
            self.owner.limits.hold(size - self.held)
            self.held = size

    def eof_received(self) -> bool:
        return False  # close our side too; a half-received message is dropped

    # -- the pass over the buffer ------------------------------------------------

    def _process(self) -> None:
        buf = self.buf
        s = self.s
        out = s.out
        pos = 0
        while not self.committing:
            state = s.state
            if state == State.DATA:
                if pos:
                    del buf[:pos]
                    pos = 0
                if not self._take_body():
                    break
                continue
            if state != State.CMD and state != State.AUTH:
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
            elif state == State.AUTH:
                listener_auth.auth_continue(s, self.cfg, line)
                if s.auth_failed or s.auth_check is not None:
                    break
            else:
                self._command(line)
                if s.close_after:
                    self._close_after_write()
                    return
                if s.auth_failed or s.auth_check is not None:
                    break
                if s.state == State.DATA:
                    self.scan = 0
                elif s.state == State.TLS:
                    self._start_tls()
                    return
        if pos:
            del buf[:pos]
        self._account()
        if s.auth_failed:
            self._hold_back()
            return
        if s.auth_check is not None:
            self._check_password()
            return
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
            out.clear()

    def _hold_back(self) -> None:
        """A password was refused: send its 535 (and read on) only after a delay
        that grows with the client's failures (`Limits.auth_failed`)."""
        s = self.s
        s.auth_failed = False
        loop = asyncio.get_running_loop()
        delay = self.owner.limits.auth_failed(s.peer, loop.time())
        self.holding_back = True
        self.transport.pause_reading()
        loop.call_later(delay, self._release)

    def _check_password(self) -> None:
        """A password for a slow hash (bcrypt, ~0.2 s): checked in a worker thread,
        reading paused until it answers, so other connections are not held up."""
        s = self.s
        auth = self.cfg.auth
        assert s.auth_check is not None and auth is not None and not isinstance(auth, dict)
        mech, user, password = s.auth_check
        s.auth_check = None
        check = auth.check
        self.holding_back = True
        self.transport.pause_reading()
        fut = asyncio.get_running_loop().run_in_executor(None, check, user, password)
        fut.add_done_callback(lambda f: self._checked(mech, user, f))

    def _checked(self, mech: str, user: str, fut: asyncio.Future[bool]) -> None:
        error = None if fut.cancelled() else fut.exception()
        ok = not fut.cancelled() and error is None and bool(fut.result())
        if error is not None:  # a broken hash file entry: refused, and said why
            log.error("listener: AUTH check for %r failed: %s", user, error)
        if self.s.state == State.CLOSED:
            return
        listener_auth.auth_result(self.s, mech, user, ok)
        if self.s.auth_failed:
            self._hold_back()  # the 535, after the failure delay
            return
        self._release()

    def _release(self) -> None:
        self.holding_back = False
        if self.s.state == State.CLOSED:
            return
        self.transport.resume_reading()
        self._process()

    def _take_body(self) -> bool:
        """Complete the DATA body at the head of the buffer; False when more is needed."""
        buf = self.buf
        if self.refuse is None and self.scan == 0 and buf[:3] == b".\r\n":
            end, after = 0, 3  # an empty message
        else:
            if self.scan == 0 and len(buf) < 3 and b".\r\n".startswith(bytes(buf)):
                return False
            i = buf.find(b"\r\n.\r\n", self.scan)
            if i < 0:
                if len(buf) > self.cfg.max_message_size + 5:
                    self.refuse = _TOO_BIG
                elif self.refuse is None and self.owner.limits.over_budget():
                    self.refuse = NO_MEMORY
                if self.refuse is not None and len(buf) > 4:
                    del buf[:-4]  # keep only what may begin the terminator
                self.scan = max(0, len(buf) - 4)
                return False
            end, after = i + 2, i + 5
        raw = bytes(buf[:end])
        del buf[:after]
        self.scan = 0
        self.s.state = State.CMD
        refuse, self.refuse = self.refuse, None
        if refuse is None and len(raw) > self.cfg.max_message_size:
            refuse = _TOO_BIG
        if refuse is not None:
            self.s.reset()
            self.s.out.append(refuse)
        else:
            self._message(undot(raw))
        return True

    # -- commands ----------------------------------------------------------------

    def _command(self, line: bytes) -> None:
        s = self.s
        out = s.out
        sp = line.find(b" ")
        verb = (line if sp < 0 else line[:sp]).upper()
        handler = _HANDLERS.get(verb)
        if verb == b"AUTH" and self.owner.limits.auth_locked(
                s.peer, asyncio.get_running_loop().time()):
            out.append(AUTH_LOCKED)
            s.close_after = True
            return
        if handler is None:
            if not line:
                out.append(b"500 5.5.2 Error: bad syntax\r\n")
                return
            s.bogus += 1
            if s.bogus >= BOGUS_LIMIT:
                out.append(b"502 5.5.1 Too many unrecognized commands, goodbye.\r\n")
                s.close_after = True
                return
            name = verb.decode("ascii", "replace")
            out.append(f'500 5.5.1 Error: command "{name}" not recognized\r\n'.encode())
            return
        # MAIL and RCPT may carry UTF-8 addresses (SMTPUTF8, checked by their
        # handlers); anything else, and bytes that are not UTF-8, stay refused.
        path = verb in (b"MAIL", b"RCPT")
        try:
            arg = "" if sp < 0 else line[sp + 1 :].strip().decode("utf-8" if path else "ascii")
        except UnicodeDecodeError:
            out.append(NOT_ASCII_PATH if path else _NOT_ASCII)
            return
        handler(s, self.cfg, arg)

    def _close_after_write(self) -> None:
        self.transport.write(b"".join(self.s.out))
        self.s.out.clear()
        self.close()

    # -- STARTTLS ------------------------------------------------------------------

    def _start_tls(self) -> None:
        """The 220 is queued: send it, drop what was pipelined in clear (RFC 3207),
        and hand the transport to the handshake."""
        self.transport.write(b"".join(self.s.out))
        self.s.out.clear()
        self.transport.pause_reading()
        self.buf.clear()
        self.task = asyncio.get_running_loop().create_task(self._upgrade())

    async def _upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(self.transport, self, self.cfg.tls_context,  # type: ignore[arg-type]
                                       server_side=True,
                                       ssl_handshake_timeout=min(self.cfg.timeout, 60.0))
        except Exception as exc:  # handshake failure, timeout, reset: all end the connection
            log.info("listener: TLS handshake with %s failed: %s", self.s.peer, exc)
            self.task = None
            self.close()
            return
        self.task = None
        s = self.s
        if s.state == State.CLOSED or tls is None:
            return
        self.transport = tls
        s.tls = True
        s.helo = None  # RFC 3207: forget what the client said in clear
        s.esmtp = False
        s.user = None
        s.reset()
        s.state = State.CMD
        self._process()

    # -- the message and its commit ------------------------------------------------

    def _message(self, content: bytes) -> None:
        owner = self.owner
        cfg = self.cfg
        s = self.s
        sender, rcpts = s.sender or "", s.rcpts
        s.reset()
        tenant, campaign = fast_metadata(content, owner.tenant_key, owner.campaign_key,
                                         cfg.tenant_header, cfg.campaign_header)
        subs = split_by_domain(sender, rcpts, content, tenant=tenant, campaign=campaign,
                               peer=s.peer, helo=s.helo or "", session_id=s.session_id)
        self.committing = True
        owner.commit_started()
        self.task = asyncio.get_running_loop().create_task(self._commit(subs))

    async def _commit(self, subs: list[Submission]) -> None:
        owner = self.owner
        accepted = 0
        try:
            ids: list[str] = []
            for sub in subs:
                ids.extend(await owner.submit(sub))
        except JournalError:  # the journal logs each failure episode once
            reply = _NOT_ACCEPTED
        except Exception:
            log.exception("listener: submission from %s failed; replying 451", self.s.peer)
            reply = _NOT_ACCEPTED
        else:
            accepted = len(subs)
            reply = f"250 2.0.0 OK ids={','.join(ids)}\r\n".encode()
        finally:
            owner.commit_ended(accepted)
            self.committing = False
            self.task = None
        if self.s.state != State.CLOSED:
            self.s.out.append(reply)
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            self._process()
