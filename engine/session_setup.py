"""The SMTP session's handlers from connecting until IDLE: the banner, EHLO
(or HELO), STARTTLS and the handshake, AUTH PLAIN.  One function per thing
that happened (`banner_accepted`, `tls_failed`...), each named in
`engine.session_model.Happened`; the conventions are `engine.session_data.Handler`'s.

A failure here makes the host unusable (`HostFailed`, or `ReconnectInClear`
after a failed handshake the TLS mode lets go clear).  The decisions that
do not fit the table (which TLS mode does what, the AUTH rules) are the two
helpers `_after_hello` and `_auth_or_ready`, named and commented.
"""

from __future__ import annotations

from typing import Any

from engine.effects import SmtpCommand, StartTls, Verb
from engine.events import Closed, TimerFired
from engine.reply import Reply
from engine.session_data import (
    AWAITED,
    PHASE,
    Fx,
    Out,
    SessionData,
    arm,
    end_session,
    fail_host,
    make_command,
    make_set_timer,
    reach_idle,
    send,
    where,
)
from engine.session_model import HostFailed, ReconnectInClear, State

__all__ = [
    "auth_accepted",
    "banner_accepted",
    "connect_started",
    "connect_timed_out",
    "connection_opened",
    "connection_refused",
    "ehlo_accepted",
    "greeting_closed",
    "greeting_malformed",
    "greeting_timed_out",
    "host_refused",
    "parse_ehlo",
    "starttls_accepted",
    "starttls_refused",
    "tls_established",
    "tls_failed",
]

_REQUIRED = frozenset({"Required", "RequiredInsecure"})
_STARTTLS = SmtpCommand(verb=Verb.STARTTLS)


def parse_ehlo(text: str) -> dict[str, tuple[str, ...]]:
    """The EHLO keywords of a 250 reply's text (lines joined with ``"\\n"``,
    the first being the server's greeting), upper-cased, each with its
    parameters: ``{"PIPELINING": (), "AUTH": ("PLAIN", "LOGIN"), "SIZE": ("1000",)}``.
    The obsolete ``AUTH=PLAIN`` spelling counts as AUTH."""
    caps: dict[str, tuple[str, ...]] = {}
    for line in text.split("\n")[1:]:
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        params = tuple(w.upper() for w in words[1:])
        if keyword.startswith("AUTH="):
            params = (keyword[5:], *params)
            keyword = "AUTH"
        if keyword in caps:
            params = caps[keyword] + tuple(p for p in params if p not in caps[keyword])
        caps[keyword] = params
    return caps


# -- decisions after the greeting ---------------------------------------------


def _after_hello(s: SessionData, at: float, fx: Fx, out: Out) -> State:
    """STARTTLS when the mode wants it and it is offered (only once: not
    inside TLS); a Required mode without the offer makes the host unusable."""
    mode = s.tls
    if not s.tls_active and mode != "Disabled":
        if "STARTTLS" in s.capabilities:
            send(s, fx, _STARTTLS)
            arm(s, at, s.cfg.starttls_timeout, fx)
            return State.STARTTLS_SENT
        if mode in _REQUIRED:
            reason = f"enable_tls is {mode} but {where(s)} did not advertise STARTTLS"
            return fail_host(s, fx, out, reason, Reply.make(421, "4.7.0", reason))
    return _auth_or_ready(s, at, fx, out)


def _auth_or_ready(s: SessionData, at: float, fx: Fx, out: Out) -> State:
    """AUTH PLAIN when a user name is configured: only over TLS unless
    allow_smtp_auth_plain_without_tls, and only when advertised.  A refusal
    here sends nothing, so the credential never leaves the machine."""
    cfg = s.cfg
    user = cfg.smtp_auth_plain_username
    if not user:
        return reach_idle(s, fx, out)
    if not s.tls_active and not cfg.allow_smtp_auth_plain_without_tls:
        reason = (
            f"AUTH PLAIN as {user!r} refused: the connection to {where(s)} is not using TLS "
            "and allow_smtp_auth_plain_without_tls is false; the credential was not sent"
        )
        return fail_host(s, fx, out, reason, Reply.make(421, "4.7.0", reason))
    if "PLAIN" not in s.capabilities.get("AUTH", ()):
        reason = f"smtp_auth_plain_username is set but {where(s)} does not advertise AUTH PLAIN"
        return fail_host(s, fx, out, reason, Reply.make(421, "4.7.0", reason))
    send(s, fx, SmtpCommand(verb=Verb.AUTH_PLAIN, arg=user, secret=cfg.smtp_auth_plain_password))
    arm(s, at, cfg.auth_timeout, fx)
    return State.AUTH_SENT


# -- connecting and the greeting ----------------------------------------------------


def connect_started(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> None:
    s.timeout = t = s.cfg.connect_timeout
    fx.append(make_set_timer(s.timer, at + t))


def connection_opened(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> None:
    s.timeout = t = s.cfg.banner_timeout
    fx.append(make_set_timer(s.timer, at + t))


def connection_refused(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    reason = f"connect to {where(s)} failed: {ev.reason or 'connection closed'}"
    return fail_host(s, fx, out, reason, Reply.make(421, "4.4.1", reason), close=False)


def connect_timed_out(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    reason = f"connect to {where(s)} timed out after {s.timeout:g}s"
    return fail_host(s, fx, out, reason, Reply.make(421, "4.4.2", reason), cancel=False)


def banner_accepted(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> None:
    send(s, fx, make_command(Verb.EHLO, s.ehlo_domain, "", None))
    s.timeout = t = s.cfg.ehlo_timeout
    fx.append(make_set_timer(s.timer, at + t))


def host_refused(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """The server said no (or 421) to the banner, EHLO, HELO, STARTTLS in a
    Required mode, or AUTH: this host is unusable."""
    reason = f"{where(s)} refused {PHASE[s.state]}: {ev.reply}"
    return fail_host(s, fx, out, reason, ev.reply)


def greeting_timed_out(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    text = f"waiting for the reply to {AWAITED[s.state]} timed out after {s.timeout:g}s"
    if s.state is State.AWAIT_BANNER:
        text = f"waiting for the banner timed out after {s.timeout:g}s"
    reason = f"{where(s)}: {text}"
    return fail_host(s, fx, out, reason, Reply.make(421, "4.4.2", text), cancel=False)


def greeting_closed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    text = f"connection closed by peer during {PHASE[s.state]}"
    if ev.reason:
        text += f": {ev.reason}"
    reason = f"{where(s)}: {text}"
    return fail_host(s, fx, out, reason, Reply.make(421, "4.4.2", text), close=False)


def greeting_malformed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    text = f"malformed reply to {AWAITED[s.state]}: {ev.detail}"
    reason = f"{where(s)}: {text}"
    return fail_host(s, fx, out, reason, Reply.make(421, "4.5.0", text))


def ehlo_accepted(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    s.capabilities = parse_ehlo(ev.reply.text)
    return _after_hello(s, at, fx, out)


# -- STARTTLS and AUTH --------------------------------------------------------------


def starttls_accepted(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> None:
    # No new timer: starttls_timeout covers the STARTTLS reply and the handshake.
    fx.append(StartTls(conn=s.conn, settings=s.tls_settings))


def starttls_refused(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """Opportunistic modes carry on in clear on this connection (nothing was
    negotiated, so the socket is intact); Required modes cannot."""
    if s.tls in _REQUIRED:
        return host_refused(s, at, ev, fx, out)
    return _auth_or_ready(s, at, fx, out)


def tls_established(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> None:
    s.tls_active = True
    s.tls_protocol, s.tls_cipher, s.tls_peer_subject = ev.protocol, ev.cipher, ev.peer_subject
    s.capabilities = {}  # RFC 3207: forget everything learnt before TLS, EHLO again
    send(s, fx, SmtpCommand(verb=Verb.EHLO, arg=s.ehlo_domain))
    arm(s, at, s.cfg.ehlo_timeout, fx)


def tls_failed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """The handshake failed (TlsFailed, the peer closed, or starttls_timeout).

    A failed handshake leaves the socket unusable (a TLS alert or half a
    handshake is on it), so "continue in clear" can only mean a fresh clear
    connection to the same address: ReconnectInClear.  That is what
    OpportunisticInsecure does, and Opportunistic with
    opportunistic_tls_reconnect_on_failed_handshake; plain Opportunistic
    never goes clear with this host (KumoMTA), and Required modes cannot.
    """
    timed_out = type(ev) is TimerFired
    closed = type(ev) is Closed
    if timed_out:
        reason = f"TLS handshake with {where(s)} timed out after {s.timeout:g}s"
    else:
        detail = ev.reason or ("connection closed by peer" if closed else "unknown error")
        reason = f"TLS handshake with {where(s)} failed: {detail}"
    mode = s.tls
    if mode == "OpportunisticInsecure" or (
        mode == "Opportunistic" and s.cfg.opportunistic_tls_reconnect_on_failed_handshake
    ):
        out.append(ReconnectInClear(reason))
    else:
        out.append(HostFailed(reason, Reply.make(421, "4.4.2" if timed_out else "4.7.0", reason)))
    return end_session(s, fx, out, reason, cancel=not timed_out, close=not closed)


def auth_accepted(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    return reach_idle(s, fx, out)
