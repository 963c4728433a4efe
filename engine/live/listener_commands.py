"""The plain SMTP commands of the listener (EHLO to EXPN; AUTH and STARTTLS are in
`engine.live.listener_auth`), as functions over one connection's `Session`.

Each takes the session, the listener's settings and the command's argument,
appends its reply to ``s.out`` and may change the session.
`engine.live.listener_session` dispatches to them through `HANDLERS` and
writes the replies once per pass.  Reply codes and the order of checks follow
aiosmtpd's; the texts carry enhanced status codes.
"""

from __future__ import annotations

from engine.live.listener_state import ListenerSettings, Session, State
from engine.live.listener_wire import (
    NOT_ASCII_PATH,
    AddressError,
    parse_mail_params,
    parse_path,
    valid_recipient,
)

__all__ = [
    "OK",
    "data",
    "ehlo",
    "expn",
    "helo",
    "help_",
    "mail",
    "noop",
    "quit_",
    "rcpt",
    "rset",
    "vrfy",
]

OK = b"250 2.0.0 OK\r\n"
_BAD_SEQ_HELO = b"503 5.5.1 Error: send HELO first\r\n"
_DATA_GO = b"354 End data with <CR><LF>.<CR><LF>\r\n"
_COMMANDS = "AUTH DATA EHLO EXPN HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY"


def ehlo(s: Session, cfg: ListenerSettings, arg: str) -> None:
    if not arg:
        s.out.append(b"501 5.5.4 Syntax: EHLO hostname\r\n")
        return
    s.reset()
    s.helo = arg
    s.esmtp = True
    lines = [cfg.hostname, "PIPELINING", f"SIZE {cfg.max_message_size}", "8BITMIME",
             "SMTPUTF8", "ENHANCEDSTATUSCODES"]
    if cfg.tls_context is not None and not s.tls:
        lines.append("STARTTLS")
    if cfg.auth is not None and (s.tls or s.loopback):
        lines.append("AUTH LOGIN PLAIN")
    lines.append("HELP")
    last = len(lines) - 1
    s.out.append("".join(f"250{' ' if i == last else '-'}{text}\r\n"
                    for i, text in enumerate(lines)).encode())


def helo(s: Session, cfg: ListenerSettings, arg: str) -> None:
    if not arg:
        s.out.append(b"501 5.5.4 Syntax: HELO hostname\r\n")
        return
    s.reset()
    s.helo = arg
    s.esmtp = False
    s.out.append(f"250 {cfg.hostname}\r\n".encode())


def mail(s: Session, cfg: ListenerSettings, arg: str) -> None:
    out = s.out
    if s.helo is None:
        out.append(_BAD_SEQ_HELO)
        return
    try:
        addr, params = parse_path(arg, "FROM:")
    except AddressError as exc:
        text = str(exc)
        if s.esmtp and text.startswith("501 5.5.4 Syntax"):
            text += " [SP <mail-parameters>]"
        out.append(f"{text}\r\n".encode())
        return
    if params and not s.esmtp:
        out.append(b"501 5.5.4 Syntax: MAIL FROM: <address>\r\n")
        return
    if s.sender is not None:
        out.append(b"503 5.5.1 Error: nested MAIL command\r\n")
        return
    checked = parse_mail_params(params, cfg.max_message_size)
    if checked.error is not None:
        out.append(checked.error)
        return
    if not checked.smtputf8 and not addr.isascii():
        out.append(NOT_ASCII_PATH)
        return
    s.sender = addr
    s.smtputf8 = checked.smtputf8
    out.append(b"250 2.1.0 OK\r\n")


def rcpt(s: Session, cfg: ListenerSettings, arg: str) -> None:
    out = s.out
    if s.helo is None:
        out.append(_BAD_SEQ_HELO)
        return
    if s.sender is None:
        out.append(b"503 5.5.1 Error: need MAIL command\r\n")
        return
    try:
        addr, params = parse_path(arg, "TO:")
    except AddressError as exc:
        out.append(f"{exc}\r\n".encode())
        return
    if not addr:
        out.append(b"501 5.5.4 Syntax: RCPT TO: <address>\r\n")
    elif not s.smtputf8 and not addr.isascii():
        out.append(NOT_ASCII_PATH)
    elif params:
        out.append(b"555 5.5.4 RCPT TO parameters not recognized or not implemented\r\n"
                   if s.esmtp else b"501 5.5.4 Syntax: RCPT TO: <address>\r\n")
    elif s.user is None and s.peer not in cfg.allowed_networks:
        out.append(b"550 5.7.1 relaying denied\r\n")
    elif not valid_recipient(addr):
        out.append(b"501 5.1.3 recipient must be an address of the form local@domain\r\n")
    elif len(s.rcpts) >= cfg.max_recipients:
        out.append(f"452 4.5.3 too many recipients (at most {cfg.max_recipients})\r\n"
                   .encode())
    else:
        s.rcpts.append(addr)
        out.append(b"250 2.1.5 OK\r\n")


def data(s: Session, cfg: ListenerSettings, arg: str) -> None:
    if s.helo is None:
        s.out.append(_BAD_SEQ_HELO)
    elif not s.rcpts:
        s.out.append(b"503 5.5.1 Error: need RCPT command\r\n")
    elif arg:
        s.out.append(b"501 5.5.4 Syntax: DATA\r\n")
    else:
        s.state = State.DATA
        s.out.append(_DATA_GO)


def rset(s: Session, cfg: ListenerSettings, arg: str) -> None:
    if arg:
        s.out.append(b"501 5.5.4 Syntax: RSET\r\n")
    else:
        s.reset()
        s.out.append(OK)


def noop(s: Session, cfg: ListenerSettings, arg: str) -> None:
    s.out.append(OK)


def quit_(s: Session, cfg: ListenerSettings, arg: str) -> None:
    if arg:
        s.out.append(b"501 5.5.4 Syntax: QUIT\r\n")
        return
    s.out.append(b"221 2.0.0 Bye\r\n")
    s.close_after = True


def help_(s: Session, cfg: ListenerSettings, arg: str) -> None:
    s.out.append(f"250 Supported commands: {_COMMANDS}\r\n".encode())


def vrfy(s: Session, cfg: ListenerSettings, arg: str) -> None:
    s.out.append(b"252 2.5.2 Cannot VRFY user, but will accept message and attempt "
                 b"delivery\r\n" if arg else b"501 5.5.4 Syntax: VRFY <address>\r\n")


def expn(s: Session, cfg: ListenerSettings, arg: str) -> None:
    s.out.append(b"502 5.5.1 EXPN not implemented\r\n")
