"""The side effects of the SMTP session machine, one function per thing that
happened (`banner_accepted`, `recipient_deferred`, `command_timed_out`...).

Each handler is called by `Session` only after the transition table
(`engine.session_table`) has a row for the (state, input) pair, so a
handler never has to refuse anything and never raises: it appends effects
and outcomes to the two lists it is given, updates the session, and
returns the next state when the row lists more than one (None means the
row's first).  The decisions that do not fit a table (which TLS mode does
what, AUTH rules, how many replies a pipelined batch still owes) are the
helpers at the top, named and commented.

Signature of every handler: ``(session, at, payload, effects, outcomes) ->
State | None`` where `payload` is the event, the `TxnMessage`, or None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.effects import Close, Effect, Send, SetTimer, SmtpCommand, StartTls, Verb
from engine.events import Closed, TimerFired, trusted_factory
from engine.reply import Reply
from engine.session_model import (
    DELIVERED,
    PERMANENT,
    TRANSIENT,
    HostFailed,
    Outcome,
    RecipientResult,
    ReconnectInClear,
    SessionClosed,
    SessionReady,
    State,
    Status,
    TransactionDone,
    TxnMessage,
    parse_ehlo,
)

if TYPE_CHECKING:
    from engine.session import Session

Fx = list[Effect]
Out = list[Outcome]

QUIT_TIMEOUT = 5.0
"""Seconds to wait for the reply to QUIT (not configurable in KumoMTA)."""

_REQUIRED = frozenset({"Required", "RequiredInsecure"})
_DATA, _RSET, _STARTTLS = (SmtpCommand(verb=v) for v in (Verb.DATA, Verb.RSET, Verb.STARTTLS))
_QUIT = SmtpCommand(verb=Verb.QUIT)

# The effects and outcomes made on every reply, built without re-validating
# values the session made itself (see `engine.events.trusted_factory`).
_SetTimer = trusted_factory(SetTimer)
_Send = trusted_factory(Send)
_Command = trusted_factory(SmtpCommand)  # (verb, arg, params, secret)
_RecipientResult = trusted_factory(RecipientResult)
_TransactionDone = trusted_factory(TransactionDone)
_Close = trusted_factory(Close)
_SessionClosed = trusted_factory(SessionClosed)
READY = SessionReady()  # no fields: one value serves every session

# What the session is waiting for in each state, for messages ("... during DATA").
_PHASE = {
    State.AWAIT_CONNECT: "connect",
    State.AWAIT_BANNER: "the banner",
    State.EHLO_SENT: "EHLO",
    State.HELO_SENT: "HELO",
    State.STARTTLS_SENT: "STARTTLS",
    State.TLS_HANDSHAKE: "the TLS handshake",
    State.EHLO2_SENT: "EHLO after STARTTLS",
    State.AUTH_SENT: "AUTH PLAIN",
    State.IDLE: "idle",
    State.RSET_SENT: "RSET",
    State.MAIL_SENT: "MAIL FROM",
    State.RCPT_SENT: "RCPT TO",
    State.DATA_SENT: "DATA",
    State.BODY_SENT: "DATA",
    State.QUIT_SENT: "QUIT",
}
# ... and what a timeout there waited for ("waiting for the reply to ... timed out").
_AWAITED = {**_PHASE, State.BODY_SENT: "the end of DATA (.)"}


def reply_status(reply: Reply) -> Status:
    """KumoMTA's classes: 2xx delivered; 4xx, 3xx and 503 transient; other 5xx
    permanent (an unexpected 3xx is classified by its caller)."""
    klass = reply.code // 100
    if klass == 2:
        return DELIVERED
    if klass == 5 and reply.code != 503:
        return PERMANENT
    return TRANSIENT


def _arm(s: Session, at: float, seconds: float, fx: Fx) -> None:
    """Arm the command timer for `seconds`.  The per-reply handlers (and the
    greeting's) spell these two lines out instead of calling this: one call
    fewer on nearly every reply."""
    s.timeout = seconds
    fx.append(_SetTimer(s.timer, at + seconds))


def _send(s: Session, fx: Fx, *commands: SmtpCommand) -> None:
    fx.append(_Send(s.conn, commands))


def mail_line(s: Session) -> str:
    """The MAIL command line of the transaction, for `RecipientResult.command`
    (``"MAIL FROM:<a@b> SIZE=12"``); built on first use, since most
    transactions never need it."""
    if not s.mail_line:
        cmd = s.mail_cmd
        assert cmd is not None
        s.mail_line = f"MAIL FROM:<{cmd.arg}>" + (f" {cmd.params}" if cmd.params else "")
    return s.mail_line


def _where(s: Session) -> str:
    return f"{s.host} [{s.address}]:{s.port}"


def _end(s: Session, fx: Fx, out: Out, reason: str, *, cancel: bool, close: bool) -> State:
    """The connection is over: cancel the command timer unless it just fired,
    close unless the peer already did, and say so last."""
    if cancel:
        fx.append(s.cancel_timer)
    if close:
        fx.append(_Close(s.conn))
    out.append(_SessionClosed(reason))
    return State.CLOSED


def _host_failed(
    s: Session, fx: Fx, out: Out, reason: str, reply: Reply, *, cancel: bool = True,
    close: bool = True,
) -> State:
    out.append(HostFailed(reason, reply))
    return _end(s, fx, out, reason, cancel=cancel, close=close)


def _ready(s: Session, fx: Fx, out: Out) -> State:
    fx.append(s.cancel_timer)
    out.append(READY)
    return State.IDLE


# -- decisions after the greeting ---------------------------------------------


def _after_hello(s: Session, at: float, fx: Fx, out: Out) -> State:
    """STARTTLS when the mode wants it and it is offered (only once: not
    inside TLS); a Required mode without the offer makes the host unusable."""
    mode = s.tls
    if not s.tls_active and mode != "Disabled":
        if "STARTTLS" in s.capabilities:
            _send(s, fx, _STARTTLS)
            _arm(s, at, s.cfg.starttls_timeout, fx)
            return State.STARTTLS_SENT
        if mode in _REQUIRED:
            reason = f"enable_tls is {mode} but {_where(s)} did not advertise STARTTLS"
            return _host_failed(s, fx, out, reason, Reply.make(421, "4.7.0", reason))
    return _auth_or_ready(s, at, fx, out)


def _auth_or_ready(s: Session, at: float, fx: Fx, out: Out) -> State:
    """AUTH PLAIN when a user name is configured: only over TLS unless
    allow_smtp_auth_plain_without_tls, and only when advertised.  A refusal
    here sends nothing, so the credential never leaves the machine."""
    cfg = s.cfg
    user = cfg.smtp_auth_plain_username
    if not user:
        return _ready(s, fx, out)
    if not s.tls_active and not cfg.allow_smtp_auth_plain_without_tls:
        reason = (
            f"AUTH PLAIN as {user!r} refused: the connection to {_where(s)} is not using TLS "
            "and allow_smtp_auth_plain_without_tls is false; the credential was not sent"
        )
        return _host_failed(s, fx, out, reason, Reply.make(421, "4.7.0", reason))
    if "PLAIN" not in s.capabilities.get("AUTH", ()):
        reason = f"smtp_auth_plain_username is set but {_where(s)} does not advertise AUTH PLAIN"
        return _host_failed(s, fx, out, reason, Reply.make(421, "4.7.0", reason))
    _send(s, fx, SmtpCommand(verb=Verb.AUTH_PLAIN, arg=user, secret=cfg.smtp_auth_plain_password))
    _arm(s, at, cfg.auth_timeout, fx)
    return State.AUTH_SENT


# -- connecting and greeting ------------------------------------------------------


def connect_started(s: Session, at: float, _: Any, fx: Fx, out: Out) -> None:
    s.timeout = t = s.cfg.connect_timeout
    fx.append(_SetTimer(s.timer, at + t))


def connection_opened(s: Session, at: float, _: Any, fx: Fx, out: Out) -> None:
    s.timeout = t = s.cfg.banner_timeout
    fx.append(_SetTimer(s.timer, at + t))


def connection_refused(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    reason = f"connect to {_where(s)} failed: {ev.reason or 'connection closed'}"
    return _host_failed(s, fx, out, reason, Reply.make(421, "4.4.1", reason), close=False)


def connect_timed_out(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    reason = f"connect to {_where(s)} timed out after {s.timeout:g}s"
    return _host_failed(s, fx, out, reason, Reply.make(421, "4.4.2", reason), cancel=False)


def banner_accepted(s: Session, at: float, _: Any, fx: Fx, out: Out) -> None:
    _send(s, fx, _Command(Verb.EHLO, s.ehlo_domain, "", None))
    s.timeout = t = s.cfg.ehlo_timeout
    fx.append(_SetTimer(s.timer, at + t))


def host_refused(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """The server said no (or 421) to the banner, EHLO, HELO, STARTTLS in a
    Required mode, or AUTH: this host is unusable."""
    reason = f"{_where(s)} refused {_PHASE[s.state]}: {ev.reply}"
    return _host_failed(s, fx, out, reason, ev.reply)


def greeting_timed_out(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    text = f"waiting for the reply to {_AWAITED[s.state]} timed out after {s.timeout:g}s"
    if s.state is State.AWAIT_BANNER:
        text = f"waiting for the banner timed out after {s.timeout:g}s"
    reason = f"{_where(s)}: {text}"
    return _host_failed(s, fx, out, reason, Reply.make(421, "4.4.2", text), cancel=False)


def greeting_closed(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    text = f"connection closed by peer during {_PHASE[s.state]}"
    if ev.reason:
        text += f": {ev.reason}"
    reason = f"{_where(s)}: {text}"
    return _host_failed(s, fx, out, reason, Reply.make(421, "4.4.2", text), close=False)


def greeting_malformed(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    text = f"malformed reply to {_AWAITED[s.state]}: {ev.detail}"
    reason = f"{_where(s)}: {text}"
    return _host_failed(s, fx, out, reason, Reply.make(421, "4.5.0", text))


def ehlo_accepted(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    s.capabilities = parse_ehlo(ev.reply.text)
    return _after_hello(s, at, fx, out)


def ehlo_refused(s: Session, at: float, _: Any, fx: Fx, out: Out) -> None:
    """A 5xx to EHLO: fall back to HELO (RFC 5321 3.2), which offers nothing."""
    s.esmtp = False
    _send(s, fx, SmtpCommand(verb=Verb.HELO, arg=s.ehlo_domain))
    _arm(s, at, s.cfg.ehlo_timeout, fx)


def helo_accepted(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    s.capabilities = {}
    return _after_hello(s, at, fx, out)


# -- STARTTLS and AUTH --------------------------------------------------------------


def starttls_accepted(s: Session, at: float, _: Any, fx: Fx, out: Out) -> None:
    # No new timer: starttls_timeout covers the STARTTLS reply and the handshake.
    fx.append(StartTls(conn=s.conn, settings=s.tls_settings))


def starttls_refused(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """Opportunistic modes carry on in clear on this connection (nothing was
    negotiated, so the socket is intact); Required modes cannot."""
    if s.tls in _REQUIRED:
        return host_refused(s, at, ev, fx, out)
    return _auth_or_ready(s, at, fx, out)


def tls_established(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> None:
    s.tls_active = True
    s.tls_protocol, s.tls_cipher, s.tls_peer_subject = ev.protocol, ev.cipher, ev.peer_subject
    s.capabilities = {}  # RFC 3207: forget everything learnt before TLS, EHLO again
    _send(s, fx, SmtpCommand(verb=Verb.EHLO, arg=s.ehlo_domain))
    _arm(s, at, s.cfg.ehlo_timeout, fx)


def tls_failed(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
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
        reason = f"TLS handshake with {_where(s)} timed out after {s.timeout:g}s"
    else:
        detail = ev.reason or ("connection closed by peer" if closed else "unknown error")
        reason = f"TLS handshake with {_where(s)} failed: {detail}"
    mode = s.tls
    if mode == "OpportunisticInsecure" or (
        mode == "Opportunistic" and s.cfg.opportunistic_tls_reconnect_on_failed_handshake
    ):
        out.append(ReconnectInClear(reason))
    else:
        out.append(HostFailed(reason, Reply.make(421, "4.4.2" if timed_out else "4.7.0", reason)))
    return _end(s, fx, out, reason, cancel=not timed_out, close=not closed)


def auth_accepted(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    return _ready(s, fx, out)


# -- idle ----------------------------------------------------------------------


def transaction_started(s: Session, at: float, msg: TxnMessage, fx: Fx, out: Out) -> State:
    """One message: RSET (not before the connection's first transaction, and
    only with enable_rset), MAIL, RCPT for up to max_recipients_per_batch
    recipients, DATA; in one Send with PIPELINING, else the first of them.

    Recipients beyond max_recipients_per_batch are not attempted on this
    transaction: each gets a transient 451 4.5.3 result at once, so the
    engine retries them like any deferral."""
    cfg = s.cfg
    limit = cfg.max_recipients_per_batch
    batch = msg.recipients[:limit]
    if len(msg.recipients) > limit:
        reply = Reply.make(
            451, "4.5.3",
            f"{len(msg.recipients)} recipients exceed max_recipients_per_batch={limit}; "
            "the rest are retried later",
        )
        for over in msg.recipients[limit:]:
            out.append(_RecipientResult(msg.id, over, TRANSIENT, reply, f"RCPT TO:<{over}>"))
    s.message, s.batch, s.accepted, s.replies, s.mail_failed = msg, batch, [], 0, False
    caps = s.capabilities
    s.pipelined = pipelined = cfg.enable_pipelining and "PIPELINING" in caps
    rset = s.transactions > 0 and cfg.enable_rset
    s.transactions += 1
    s.mail_cmd = mail = _Command(Verb.MAIL, msg.sender,
                                 f"SIZE={msg.size}" if "SIZE" in caps else "", None)
    s.mail_line = ""  # built only if a result needs it (`mail_line`)
    if pipelined:
        if len(batch) == 1:  # the common case, without building a list first
            rcpt = _Command(Verb.RCPT, batch[0], "", None)
            cmds = (_RSET, mail, rcpt, _DATA) if rset else (mail, rcpt, _DATA)
        else:
            rcpts = [_Command(Verb.RCPT, r, "", None) for r in batch]
            cmds = (*((_RSET,) if rset else ()), mail, *rcpts, _DATA)
        fx.append(_Send(s.conn, cmds))
    else:
        _send(s, fx, _RSET if rset else mail)
    # Pipelined or not, the timer covers the reply awaited now and is re-armed
    # as each reply arrives, with the timeout of the command answered next.
    s.timeout = t = cfg.rset_timeout if rset else cfg.mail_from_timeout
    fx.append(_SetTimer(s.timer, at + t))
    return State.RSET_SENT if rset else State.MAIL_SENT


def quit_sent(s: Session, at: float, _: Any, fx: Fx, out: Out) -> None:
    _send(s, fx, _QUIT)
    _arm(s, at, QUIT_TIMEOUT, fx)


def idle_closed(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    reason = "connection closed by peer while idle" + (f": {ev.reason}" if ev.reason else "")
    return _end(s, fx, out, reason, cancel=False, close=False)


def unsolicited_reply(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    what = ev.reply if hasattr(ev, "reply") else f"malformed: {ev.detail}"
    return _end(s, fx, out, f"unexpected reply while idle: {what}", cancel=False, close=True)
