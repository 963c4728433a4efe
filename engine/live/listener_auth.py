"""AUTH (PLAIN, LOGIN) and STARTTLS for the listener, as functions over a `Session`.

The replies and their order of checks are aiosmtpd's: EHLO first, ESMTP
only, TLS or a loopback client, once per session, PLAIN or LOGIN with or
without an initial response, ``*`` aborts.  `starttls` only answers 220 and
moves the session to `State.TLS`; the connection (`listener_session`) then
drops what the client pipelined in clear (RFC 3207), runs the handshake and
starts the session over.
"""

from __future__ import annotations

import hmac
import logging

from engine.live.listener_state import ListenerSettings, Session, State
from engine.live.listener_wire import b64

__all__ = ["auth", "auth_continue", "auth_result", "starttls"]

log = logging.getLogger("egress.listener")

_AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
_AUTH_BAD = b"535 5.7.8 Authentication credentials invalid\r\n"
_BAD_B64 = b"501 5.5.2 Can't decode base64\r\n"


def auth(s: Session, cfg: ListenerSettings, arg: str) -> None:
    out = s.out
    words = arg.split()
    if s.helo is None:
        out.append(b"503 5.5.1 Error: send EHLO first\r\n")
    elif not s.esmtp:
        out.append(b"500 5.5.1 Error: command 'AUTH' not recognized\r\n")
    elif not s.tls and not s.loopback:
        out.append(b"538 5.7.11 Encryption required for requested authentication "
                   b"mechanism\r\n")
    elif s.user is not None:
        out.append(b"503 5.5.1 Already authenticated\r\n")
    elif not words:
        out.append(b"501 5.5.4 Not enough value\r\n")
    elif len(words) > 2:
        out.append(b"501 5.5.4 Too many values\r\n")
    elif words[0].upper() not in ("PLAIN", "LOGIN"):
        out.append(b"504 5.5.4 Unrecognized authentication type\r\n")
    elif cfg.auth is None:
        out.append(b"502 5.5.1 AUTH not available\r\n")
    else:
        mech = words[0].upper()
        if len(words) == 1:
            s.auth_step = (mech, None)
            s.state = State.AUTH
            out.append(b"334 \r\n" if mech == "PLAIN" else b"334 VXNlcm5hbWU6\r\n")
            return
        blob = b64(words[1].encode())
        if blob is None:
            out.append(_BAD_B64)
        elif mech == "PLAIN":
            _auth_plain(s, cfg, blob)
        else:
            s.auth_step = ("LOGIN", blob)
            s.state = State.AUTH
            out.append(b"334 UGFzc3dvcmQ6\r\n")


def auth_continue(s: Session, cfg: ListenerSettings, line: bytes) -> None:
    """The client's answer to a 334."""
    assert s.auth_step is not None
    mech, user = s.auth_step
    s.state = State.CMD
    s.auth_step = None
    line = line.strip()
    if line == b"*":
        s.out.append(b"501 5.7.0 Auth aborted\r\n")
        return
    blob = b64(line)
    if blob is None:
        s.out.append(_BAD_B64)
    elif mech == "PLAIN":
        _auth_plain(s, cfg, blob)
    elif user is None:
        s.auth_step = ("LOGIN", blob)
        s.state = State.AUTH
        s.out.append(b"334 UGFzc3dvcmQ6\r\n")
    else:
        _check_password(s, cfg, "LOGIN", user, blob)


def _auth_plain(s: Session, cfg: ListenerSettings, blob: bytes) -> None:
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        s.out.append(b"501 5.5.2 Can't split auth value\r\n")
    else:
        _check_password(s, cfg, "PLAIN", parts[1], parts[2])


def _check_password(s: Session, cfg: ListenerSettings, mech: str, login: bytes,
                    password: bytes) -> None:
    assert cfg.auth is not None
    user = login.decode("utf-8", "replace")
    if not isinstance(cfg.auth, dict):
        s.auth_check = (mech, user, password)  # a slow hash: the connection runs it
        return
    expected = cfg.auth.get(user)
    auth_result(s, mech, user, expected is not None and hmac.compare_digest(
        expected.encode(), password))


def auth_result(s: Session, mech: str, user: str, ok: bool) -> None:
    """235 and the session is `user`'s, or 535 (the connection delays it)."""
    if ok:
        s.user = user
        s.out.append(_AUTH_OK)
    else:
        log.warning("listener: AUTH %s failed for user %r from %s", mech, user, s.peer)
        s.auth_failed = True
        s.out.append(_AUTH_BAD)


def starttls(s: Session, cfg: ListenerSettings, arg: str) -> None:
    if arg:
        s.out.append(b"501 5.5.4 Syntax: STARTTLS\r\n")
    elif cfg.tls_context is None:
        s.out.append(b"454 4.7.0 TLS not available\r\n")
    elif s.tls:
        s.out.append(b"503 5.5.1 Error: TLS already active\r\n")
    else:
        s.out.append(b"220 2.0.0 Ready to start TLS\r\n")
        s.state = State.TLS
