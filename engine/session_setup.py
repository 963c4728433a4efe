"""The SMTP session's handlers from connecting until IDLE: the banner, EHLO
(or HELO), STARTTLS and the handshake, AUTH PLAIN.  One function per thing
that happened (`banner_accepted`, `tls_failed`...), each named in
`engine.session_model.Happened`; the conventions are `engine.session_data.Handler`'s.

A failure here makes the host unusable (`HostFailed`, or `ReconnectInClear`
after a failed handshake the TLS mode lets go clear).  The decisions that
do not fit the table (which TLS mode does what, the AUTH rules) are the
helpers `_after_hello`, `_auth_or_ready` and `_after_broken_tls`, named and
commented.  What KumoMTA does around STARTTLS (crates/rfc5321/src/client.rs
``starttls``, crates/kumod/src/smtp_dispatcher.rs) is followed step by step:
anything but 220 to STARTTLS fails the host; the handshake has its own
starttls_timeout, and running out of it fails the host in every mode; a
failed OpportunisticInsecure handshake goes on in clear on the same socket
with a new EHLO; a failed handshake or EHLO after it is remembered
(`TlsBroken`) when remember_broken_tls asks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from engine.effects import SmtpCommand, StartTls, Verb
from engine.events import Closed, Malformed, Response, TimerFired
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
from engine.session_model import HostFailed, ReconnectInClear, State, TlsBroken

__all__ = [
    "auth_accepted",
    "banner_accepted",
    "connect_started",
    "connect_timed_out",
    "connection_opened",
    "connection_refused",
    "ehlo_accepted",
    "ehlo_after_starttls_failed",
    "greeting_closed",
    "greeting_malformed",
    "greeting_timed_out",
    "handshake_timed_out",
    "host_refused",
    "parse_ehlo",
    "starttls_accepted",
    "tls_established",
    "tls_failed",
]

_REQUIRED: Final = frozenset({"Required", "RequiredInsecure"})
_OPPORTUNISTIC: Final = frozenset({"Opportunistic", "OpportunisticInsecure"})
REMEMBER_BROKEN_TLS_DEFAULT: Final = 15 * 60.0
"""KumoMTA's remember_broken_tls when unset but
opportunistic_tls_reconnect_on_failed_handshake is (crates/kumod/src/smtp_dispatcher.rs)."""
_STARTTLS: Final = SmtpCommand(verb=Verb.STARTTLS)


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
    inside TLS, nor after a failed handshake); a Required mode without the
    offer makes the host unusable."""
    mode = s.tls
    if s.tls_defer and not s.tls_active and not s.tls_failure:
        reason = f"{where(s)}: {s.tls_defer}"
        return fail_host(s, fx, out, reason, Reply.make(421, "4.7.5", s.tls_defer))
    if not s.tls_active and not s.tls_failure and mode != "Disabled":
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


def _greeting_failure(s: SessionData, ev: Any) -> tuple[str, Reply, bool, bool]:
    """Why the host is unusable after `ev` (a refusing reply, the timer, the
    peer's close, a malformed reply): (reason, reply to log, cancel the
    timer, close the connection)."""
    t = type(ev)
    if t is Response:
        return f"{where(s)} refused {PHASE[s.state]}: {ev.reply}", ev.reply, True, True
    if t is TimerFired:
        text = f"waiting for the reply to {AWAITED[s.state]} timed out after {s.timeout:g}s"
        if s.state is State.AWAIT_BANNER:
            text = f"waiting for the banner timed out after {s.timeout:g}s"
        return f"{where(s)}: {text}", Reply.make(421, "4.4.2", text), False, True
    if t is Malformed:
        text = f"malformed reply to {AWAITED[s.state]}: {ev.detail}"
        return f"{where(s)}: {text}", Reply.make(421, "4.5.0", text), True, True
    text = f"connection closed by peer during {PHASE[s.state]}"
    if ev.reason:
        text += f": {ev.reason}"
    return f"{where(s)}: {text}", Reply.make(421, "4.4.2", text), True, False


def _greeting_failed(s: SessionData, ev: Any, fx: Fx, out: Out) -> State:
    reason, reply, cancel, close = _greeting_failure(s, ev)
    return fail_host(s, fx, out, reason, reply, cancel=cancel, close=close)


def host_refused(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """The server said no (or 421) to the banner, EHLO, STARTTLS or AUTH:
    this host is unusable."""
    return _greeting_failed(s, ev, fx, out)


def greeting_timed_out(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    return _greeting_failed(s, ev, fx, out)


def greeting_closed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    return _greeting_failed(s, ev, fx, out)


def greeting_malformed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    return _greeting_failed(s, ev, fx, out)


def ehlo_accepted(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    s.capabilities = parse_ehlo(ev.reply.text)
    return _after_hello(s, at, fx, out)


# -- STARTTLS and AUTH --------------------------------------------------------------


def _broken_for(s: SessionData) -> float | None:
    """How long the site's TLS counts as broken after a failure here, or None
    (KumoMTA's ``remember_broken_tls``: the key, else 15 min when
    opportunistic_tls_reconnect_on_failed_handshake is set, else never)."""
    cfg = s.cfg
    if cfg.remember_broken_tls is not None:
        return float(cfg.remember_broken_tls)
    if cfg.opportunistic_tls_reconnect_on_failed_handshake:
        return REMEMBER_BROKEN_TLS_DEFAULT
    return None


def _reconnects_in_clear(s: SessionData) -> bool:
    return s.tls in _OPPORTUNISTIC and s.cfg.opportunistic_tls_reconnect_on_failed_handshake


def _goes_on_in_clear(s: SessionData) -> bool:
    """Does a failed handshake go on in clear on the same socket?  KumoMTA:
    OpportunisticInsecure, unless it reconnects instead."""
    return (s.tls == "OpportunisticInsecure"
            and not s.cfg.opportunistic_tls_reconnect_on_failed_handshake)


def _after_broken_tls(
    s: SessionData, fx: Fx, out: Out, reason: str, reply: Reply, *, cancel: bool, close: bool
) -> State:
    """The handshake, or the EHLO after STARTTLS, failed: remember the site's
    TLS as broken when asked, then reconnect in clear (an opportunistic mode
    with opportunistic_tls_reconnect_on_failed_handshake) or fail the host."""
    duration = _broken_for(s)
    if duration is not None:
        out.append(TlsBroken(duration))
    if _reconnects_in_clear(s):
        out.append(ReconnectInClear(reason))
    else:
        out.append(HostFailed(reason, reply))
    return end_session(s, fx, out, reason, cancel=cancel, close=close)


def starttls_accepted(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """220: run the handshake under a fresh starttls_timeout (KumoMTA times the
    reply and the handshake each with its own).  Any other 2xx fails the host
    as a refusal does.  In OpportunisticInsecure without a reconnect the driver
    is asked to keep the clear socket should the handshake fail."""
    if ev.reply.code != 220:
        return host_refused(s, at, ev, fx, out)
    settings = s.tls_settings
    if _goes_on_in_clear(s):
        settings = dataclasses.replace(settings, fallback_clear=True)
    arm(s, at, s.cfg.starttls_timeout, fx)
    fx.append(StartTls(conn=s.conn, settings=settings))
    return State.TLS_HANDSHAKE


def tls_established(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> None:
    s.tls_active = True
    s.tls_protocol, s.tls_cipher, s.tls_peer_subject = ev.protocol, ev.cipher, ev.peer_subject
    s.capabilities = {}  # RFC 3207: forget everything learnt before TLS, EHLO again
    send(s, fx, SmtpCommand(verb=Verb.EHLO, arg=s.ehlo_domain))
    arm(s, at, s.cfg.ehlo_timeout, fx)


def tls_failed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """The handshake failed (TlsFailed, or the peer closed).

    OpportunisticInsecure without opportunistic_tls_reconnect_on_failed_handshake
    goes on in clear on the same socket with a new EHLO, as KumoMTA does
    (the driver kept the socket, `TlsSettings.fallback_clear`); when the peer
    closed there is no socket left and the host fails, as KumoMTA's EHLO
    would.  Otherwise: a clear reconnect (an opportunistic mode with that
    key) or the host fails.
    """
    closed = type(ev) is Closed
    detail = ev.reason or ("connection closed by peer" if closed else "unknown error")
    reason = f"TLS handshake with {where(s)} failed: {detail}"
    if _goes_on_in_clear(s) and not closed:
        duration = _broken_for(s)
        if duration is not None:
            out.append(TlsBroken(duration))
        s.tls_failure = detail
        s.capabilities = {}
        send(s, fx, SmtpCommand(verb=Verb.EHLO, arg=s.ehlo_domain))
        arm(s, at, s.cfg.ehlo_timeout, fx)
        return State.EHLO2_SENT
    return _after_broken_tls(s, fx, out, reason, Reply.make(421, "4.7.0", reason),
                             cancel=True, close=not closed)


def handshake_timed_out(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    """starttls_timeout ran out during the handshake: the host fails in every
    mode, nothing is remembered and nothing goes on in clear (KumoMTA: the
    peer is mid-handshake, a clear fallback cannot work)."""
    reason = f"TLS handshake with {where(s)} timed out after {s.timeout:g}s"
    return fail_host(s, fx, out, reason, Reply.make(421, "4.4.2", reason), cancel=False)


def ehlo_after_starttls_failed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """The EHLO after STARTTLS was refused, timed out, malformed or cut off:
    broken TLS as a failed handshake is (KumoMTA).  After a failed
    OpportunisticInsecure handshake the reason says so."""
    reason, reply, cancel, close = _greeting_failure(s, ev)
    if s.tls_failure:
        reason += f" (in clear after a failed OpportunisticInsecure handshake: {s.tls_failure})"
    return _after_broken_tls(s, fx, out, reason, reply, cancel=cancel, close=close)


def auth_accepted(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    return reach_idle(s, fx, out)
