"""The SMTP session's handlers from IDLE on: starting a transaction (RSET,
MAIL, RCPT, DATA, the body), every way a transaction ends, the idle
connection, and QUIT.  One function per thing that happened, each named in
`engine.session_model.Happened`; the conventions are
`engine.session_data.Handler`'s.

The one bookkeeping rule: each recipient of the batch gets exactly one
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

from typing import Any, Final

from engine.effects import SmtpCommand, Verb
from engine.reply import Reply
from engine.session_data import (
    AWAITED,
    PHASE,
    READY,
    Fx,
    Out,
    SessionData,
    arm,
    end_session,
    mail_line,
    make_command,
    make_recipient_result,
    make_send,
    make_set_timer,
    make_transaction_done,
    reply_status,
    send,
)
from engine.session_model import DELIVERED, PERMANENT, TRANSIENT, State, Status, TxnMessage

__all__ = [
    "command_timed_out",
    "connection_lost",
    "data_accepted",
    "data_refused",
    "idle_closed",
    "message_accepted",
    "message_refused",
    "quit_acknowledged",
    "quit_closed",
    "quit_sent",
    "quit_timed_out",
    "recipient_accepted",
    "recipient_deferred",
    "recipient_rejected",
    "reply_malformed",
    "reset_done",
    "reset_refused",
    "sender_accepted",
    "sender_refused",
    "server_closing",
    "transaction_started",
    "unsolicited_reply",
]

_DATA: Final = SmtpCommand(verb=Verb.DATA)
_RSET: Final = SmtpCommand(verb=Verb.RSET)
_QUIT: Final = SmtpCommand(verb=Verb.QUIT)
_DOT: Final = SmtpCommand(verb=Verb.DOT)

# What the per-reply handlers name on every call, as Finals: in the compiled
# build (setup.py) a C static each, where ``State.IDLE`` is a dict lookup and
# an attribute read of a class that is not compiled.
_IDLE: Final = State.IDLE
_RSET_SENT: Final = State.RSET_SENT
_MAIL_SENT: Final = State.MAIL_SENT
_RCPT_SENT: Final = State.RCPT_SENT
_DATA_SENT: Final = State.DATA_SENT
_BODY_SENT: Final = State.BODY_SENT
_MAIL: Final = Verb.MAIL
_RCPT: Final = Verb.RCPT
_BODY: Final = Verb.BODY

# KumoMTA's client refuses an 8-bit envelope itself when the server lacks SMTPUTF8
# (crates/rfc5321/src/client.rs, send_mail); the message bounces with this reply.
NO_SMTPUTF8: Final = Reply.make(554, "5.6.7", "KumoMTA internal: envelope is 8bit, destination "
                         "does not support SMTPUTF8.")


def needs_smtputf8(msg: TxnMessage) -> bool:
    """True when the envelope has a non-ASCII (UTF-8) address, as KumoMTA's
    ``envelope_is_8bit``: derived from the addresses, so nothing is journaled."""
    return not (msg.sender.isascii() and all(map(str.isascii, msg.recipients)))


def _unresolved(s: SessionData) -> list[str]:
    """The recipients of the batch that have no result yet."""
    if s.mail_failed:
        return []
    return s.accepted + list(s.batch[s.replies :])


def _awaited_command(s: SessionData) -> str:
    """The command line whose reply is awaited, for `RecipientResult.command`."""
    state = s.state
    if state is _MAIL_SENT:
        return mail_line(s)
    if state is _RCPT_SENT:
        return f"RCPT TO:<{s.batch[s.replies]}>"
    return {_RSET_SENT: "RSET", _DATA_SENT: "DATA", _BODY_SENT: "."}[state]


def _resolve_all(s: SessionData, out: Out, status: Status, reply: Reply, command: str) -> None:
    msg_id = s.message.id  # type: ignore[union-attr]
    for rcpt in _unresolved(s):
        out.append(make_recipient_result(msg_id, rcpt, status, reply, command))


def _finish(s: SessionData, fx: Fx, out: Out) -> State:
    """Every recipient has its result: the transaction is over, the session idle."""
    fx.append(s.cancel_timer)
    out.append(make_transaction_done(s.message.id))  # type: ignore[union-attr]
    out.append(READY)
    s.message = None
    return _IDLE


def _abort(
    s: SessionData, fx: Fx, out: Out, reply: Reply, reason: str, *, cancel: bool, close: bool
) -> State:
    """The connection ends mid-transaction: the recipients without a result
    are deferred with `reply`, then the transaction and the session end."""
    _resolve_all(s, out, TRANSIENT, reply, _awaited_command(s))
    out.append(make_transaction_done(s.message.id))  # type: ignore[union-attr]
    s.message = None
    return end_session(s, fx, out, reason, cancel=cancel, close=close)


# -- idle: a transaction starts, QUIT, or the connection ends -------------------------


def transaction_started(s: SessionData, at: float, msg: TxnMessage, fx: Fx, out: Out) -> State:
    """One message: RSET (`SessionData.use_rset`), MAIL, RCPT for up to
    max_recipients_per_batch recipients, DATA; in one Send with PIPELINING,
    else the first of them.

    Recipients beyond max_recipients_per_batch are not attempted on this
    transaction and get no result: the engine sends them next, on this
    connection (crates/kumod/src/smtp_dispatcher.rs, ``retry_immediately``)."""
    cfg = s.cfg
    caps = s.capabilities
    recipients = msg.recipients
    # needs_smtputf8, spelled out for the usual single recipient
    utf8 = not (msg.sender.isascii() and recipients[0].isascii()) if len(recipients) == 1 \
        else needs_smtputf8(msg)
    if utf8 and "SMTPUTF8" not in caps:
        return _refuse_8bit_envelope(s, msg, out)
    batch = recipients[: cfg.max_recipients_per_batch]
    s.message, s.batch, s.accepted, s.replies, s.mail_failed = msg, batch, [], 0, False
    s.pipelined = pipelined = cfg.enable_pipelining and "PIPELINING" in caps
    rset = s.use_rset
    s.use_rset = True  # until the transaction is delivered
    s.transactions += 1
    params = f"SIZE={msg.size}" if "SIZE" in caps else ""
    if utf8:
        params = f"{params} SMTPUTF8" if params else "SMTPUTF8"
    s.mail_cmd = mail = make_command(_MAIL, msg.sender, params, None)
    s.mail_line = ""  # built only if a result needs it (`mail_line`)
    if pipelined:
        cmds: tuple[SmtpCommand, ...]  # one type for both branches (compiled: a checked type)
        if len(batch) == 1:  # the common case, without building a list first
            rcpt = make_command(_RCPT, batch[0], "", None)
            cmds = (_RSET, mail, rcpt, _DATA) if rset else (mail, rcpt, _DATA)
        else:
            rcpts = [make_command(_RCPT, r, "", None) for r in batch]
            cmds = (*((_RSET,) if rset else ()), mail, *rcpts, _DATA)
        fx.append(make_send(s.conn, cmds))
    else:
        send(s, fx, _RSET if rset else mail)
    # Pipelined or not, the timer covers the reply awaited now and is re-armed
    # as each reply arrives, with the timeout of the command answered next.
    s.timeout = t = cfg.rset_timeout if rset else cfg.mail_from_timeout
    fx.append(make_set_timer(s.timer, at + t))
    return _RSET_SENT if rset else _MAIL_SENT


def _refuse_8bit_envelope(s: SessionData, msg: TxnMessage, out: Out) -> State:
    """The server did not offer SMTPUTF8: nothing is sent, every recipient
    bounces with `NO_SMTPUTF8`, and the session stays idle for the next message."""
    command = f"MAIL FROM:<{msg.sender}>"
    for rcpt in msg.recipients[: s.cfg.max_recipients_per_batch]:
        out.append(make_recipient_result(msg.id, rcpt, PERMANENT, NO_SMTPUTF8, command))
    out.append(make_transaction_done(msg.id))
    out.append(READY)
    return _IDLE


def quit_sent(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> None:
    """QUIT waits idle_timeout for its reply, as KumoMTA's client does
    (crates/rfc5321/src/parser.rs, ``Command::client_timeout``)."""
    send(s, fx, _QUIT)
    arm(s, at, s.cfg.idle_timeout, fx)


def idle_closed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    reason = "connection closed by peer while idle" + (f": {ev.reason}" if ev.reason else "")
    return end_session(s, fx, out, reason, cancel=False, close=False)


def unsolicited_reply(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    what = ev.reply if hasattr(ev, "reply") else f"malformed: {ev.detail}"
    return end_session(s, fx, out, f"unexpected reply while idle: {what}", cancel=False, close=True)


# -- connection-ending inputs, in any transaction state ------------------------------


def server_closing(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """421: the server is closing the connection, whatever was asked."""
    reason = f"server closing the connection during {PHASE[s.state]}: {ev.reply}"
    return _abort(s, fx, out, ev.reply, reason, cancel=True, close=True)


def command_timed_out(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    text = f"waiting for the reply to {AWAITED[s.state]} timed out after {s.timeout:g}s"
    return _abort(s, fx, out, Reply.make(421, "4.4.2", text), text, cancel=False, close=True)


def connection_lost(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    text = f"connection closed by peer during {PHASE[s.state]}"
    if ev.reason:
        text += f": {ev.reason}"
    return _abort(s, fx, out, Reply.make(421, "4.4.2", text), text, cancel=True, close=False)


def reply_malformed(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    text = f"malformed reply to {AWAITED[s.state]}: {ev.detail}"
    return _abort(s, fx, out, Reply.make(421, "4.5.0", text), text, cancel=True, close=True)


# -- RSET and MAIL ----------------------------------------------------------------


def reset_done(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> None:
    if not s.pipelined:
        assert s.mail_cmd is not None  # set by transaction_started
        send(s, fx, s.mail_cmd)
    s.timeout = t = s.cfg.mail_from_timeout
    fx.append(make_set_timer(s.timer, at + t))


def reset_refused(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """RSET refused: the server's transaction state is unknown, so nothing more
    is attempted on this connection; the recipients are not at fault and
    are deferred whatever the class of the reply."""
    reason = f"RSET refused: {ev.reply}"
    return _abort(s, fx, out, ev.reply, reason, cancel=True, close=True)


def sender_accepted(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> None:
    if not s.pipelined:
        send(s, fx, make_command(_RCPT, s.batch[0], "", None))
    s.timeout = t = s.cfg.rcpt_to_timeout
    fx.append(make_set_timer(s.timer, at + t))


def sender_refused(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """MAIL refused: every recipient gets this reply.  The RCPT and DATA
    commands still follow, their replies consumed (RCPT_SENT): pipelined they
    are already written; one at a time KumoMTA writes them all the same
    (crates/rfc5321/src/client.rs, ``pipeline_commands``)."""
    _resolve_all(s, out, reply_status(ev.reply), ev.reply, mail_line(s))
    s.mail_failed = True
    if not s.pipelined:
        send(s, fx, make_command(_RCPT, s.batch[0], "", None))
    s.timeout = t = s.cfg.rcpt_to_timeout
    fx.append(make_set_timer(s.timer, at + t))
    return _RCPT_SENT


# -- RCPT --------------------------------------------------------------------------


def recipient_accepted(s: SessionData, at: float, ev: Any, fx: Fx, out: Out,
                       status: Status = DELIVERED) -> State:
    """One RCPT reply: record it, then ask for the next reply (sending the
    next command unless pipelined), or move on to DATA, which is sent even
    when nobody was accepted, as KumoMTA's ``pipeline_commands`` writes every
    command of the batch (a 354 then gets a lone dot, `data_accepted`).
    The handler of a 2xx (DELIVERED, the default `status`) and, as `_rcpt`
    with another `status`, of every other RCPT reply: no call in between on
    the commonest one."""
    i = s.replies
    rcpt = s.batch[i]
    s.replies = i + 1
    if not s.mail_failed:
        if status is DELIVERED:
            s.accepted.append(rcpt)
        else:  # the reply read only here: `ev` is Any, read by name when compiled
            msg_id = s.message.id  # type: ignore[union-attr]
            out.append(make_recipient_result(msg_id, rcpt, status, ev.reply,
                                             f"RCPT TO:<{rcpt}>"))
    if i + 1 < len(s.batch):
        if not s.pipelined:
            send(s, fx, make_command(_RCPT, s.batch[i + 1], "", None))
        s.timeout = t = s.cfg.rcpt_to_timeout
        fx.append(make_set_timer(s.timer, at + t))
        return _RCPT_SENT
    if not s.pipelined:
        send(s, fx, _DATA)
    s.timeout = t = s.cfg.data_timeout
    fx.append(make_set_timer(s.timer, at + t))
    return _DATA_SENT


_rcpt = recipient_accepted  # one RCPT reply, whatever its status


def recipient_deferred(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """4xx, or a 3xx where none is expected."""
    return _rcpt(s, at, ev, fx, out, TRANSIENT)


def recipient_rejected(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """5xx: permanent, except 503 (bad sequence) which is transient."""
    return _rcpt(s, at, ev, fx, out, reply_status(ev.reply))


# -- DATA and the body ---------------------------------------------------------


def data_accepted(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    """354: send the content and the final dot (BODY, argument the message id).

    With pipelining the server may answer DATA with 354 although MAIL or
    every RCPT was refused: as KumoMTA (crates/rfc5321/src/client.rs,
    ``send_mail_multi_recip``, after RFC 2920 3.1) a lone dot is sent and its
    reply awaited; every recipient already has its result, so that reply
    only ends the transaction, and the connection carries on."""
    if s.accepted:
        m: TxnMessage = s.message  # type: ignore[assignment]  # typed: read natively, compiled
        cmd = make_command(_BODY, m.id, "", None)
    else:
        cmd = _DOT
    fx.append(make_send(s.conn, (cmd,)))
    s.timeout = t = s.cfg.data_dot_timeout
    fx.append(make_set_timer(s.timer, at + t))
    return _BODY_SENT


def data_refused(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """DATA not answered with 354: the accepted recipients get this reply (a
    2xx here is unexpected, so transient)."""
    reply = ev.reply
    status = TRANSIENT if reply.code < 300 else reply_status(reply)
    _resolve_all(s, out, status, reply, "DATA")
    return _finish(s, fx, out)


def message_accepted(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """The final dot accepted: `_resolve_all` and `_finish` spelled out (once
    per delivered message)."""
    reply: Reply = ev.reply  # typed, as the message: their fields read natively, compiled
    accepted = s.accepted
    if accepted and reply.code == 250:  # KumoMTA's success: RSET next only if enabled
        s.use_rset = s.cfg.enable_rset
    m: TxnMessage = s.message  # type: ignore[assignment]
    msg_id = m.id
    if not s.mail_failed:
        for rcpt in accepted:
            out.append(make_recipient_result(msg_id, rcpt, DELIVERED, reply, "."))
        if s.replies < len(s.batch):
            for rcpt in s.batch[s.replies :]:
                out.append(make_recipient_result(msg_id, rcpt, DELIVERED, reply, "."))
    fx.append(s.cancel_timer)
    out.append(make_transaction_done(msg_id))
    out.append(READY)
    s.message = None
    return _IDLE


def message_refused(s: SessionData, at: float, ev: Any, fx: Fx, out: Out) -> State:
    """4xx/5xx (or an unexpected 3xx) to the final dot."""
    _resolve_all(s, out, reply_status(ev.reply), ev.reply, ".")
    return _finish(s, fx, out)


# -- QUIT ------------------------------------------------------------------------


def quit_acknowledged(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    return end_session(s, fx, out, "QUIT", cancel=True, close=True)


def quit_timed_out(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    reason = f"no reply to QUIT within {s.timeout:g}s"
    return end_session(s, fx, out, reason, cancel=False, close=True)


def quit_closed(s: SessionData, at: float, _: Any, fx: Fx, out: Out) -> State:
    return end_session(s, fx, out, "QUIT (closed by peer)", cancel=True, close=False)
