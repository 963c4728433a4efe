"""The SMTP client session's transition table: anything that changes what may
follow what lives here.

``TRANSITIONS[(state, input)] = (handler, next_states)``, rows grouped under
a comment per state, in the style of h2's stream machine.  The handler is
named for what happened and emits the effects and outcomes; `next_states`
lists where the row may lead, the first being the usual one.  A handler
returns None to take the first, or picks another from the list (for the
decisions a table cannot show: TLS mode, AUTH rules, how many replies a
pipelined batch still owes), and `Session` checks the pick is listed.

A (state, input) pair with no row is a driver bug: `Session` raises
`ProtocolError` before anything changes.  A misbehaving *server* is data,
not a bug: every reply class has a row in every state that waits for a
reply.  `CLOSED` is terminal and has no rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import session_handlers as h
from engine import session_txn as t
from engine.session_model import Input as I  # short names: the table reads better
from engine.session_model import State as S

__all__ = ["TRANSITIONS", "Row"]

Handler = Callable[..., Any]
Row = tuple[Handler, tuple[S, ...]]

_HELLO_NEXT = (S.IDLE, S.STARTTLS_SENT, S.AUTH_SENT, S.CLOSED)
_AFTER_TLS_NEXT = (S.IDLE, S.AUTH_SENT, S.CLOSED)
_RCPT_NEXT = (S.RCPT_SENT, S.DATA_SENT, S.IDLE)
_GONE = (S.CLOSED,)

TRANSITIONS: dict[tuple[S, I], Row] = {
    # AWAIT_CONNECT: the engine emitted Connect; connect() arms connect_timeout
    (S.AWAIT_CONNECT, I.CONNECT): (h.connect_started, (S.AWAIT_CONNECT,)),
    (S.AWAIT_CONNECT, I.CONNECTED): (h.connection_opened, (S.AWAIT_BANNER,)),
    (S.AWAIT_CONNECT, I.CONNECT_FAILED): (h.connection_refused, _GONE),
    (S.AWAIT_CONNECT, I.CLOSED): (h.connection_refused, _GONE),
    (S.AWAIT_CONNECT, I.TIMEOUT): (h.connect_timed_out, _GONE),
    # AWAIT_BANNER: connected, banner_timeout armed
    (S.AWAIT_BANNER, I.R2XX): (h.banner_accepted, (S.EHLO_SENT,)),
    (S.AWAIT_BANNER, I.R3XX): (h.host_refused, _GONE),
    (S.AWAIT_BANNER, I.R4XX): (h.host_refused, _GONE),
    (S.AWAIT_BANNER, I.R421): (h.host_refused, _GONE),
    (S.AWAIT_BANNER, I.R5XX): (h.host_refused, _GONE),
    (S.AWAIT_BANNER, I.TIMEOUT): (h.greeting_timed_out, _GONE),
    (S.AWAIT_BANNER, I.CLOSED): (h.greeting_closed, _GONE),
    (S.AWAIT_BANNER, I.MALFORMED): (h.greeting_malformed, _GONE),
    # EHLO_SENT: ehlo_timeout armed
    (S.EHLO_SENT, I.R2XX): (h.ehlo_accepted, _HELLO_NEXT),
    (S.EHLO_SENT, I.R3XX): (h.host_refused, _GONE),
    (S.EHLO_SENT, I.R4XX): (h.host_refused, _GONE),
    (S.EHLO_SENT, I.R421): (h.host_refused, _GONE),
    (S.EHLO_SENT, I.R5XX): (h.ehlo_refused, (S.HELO_SENT,)),
    (S.EHLO_SENT, I.TIMEOUT): (h.greeting_timed_out, _GONE),
    (S.EHLO_SENT, I.CLOSED): (h.greeting_closed, _GONE),
    (S.EHLO_SENT, I.MALFORMED): (h.greeting_malformed, _GONE),
    # HELO_SENT: EHLO got 5xx; HELO offers no extensions (so no STARTTLS, no AUTH)
    (S.HELO_SENT, I.R2XX): (h.helo_accepted, (S.IDLE, S.CLOSED)),
    (S.HELO_SENT, I.R3XX): (h.host_refused, _GONE),
    (S.HELO_SENT, I.R4XX): (h.host_refused, _GONE),
    (S.HELO_SENT, I.R421): (h.host_refused, _GONE),
    (S.HELO_SENT, I.R5XX): (h.host_refused, _GONE),
    (S.HELO_SENT, I.TIMEOUT): (h.greeting_timed_out, _GONE),
    (S.HELO_SENT, I.CLOSED): (h.greeting_closed, _GONE),
    (S.HELO_SENT, I.MALFORMED): (h.greeting_malformed, _GONE),
    # STARTTLS_SENT: starttls_timeout armed (it also covers the handshake)
    (S.STARTTLS_SENT, I.R2XX): (h.starttls_accepted, (S.TLS_HANDSHAKE,)),
    (S.STARTTLS_SENT, I.R3XX): (h.starttls_refused, (S.AUTH_SENT, S.IDLE, S.CLOSED)),
    (S.STARTTLS_SENT, I.R4XX): (h.starttls_refused, (S.AUTH_SENT, S.IDLE, S.CLOSED)),
    (S.STARTTLS_SENT, I.R5XX): (h.starttls_refused, (S.AUTH_SENT, S.IDLE, S.CLOSED)),
    (S.STARTTLS_SENT, I.R421): (h.host_refused, _GONE),
    (S.STARTTLS_SENT, I.TIMEOUT): (h.greeting_timed_out, _GONE),
    (S.STARTTLS_SENT, I.CLOSED): (h.greeting_closed, _GONE),
    (S.STARTTLS_SENT, I.MALFORMED): (h.greeting_malformed, _GONE),
    # TLS_HANDSHAKE: StartTls emitted; no SMTP replies are read meanwhile
    (S.TLS_HANDSHAKE, I.TLS_OK): (h.tls_established, (S.EHLO2_SENT,)),
    (S.TLS_HANDSHAKE, I.TLS_FAILED): (h.tls_failed, _GONE),
    (S.TLS_HANDSHAKE, I.CLOSED): (h.tls_failed, _GONE),
    (S.TLS_HANDSHAKE, I.TIMEOUT): (h.tls_failed, _GONE),
    # EHLO2_SENT: EHLO again inside TLS, ehlo_timeout armed
    (S.EHLO2_SENT, I.R2XX): (h.ehlo_accepted, _AFTER_TLS_NEXT),
    (S.EHLO2_SENT, I.R3XX): (h.host_refused, _GONE),
    (S.EHLO2_SENT, I.R4XX): (h.host_refused, _GONE),
    (S.EHLO2_SENT, I.R421): (h.host_refused, _GONE),
    (S.EHLO2_SENT, I.R5XX): (h.ehlo_refused, (S.HELO_SENT,)),
    (S.EHLO2_SENT, I.TIMEOUT): (h.greeting_timed_out, _GONE),
    (S.EHLO2_SENT, I.CLOSED): (h.greeting_closed, _GONE),
    (S.EHLO2_SENT, I.MALFORMED): (h.greeting_malformed, _GONE),
    # AUTH_SENT: AUTH PLAIN with its initial response, auth_timeout armed
    (S.AUTH_SENT, I.R2XX): (h.auth_accepted, (S.IDLE,)),
    (S.AUTH_SENT, I.R3XX): (h.host_refused, _GONE),  # 334: we sent the initial response
    (S.AUTH_SENT, I.R4XX): (h.host_refused, _GONE),
    (S.AUTH_SENT, I.R421): (h.host_refused, _GONE),
    (S.AUTH_SENT, I.R5XX): (h.host_refused, _GONE),
    (S.AUTH_SENT, I.TIMEOUT): (h.greeting_timed_out, _GONE),
    (S.AUTH_SENT, I.CLOSED): (h.greeting_closed, _GONE),
    (S.AUTH_SENT, I.MALFORMED): (h.greeting_malformed, _GONE),
    # IDLE: no command timer; the engine owns the idle timer
    (S.IDLE, I.START): (h.transaction_started, (S.MAIL_SENT, S.RSET_SENT)),
    (S.IDLE, I.QUIT): (h.quit_sent, (S.QUIT_SENT,)),
    (S.IDLE, I.R2XX): (h.unsolicited_reply, _GONE),
    (S.IDLE, I.R3XX): (h.unsolicited_reply, _GONE),
    (S.IDLE, I.R4XX): (h.unsolicited_reply, _GONE),
    (S.IDLE, I.R421): (h.unsolicited_reply, _GONE),
    (S.IDLE, I.R5XX): (h.unsolicited_reply, _GONE),
    (S.IDLE, I.CLOSED): (h.idle_closed, _GONE),
    (S.IDLE, I.MALFORMED): (h.unsolicited_reply, _GONE),
    # RSET_SENT: before the connection's second and later transactions
    (S.RSET_SENT, I.R2XX): (t.reset_done, (S.MAIL_SENT,)),
    (S.RSET_SENT, I.R3XX): (t.reset_refused, _GONE),
    (S.RSET_SENT, I.R4XX): (t.reset_refused, _GONE),
    (S.RSET_SENT, I.R5XX): (t.reset_refused, _GONE),
    (S.RSET_SENT, I.R421): (t.server_closing, _GONE),
    (S.RSET_SENT, I.TIMEOUT): (t.command_timed_out, _GONE),
    (S.RSET_SENT, I.CLOSED): (t.connection_lost, _GONE),
    (S.RSET_SENT, I.MALFORMED): (t.reply_malformed, _GONE),
    # MAIL_SENT: mail_from_timeout armed
    (S.MAIL_SENT, I.R2XX): (t.sender_accepted, (S.RCPT_SENT,)),
    (S.MAIL_SENT, I.R3XX): (t.sender_refused, (S.IDLE, S.RCPT_SENT)),
    (S.MAIL_SENT, I.R4XX): (t.sender_refused, (S.IDLE, S.RCPT_SENT)),
    (S.MAIL_SENT, I.R5XX): (t.sender_refused, (S.IDLE, S.RCPT_SENT)),
    (S.MAIL_SENT, I.R421): (t.server_closing, _GONE),
    (S.MAIL_SENT, I.TIMEOUT): (t.command_timed_out, _GONE),
    (S.MAIL_SENT, I.CLOSED): (t.connection_lost, _GONE),
    (S.MAIL_SENT, I.MALFORMED): (t.reply_malformed, _GONE),
    # RCPT_SENT: one reply per recipient of the batch, rcpt_to_timeout armed
    (S.RCPT_SENT, I.R2XX): (t.recipient_accepted, _RCPT_NEXT),
    (S.RCPT_SENT, I.R3XX): (t.recipient_deferred, _RCPT_NEXT),
    (S.RCPT_SENT, I.R4XX): (t.recipient_deferred, _RCPT_NEXT),
    (S.RCPT_SENT, I.R5XX): (t.recipient_rejected, _RCPT_NEXT),
    (S.RCPT_SENT, I.R421): (t.server_closing, _GONE),
    (S.RCPT_SENT, I.TIMEOUT): (t.command_timed_out, _GONE),
    (S.RCPT_SENT, I.CLOSED): (t.connection_lost, _GONE),
    (S.RCPT_SENT, I.MALFORMED): (t.reply_malformed, _GONE),
    # DATA_SENT: data_timeout armed
    (S.DATA_SENT, I.R3XX): (t.data_accepted, (S.BODY_SENT, S.CLOSED)),
    (S.DATA_SENT, I.R2XX): (t.data_refused, (S.IDLE,)),
    (S.DATA_SENT, I.R4XX): (t.data_refused, (S.IDLE,)),
    (S.DATA_SENT, I.R5XX): (t.data_refused, (S.IDLE,)),
    (S.DATA_SENT, I.R421): (t.server_closing, _GONE),
    (S.DATA_SENT, I.TIMEOUT): (t.command_timed_out, _GONE),
    (S.DATA_SENT, I.CLOSED): (t.connection_lost, _GONE),
    (S.DATA_SENT, I.MALFORMED): (t.reply_malformed, _GONE),
    # BODY_SENT: content and final dot sent, data_dot_timeout armed
    (S.BODY_SENT, I.R2XX): (t.message_accepted, (S.IDLE,)),
    (S.BODY_SENT, I.R3XX): (t.message_refused, (S.IDLE,)),
    (S.BODY_SENT, I.R4XX): (t.message_refused, (S.IDLE,)),
    (S.BODY_SENT, I.R5XX): (t.message_refused, (S.IDLE,)),
    (S.BODY_SENT, I.R421): (t.server_closing, _GONE),
    (S.BODY_SENT, I.TIMEOUT): (t.command_timed_out, _GONE),
    (S.BODY_SENT, I.CLOSED): (t.connection_lost, _GONE),
    (S.BODY_SENT, I.MALFORMED): (t.reply_malformed, _GONE),
    # QUIT_SENT: any answer, or none within QUIT_TIMEOUT, ends the connection
    (S.QUIT_SENT, I.R2XX): (t.quit_acknowledged, _GONE),
    (S.QUIT_SENT, I.R3XX): (t.quit_acknowledged, _GONE),
    (S.QUIT_SENT, I.R4XX): (t.quit_acknowledged, _GONE),
    (S.QUIT_SENT, I.R421): (t.quit_acknowledged, _GONE),
    (S.QUIT_SENT, I.R5XX): (t.quit_acknowledged, _GONE),
    (S.QUIT_SENT, I.MALFORMED): (t.quit_acknowledged, _GONE),
    (S.QUIT_SENT, I.TIMEOUT): (t.quit_timed_out, _GONE),
    (S.QUIT_SENT, I.CLOSED): (t.quit_closed, _GONE),
    # CLOSED: terminal, no rows
}
