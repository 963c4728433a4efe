"""AUTH (PLAIN, LOGIN) and STARTTLS for the fast listener's connections.

Split from `engine.live.listener_session` to keep each module short; this is
a mixin of `SmtpConnection` and uses its state (`out`, `helo`, `esmtp`,
`tls`, `loopback`, `user`, `state`, `buf`, `transport`).  The replies and
their order of checks are aiosmtpd's (what the listener before it answered): EHLO
first, ESMTP only, TLS or a loopback client, once per session, PLAIN or
LOGIN with or without an initial response, ``*`` aborts.  STARTTLS writes
its 220, stops reading, drops whatever the client pipelined after it in
clear (RFC 3207: nothing said before the handshake may carry over), and
hands the transport to `loop.start_tls`; once the handshake is done the
session starts over (a new EHLO is needed).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any

from engine.live.listener_wire import b64

if TYPE_CHECKING:
    from engine.live.listener import Listener

__all__ = ["AuthTlsMixin"]

log = logging.getLogger("egress.listener")

# The connection's states (shared with listener_session, which imports them from here).
CMD, DATA, AUTH, TLS, CLOSED = range(5)

_AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
_AUTH_BAD = b"535 5.7.8 Authentication credentials invalid\r\n"
_BAD_B64 = b"501 5.5.2 Can't decode base64\r\n"


class AuthTlsMixin:
    """AUTH and STARTTLS handling, mixed into `SmtpConnection`."""

    owner: Listener
    transport: Any
    out: list[bytes]
    buf: bytearray
    state: int
    helo: str | None
    esmtp: bool
    tls: bool
    loopback: bool
    user: str | None
    peer: str
    auth_step: tuple[str, bytes | None] | None
    task: asyncio.Task[None] | None

    def close(self) -> None:  # provided by SmtpConnection
        raise NotImplementedError

    def _reset(self) -> None:  # provided by SmtpConnection
        raise NotImplementedError

    def _process(self) -> None:  # provided by SmtpConnection
        raise NotImplementedError


    def _auth(self, arg: str) -> None:
        out = self.out
        owner = self.owner
        words = arg.split()
        if self.helo is None:
            out.append(b"503 5.5.1 Error: send EHLO first\r\n")
        elif not self.esmtp:
            out.append(b"500 5.5.1 Error: command 'AUTH' not recognized\r\n")
        elif not self.tls and not self.loopback:
            out.append(b"538 5.7.11 Encryption required for requested authentication "
                       b"mechanism\r\n")
        elif self.user is not None:
            out.append(b"503 5.5.1 Already authenticated\r\n")
        elif not words:
            out.append(b"501 5.5.4 Not enough value\r\n")
        elif len(words) > 2:
            out.append(b"501 5.5.4 Too many values\r\n")
        elif words[0].upper() not in ("PLAIN", "LOGIN"):
            out.append(b"504 5.5.4 Unrecognized authentication type\r\n")
        elif owner.auth is None:
            out.append(b"502 5.5.1 AUTH not available\r\n")
        else:
            mech = words[0].upper()
            if len(words) == 1:
                self.auth_step = (mech, None)
                self.state = AUTH
                out.append(b"334 \r\n" if mech == "PLAIN" else b"334 VXNlcm5hbWU6\r\n")
                return
            blob = b64(words[1].encode())
            if blob is None:
                out.append(_BAD_B64)
            elif mech == "PLAIN":
                self._auth_plain(blob)
            else:
                self.auth_step = ("LOGIN", blob)
                self.state = AUTH
                out.append(b"334 UGFzc3dvcmQ6\r\n")

    def _auth_continue(self, line: bytes) -> None:
        assert self.auth_step is not None
        mech, user = self.auth_step
        self.state = CMD
        self.auth_step = None
        line = line.strip()
        if line == b"*":
            self.out.append(b"501 5.7.0 Auth aborted\r\n")
            return
        blob = b64(line)
        if blob is None:
            self.out.append(_BAD_B64)
        elif mech == "PLAIN":
            self._auth_plain(blob)
        elif user is None:
            self.auth_step = ("LOGIN", blob)
            self.state = AUTH
            self.out.append(b"334 UGFzc3dvcmQ6\r\n")
        else:
            self._check_password("LOGIN", user, blob)

    def _auth_plain(self, blob: bytes) -> None:
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            self.out.append(b"501 5.5.2 Can't split auth value\r\n")
        else:
            self._check_password("PLAIN", parts[1], parts[2])

    def _check_password(self, mech: str, login: bytes, password: bytes) -> None:
        assert self.owner.auth is not None
        user = login.decode("utf-8", "replace")
        auth = self.owner.auth
        check = getattr(auth, "check", None)
        expected = None if check is not None else auth.get(user)
        if check(user, password) if check is not None else (
                expected is not None and hmac.compare_digest(expected.encode(), password)):
            self.user = user
            self.out.append(_AUTH_OK)
        else:
            log.warning("listener: AUTH %s failed for user %r from %s", mech, user, self.peer)
            self.out.append(_AUTH_BAD)

    def _starttls(self, arg: str) -> None:
        ctx = self.owner.tls_context
        if arg:
            self.out.append(b"501 5.5.4 Syntax: STARTTLS\r\n")
        elif ctx is None:
            self.out.append(b"454 4.7.0 TLS not available\r\n")
        elif self.tls:
            self.out.append(b"503 5.5.1 Error: TLS already active\r\n")
        else:
            self.out.append(b"220 2.0.0 Ready to start TLS\r\n")
            self.transport.write(b"".join(self.out))
            self.out.clear()
            self.transport.pause_reading()
            self.buf.clear()  # anything pipelined after STARTTLS in clear is dropped (RFC 3207)
            self.state = TLS
            self.task = asyncio.get_running_loop().create_task(self._upgrade(ctx))

    async def _upgrade(self, ctx: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(self.transport, self, ctx, server_side=True,
                                       ssl_handshake_timeout=min(self.owner.timeout, 60.0))
        except Exception as exc:  # handshake failure, timeout, reset: all end the connection
            log.info("listener: TLS handshake with %s failed: %s", self.peer, exc)
            self.task = None
            self.close()
            return
        self.task = None
        if self.state == CLOSED or tls is None:
            return
        self.transport = tls
        self.tls = True
        self.helo = None  # RFC 3207: forget what the client said in clear
        self.esmtp = False
        self.user = None
        self._reset()
        self.state = CMD
        self._process()
