"""The side effects of the SMTP session machine inside a transaction and at
QUIT: RSET, MAIL, RCPT, DATA, the body, and every way a transaction ends.

Split from `engine.session_handlers` (connecting, greeting, TLS, AUTH) only
for length; the conventions are the same (see that module).  The one
bookkeeping rule: each recipient of the batch gets exactly one
`RecipientResult`, then `TransactionDone`.  A recipient has its result once
its RCPT was refused or MAIL was refused; the rest (`_unresolved`) get
theirs from the DATA reply, the final-dot reply, or whatever ended the
connection.

Pipelining: the batch RSET, MAIL, RCPT..., DATA is one write, and the
replies arrive one `Response` each, in order, driving the same states as
the one-at-a-time dialog; the only differences are that nothing is sent
between replies, and that every reply is consumed even after MAIL was
refused (the server answers each command anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.effects import Verb
from engine.reply import Reply
from engine.session_handlers import (
    _AWAITED,
    _DATA,
    _PHASE,
    READY,
    Fx,
    Out,
    _Command,
    _end,
    _RecipientResult,
    _Send,
    _send,
    _SetTimer,
    _TransactionDone,
    mail_line,
    reply_status,
)
from engine.session_model import (
    DELIVERED,
    TRANSIENT,
    State,
    Status,
)

if TYPE_CHECKING:
    from engine.session import Session


def _unresolved(s: Session) -> list[str]:
    """The recipients of the batch that have no result yet."""
    if s.mail_failed:
        return []
    return s.accepted + list(s.batch[s.replies :])


def _awaited_command(s: Session) -> str:
    """The command line whose reply is awaited, for `RecipientResult.command`."""
    state = s.state
    if state is State.MAIL_SENT:
        return mail_line(s)
    if state is State.RCPT_SENT:
        return f"RCPT TO:<{s.batch[s.replies]}>"
    return {State.RSET_SENT: "RSET", State.DATA_SENT: "DATA", State.BODY_SENT: "."}[state]


def _resolve_all(s: Session, out: Out, status: Status, reply: Reply, command: str) -> None:
    msg_id = s.message.id  # type: ignore[union-attr]
    for rcpt in _unresolved(s):
        out.append(_RecipientResult(msg_id, rcpt, status, reply, command))


def _finish(s: Session, fx: Fx, out: Out) -> State:
    """Every recipient has its result: the transaction is over, the session idle."""
    fx.append(s.cancel_timer)
    out.append(_TransactionDone(s.message.id))  # type: ignore[union-attr]
    out.append(READY)
    s.message = None
    return State.IDLE


def _abort(
    s: Session, fx: Fx, out: Out, reply: Reply, reason: str, *, cancel: bool, close: bool
) -> State:
    """The connection ends mid-transaction: the recipients without a result
    are deferred with `reply`, then the transaction and the session end."""
    _resolve_all(s, out, TRANSIENT, reply, _awaited_command(s))
    out.append(_TransactionDone(s.message.id))  # type: ignore[union-attr]
    s.message = None
    return _end(s, fx, out, reason, cancel=cancel, close=close)


# -- connection-ending inputs, in any transaction state ------------------------------


def server_closing(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """421: the server is closing the connection, whatever was asked."""
    reason = f"server closing the connection during {_PHASE[s.state]}: {ev.reply}"
    return _abort(s, fx, out, ev.reply, reason, cancel=True, close=True)


def command_timed_out(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    text = f"waiting for the reply to {_AWAITED[s.state]} timed out after {s.timeout:g}s"
    return _abort(s, fx, out, Reply.make(421, "4.4.2", text), text, cancel=False, close=True)


def connection_lost(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    text = f"connection closed by peer during {_PHASE[s.state]}"
    if ev.reason:
        text += f": {ev.reason}"
    return _abort(s, fx, out, Reply.make(421, "4.4.2", text), text, cancel=True, close=False)


def reply_malformed(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    text = f"malformed reply to {_AWAITED[s.state]}: {ev.detail}"
    return _abort(s, fx, out, Reply.make(421, "4.5.0", text), text, cancel=True, close=True)


# -- RSET and MAIL ----------------------------------------------------------------


def reset_done(s: Session, at: float, _: Any, fx: Fx, out: Out) -> None:
    if not s.pipelined:
        assert s.mail_cmd is not None  # set by transaction_started
        _send(s, fx, s.mail_cmd)
    s.timeout = t = s.cfg.mail_from_timeout
    fx.append(_SetTimer(s.timer, at + t))


def reset_refused(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """RSET refused: the server's transaction state is unknown, so nothing more
    is attempted on this connection; the recipients are not at fault and
    are deferred whatever the class of the reply."""
    reason = f"RSET refused: {ev.reply}"
    return _abort(s, fx, out, ev.reply, reason, cancel=True, close=True)


def sender_accepted(s: Session, at: float, _: Any, fx: Fx, out: Out) -> None:
    if not s.pipelined:
        _send(s, fx, _Command(Verb.RCPT, s.batch[0], "", None))
    s.timeout = t = s.cfg.rcpt_to_timeout
    fx.append(_SetTimer(s.timer, at + t))


def sender_refused(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """MAIL refused: every recipient gets this reply.  With pipelining the
    RCPT and DATA replies are still owed and are consumed (RCPT_SENT)."""
    _resolve_all(s, out, reply_status(ev.reply), ev.reply, mail_line(s))
    s.mail_failed = True
    if s.pipelined:
        s.timeout = t = s.cfg.rcpt_to_timeout
        fx.append(_SetTimer(s.timer, at + t))
        return State.RCPT_SENT
    return _finish(s, fx, out)


# -- RCPT --------------------------------------------------------------------------


def _rcpt(s: Session, at: float, reply: Reply, status: Status, fx: Fx, out: Out) -> State:
    """One RCPT reply: record it, then ask for the next reply (sending the
    next command unless pipelined), or move on to DATA, or finish when
    nobody was accepted (without pipelining no DATA is sent then)."""
    i = s.replies
    rcpt = s.batch[i]
    s.replies = i + 1
    if not s.mail_failed:
        if status is DELIVERED:
            s.accepted.append(rcpt)
        else:
            msg_id = s.message.id  # type: ignore[union-attr]
            out.append(_RecipientResult(msg_id, rcpt, status, reply, f"RCPT TO:<{rcpt}>"))
    if i + 1 < len(s.batch):
        if not s.pipelined:
            _send(s, fx, _Command(Verb.RCPT, s.batch[i + 1], "", None))
        s.timeout = t = s.cfg.rcpt_to_timeout
        fx.append(_SetTimer(s.timer, at + t))
        return State.RCPT_SENT
    if s.pipelined:
        s.timeout = t = s.cfg.data_timeout
        fx.append(_SetTimer(s.timer, at + t))
        return State.DATA_SENT
    if s.accepted:
        _send(s, fx, _DATA)
        s.timeout = t = s.cfg.data_timeout
        fx.append(_SetTimer(s.timer, at + t))
        return State.DATA_SENT
    return _finish(s, fx, out)


def recipient_accepted(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    return _rcpt(s, at, ev.reply, DELIVERED, fx, out)


def recipient_deferred(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """4xx, or a 3xx where none is expected."""
    return _rcpt(s, at, ev.reply, TRANSIENT, fx, out)


def recipient_rejected(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """5xx: permanent, except 503 (bad sequence) which is transient."""
    return _rcpt(s, at, ev.reply, reply_status(ev.reply), fx, out)


# -- DATA and the body ---------------------------------------------------------


def data_accepted(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    """354: send the content and the final dot (BODY, argument the message id).

    With pipelining the server may answer DATA with 354 although it refused
    every RCPT.  RFC 2920 suggests sending a lone dot; we drop the
    connection instead (the safe choice: nothing can be delivered by a
    server that is already off-script, and no content is ever sent without
    an accepted recipient).  Every recipient already has its result."""
    if not s.accepted:
        out.append(_TransactionDone(s.message.id))  # type: ignore[union-attr]
        s.message = None
        reason = "DATA accepted with no recipient accepted; connection dropped"
        return _end(s, fx, out, reason, cancel=True, close=True)
    body = _Command(Verb.BODY, s.message.id, "", None)  # type: ignore[union-attr]
    fx.append(_Send(s.conn, (body,)))
    s.timeout = t = s.cfg.data_dot_timeout
    fx.append(_SetTimer(s.timer, at + t))
    return State.BODY_SENT


def data_refused(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """DATA not answered with 354: the accepted recipients get this reply (a
    2xx here is unexpected, so transient)."""
    reply = ev.reply
    status = TRANSIENT if reply.code < 300 else reply_status(reply)
    _resolve_all(s, out, status, reply, "DATA")
    return _finish(s, fx, out)


def message_accepted(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    _resolve_all(s, out, DELIVERED, ev.reply, ".")
    return _finish(s, fx, out)


def message_refused(s: Session, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """4xx/5xx (or an unexpected 3xx) to the final dot."""
    _resolve_all(s, out, reply_status(ev.reply), ev.reply, ".")
    return _finish(s, fx, out)


# -- QUIT ------------------------------------------------------------------------


def quit_acknowledged(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    return _end(s, fx, out, "QUIT", cancel=True, close=True)


def quit_timed_out(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    return _end(s, fx, out, f"no reply to QUIT within {s.timeout:g}s", cancel=False, close=True)


def quit_closed(s: Session, at: float, _: Any, fx: Fx, out: Out) -> State:
    return _end(s, fx, out, "QUIT (closed by peer)", cancel=True, close=False)
