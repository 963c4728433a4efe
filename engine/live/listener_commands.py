"""The SMTP commands of the fast listener's connections: EHLO to EXPN, but AUTH/STARTTLS.

Split from `engine.live.listener_session` to keep each module under about
400 lines; this is a mixin of `SmtpConnection`, as `listener_auth` is, and
uses its state (`out`, `owner`, `helo`, `esmtp`, `tls`, `loopback`, `user`,
`peer`, `sender`, `rcpts`, `state`, `scan`).  Each handler takes the
command's argument, appends its reply (bytes, CRLF-terminated) to `out` and
may change the session; `listener_session` dispatches to them from one
table (`_HANDLERS`) and writes the replies once per pass.  The reply codes
and the order of checks are aiosmtpd's, as the listener replaced an
aiosmtpd-based one; the texts carry enhanced status codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.live.listener_auth import DATA as _DATA
from engine.live.listener_wire import (
    AddressError,
    parse_mail_params,
    parse_path,
    valid_recipient,
)

if TYPE_CHECKING:
    from engine.live.listener import Listener

__all__ = ["OK", "CommandsMixin"]

OK = b"250 2.0.0 OK\r\n"
_BAD_SEQ_HELO = b"503 5.5.1 Error: send HELO first\r\n"
_DATA_GO = b"354 End data with <CR><LF>.<CR><LF>\r\n"
_COMMANDS = "AUTH DATA EHLO EXPN HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY"


class CommandsMixin:
    """The plain SMTP commands, mixed into `SmtpConnection`."""

    owner: Listener
    out: list[bytes]
    state: int
    helo: str | None
    esmtp: bool
    tls: bool
    loopback: bool
    user: str | None
    peer: str
    sender: str | None
    rcpts: list[str]
    scan: int

    def _reset(self) -> None:  # provided by SmtpConnection
        raise NotImplementedError

    def _close_after_write(self) -> None:  # provided by SmtpConnection
        raise NotImplementedError

    def _ehlo(self, arg: str) -> None:
        if not arg:
            self.out.append(b"501 5.5.4 Syntax: EHLO hostname\r\n")
            return
        owner = self.owner
        self._reset()
        self.helo = arg
        self.esmtp = True
        lines = [owner.hostname, "PIPELINING", f"SIZE {owner.max_message_size}", "8BITMIME",
                 "ENHANCEDSTATUSCODES"]
        if owner.tls_context is not None and not self.tls:
            lines.append("STARTTLS")
        if owner.auth is not None and (self.tls or self.loopback):
            lines.append("AUTH LOGIN PLAIN")
        lines.append("HELP")
        last = len(lines) - 1
        self.out.append("".join(f"250{' ' if i == last else '-'}{text}\r\n"
                                for i, text in enumerate(lines)).encode())

    def _helo(self, arg: str) -> None:
        if not arg:
            self.out.append(b"501 5.5.4 Syntax: HELO hostname\r\n")
            return
        self._reset()
        self.helo = arg
        self.esmtp = False
        self.out.append(f"250 {self.owner.hostname}\r\n".encode())

    def _mail(self, arg: str) -> None:
        out = self.out
        if self.helo is None:
            out.append(_BAD_SEQ_HELO)
            return
        try:
            addr, params = parse_path(arg, "FROM:")
        except AddressError as exc:
            text = str(exc)
            if self.esmtp and text.startswith("501"):
                text += " [SP <mail-parameters>]"
            out.append(f"{text}\r\n".encode())
            return
        if params and not self.esmtp:
            out.append(b"501 5.5.4 Syntax: MAIL FROM: <address>\r\n")
            return
        if self.sender is not None:
            out.append(b"503 5.5.1 Error: nested MAIL command\r\n")
            return
        checked = parse_mail_params(params, self.owner.max_message_size)
        if checked.error is not None:
            out.append(checked.error)
            return
        self.sender = addr
        out.append(b"250 2.1.0 OK\r\n")

    def _rcpt(self, arg: str) -> None:
        out = self.out
        owner = self.owner
        if self.helo is None:
            out.append(_BAD_SEQ_HELO)
            return
        if self.sender is None:
            out.append(b"503 5.5.1 Error: need MAIL command\r\n")
            return
        try:
            addr, params = parse_path(arg, "TO:")
        except AddressError as exc:
            out.append(f"{exc}\r\n".encode())
            return
        if not addr:
            out.append(b"501 5.5.4 Syntax: RCPT TO: <address>\r\n")
        elif params:
            out.append(b"555 5.5.4 RCPT TO parameters not recognized or not implemented\r\n"
                       if self.esmtp else b"501 5.5.4 Syntax: RCPT TO: <address>\r\n")
        elif self.user is None and self.peer not in owner.allowed_networks:
            out.append(b"550 5.7.1 relaying denied\r\n")
        elif not valid_recipient(addr):
            out.append(b"501 5.1.3 recipient must be an address of the form local@domain\r\n")
        elif len(self.rcpts) >= owner.max_recipients:
            out.append(f"452 4.5.3 too many recipients (at most {owner.max_recipients})\r\n"
                       .encode())
        else:
            self.rcpts.append(addr)
            out.append(b"250 2.1.5 OK\r\n")

    def _data(self, arg: str) -> None:
        if self.helo is None:
            self.out.append(_BAD_SEQ_HELO)
        elif not self.rcpts:
            self.out.append(b"503 5.5.1 Error: need RCPT command\r\n")
        elif arg:
            self.out.append(b"501 5.5.4 Syntax: DATA\r\n")
        else:
            self.state = _DATA
            self.scan = 0
            self.out.append(_DATA_GO)

    def _rset(self, arg: str) -> None:
        if arg:
            self.out.append(b"501 5.5.4 Syntax: RSET\r\n")
        else:
            self._reset()
            self.out.append(OK)

    def _noop(self, arg: str) -> None:
        self.out.append(OK)

    def _quit(self, arg: str) -> None:
        if arg:
            self.out.append(b"501 5.5.4 Syntax: QUIT\r\n")
            return
        self.out.append(b"221 2.0.0 Bye\r\n")
        self._close_after_write()

    def _help(self, arg: str) -> None:
        self.out.append(f"250 Supported commands: {_COMMANDS}\r\n".encode())

    def _vrfy(self, arg: str) -> None:
        self.out.append(b"252 2.5.2 Cannot VRFY user, but will accept message and attempt "
                        b"delivery\r\n" if arg else b"501 5.5.4 Syntax: VRFY <address>\r\n")

    def _expn(self, arg: str) -> None:
        self.out.append(b"502 5.5.1 EXPN not implemented\r\n")
