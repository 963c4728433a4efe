"""The SMTP client session machine: its states, inputs and the transition
table.  Anything that changes what may follow what lives here.

Read top to bottom: the states, the input kinds the table is keyed by, the
names of the handlers (one per thing that happened), then the table itself.
What a session reports to the engine (its outcomes) is in
`engine.session_outcomes`, re-exported here.  The handlers live in
`engine.session_setup` (until IDLE) and `engine.session_txn` (from IDLE
on); they import this module, never the reverse, so the table names them
by `Happened` and `engine.session` binds each name to its function.

``TRANSITIONS[state][input] = (happened, next_states)``, rows grouped under
a comment per state.  `next_states` lists where the row may lead, the first
being the usual one; a handler returns None to take it, or picks another
from the list for the decisions a table cannot show (TLS mode, AUTH rules,
how many replies a pipelined batch still owes), and `Session` checks the
pick is listed.  Every state has an entry, `CLOSED` an empty one, so the
table is total: a (state, input) with no row is a driver bug and `Session`
raises `ProtocolError` before anything changes.  A misbehaving *server* is
data, not a bug: every reply class has a row in every state that waits
for a reply.
"""

from __future__ import annotations

import enum

from engine.session_outcomes import (
    DELIVERED,
    PERMANENT,
    TRANSIENT,
    HostFailed,
    Outcome,
    RecipientResult,
    ReconnectInClear,
    SessionClosed,
    SessionReady,
    Status,
    Step,
    TlsBroken,
    TransactionDone,
    TxnMessage,
)

__all__ = [
    "DELIVERED",
    "PERMANENT",
    "TRANSIENT",
    "TRANSITIONS",
    "Happened",
    "HostFailed",
    "Input",
    "Outcome",
    "RecipientResult",
    "ReconnectInClear",
    "Row",
    "SessionClosed",
    "SessionReady",
    "State",
    "Status",
    "Step",
    "TlsBroken",
    "TransactionDone",
    "TxnMessage",
]

# -- states ------------------------------------------------------------------------


class State(enum.Enum):
    """Where one SMTP client connection stands.  `*_SENT` states wait for the
    reply to that command (with PIPELINING, for the reply to the earliest
    command of the batch still unanswered)."""

    AWAIT_CONNECT = enum.auto()  # Connect emitted, waiting for Connected
    AWAIT_BANNER = enum.auto()  # connected, waiting for the 220
    EHLO_SENT = enum.auto()
    STARTTLS_SENT = enum.auto()
    TLS_HANDSHAKE = enum.auto()  # StartTls emitted, waiting for TlsEstablished/TlsFailed
    # EHLO again after STARTTLS: inside TLS, or in clear on the same socket after
    # a failed OpportunisticInsecure handshake (KumoMTA re-EHLOs either way)
    EHLO2_SENT = enum.auto()
    AUTH_SENT = enum.auto()
    IDLE = enum.auto()  # ready for a transaction (or QUIT)
    RSET_SENT = enum.auto()
    MAIL_SENT = enum.auto()
    RCPT_SENT = enum.auto()
    DATA_SENT = enum.auto()
    BODY_SENT = enum.auto()  # content and final dot sent, waiting for its reply
    QUIT_SENT = enum.auto()
    CLOSED = enum.auto()  # terminal

    # Hashed by identity (members are singletons and compare by identity): the
    # table is looked up once per event, and Enum's own __hash__ is Python code.
    __hash__ = object.__hash__


# -- inputs ------------------------------------------------------------------------


class Input(enum.Enum):
    """The kinds of input the table is keyed by: each event type, a reply by
    its class (421 on its own, since it ends the connection whatever was
    asked), and the three calls the engine makes."""

    CONNECT = enum.auto()  # Session.connect()
    START = enum.auto()  # Session.start_transaction()
    QUIT = enum.auto()  # Session.quit()
    CONNECTED = enum.auto()
    CONNECT_FAILED = enum.auto()
    TLS_OK = enum.auto()
    TLS_FAILED = enum.auto()
    R2XX = enum.auto()
    R3XX = enum.auto()
    R4XX = enum.auto()
    R421 = enum.auto()
    R5XX = enum.auto()
    TIMEOUT = enum.auto()  # TimerFired(("conn", conn))
    CLOSED = enum.auto()
    MALFORMED = enum.auto()

    __hash__ = object.__hash__  # as State's


# -- what happened: the handlers the table names --------------------------------------


class Happened(enum.Enum):
    """One handler per thing that happened; the value is the handler's name in
    `engine.session_setup` or `engine.session_txn`."""

    # connecting and the greeting (session_setup)
    CONNECT_STARTED = "connect_started"
    CONNECTION_OPENED = "connection_opened"
    CONNECTION_REFUSED = "connection_refused"
    CONNECT_TIMED_OUT = "connect_timed_out"
    BANNER_ACCEPTED = "banner_accepted"
    HOST_REFUSED = "host_refused"
    GREETING_TIMED_OUT = "greeting_timed_out"
    GREETING_CLOSED = "greeting_closed"
    GREETING_MALFORMED = "greeting_malformed"
    EHLO_ACCEPTED = "ehlo_accepted"
    STARTTLS_ACCEPTED = "starttls_accepted"
    TLS_ESTABLISHED = "tls_established"
    TLS_FAILED = "tls_failed"
    HANDSHAKE_TIMED_OUT = "handshake_timed_out"
    EHLO_AFTER_STARTTLS_FAILED = "ehlo_after_starttls_failed"
    AUTH_ACCEPTED = "auth_accepted"
    # idle, transactions and QUIT (session_txn)
    TRANSACTION_STARTED = "transaction_started"
    QUIT_SENT = "quit_sent"
    IDLE_CLOSED = "idle_closed"
    UNSOLICITED_REPLY = "unsolicited_reply"
    RESET_DONE = "reset_done"
    RESET_REFUSED = "reset_refused"
    SENDER_ACCEPTED = "sender_accepted"
    SENDER_REFUSED = "sender_refused"
    RECIPIENT_ACCEPTED = "recipient_accepted"
    RECIPIENT_DEFERRED = "recipient_deferred"
    RECIPIENT_REJECTED = "recipient_rejected"
    DATA_ACCEPTED = "data_accepted"
    DATA_REFUSED = "data_refused"
    MESSAGE_ACCEPTED = "message_accepted"
    MESSAGE_REFUSED = "message_refused"
    SERVER_CLOSING = "server_closing"
    COMMAND_TIMED_OUT = "command_timed_out"
    CONNECTION_LOST = "connection_lost"
    REPLY_MALFORMED = "reply_malformed"
    QUIT_ACKNOWLEDGED = "quit_acknowledged"
    QUIT_TIMED_OUT = "quit_timed_out"
    QUIT_CLOSED = "quit_closed"


# -- the transition table ------------------------------------------------------------

S, I, H = State, Input, Happened  # noqa: E741 (short names: the table reads better)
Row = tuple[Happened, tuple[State, ...]]

_HELLO_NEXT = (S.IDLE, S.STARTTLS_SENT, S.AUTH_SENT, S.CLOSED)
_AFTER_TLS_NEXT = (S.IDLE, S.AUTH_SENT, S.CLOSED)
_RCPT_NEXT = (S.RCPT_SENT, S.DATA_SENT)
_GONE = (S.CLOSED,)

TRANSITIONS: dict[State, dict[Input, Row]] = {
    # AWAIT_CONNECT: the engine emitted Connect; connect() arms connect_timeout
    S.AWAIT_CONNECT: {
        I.CONNECT: (H.CONNECT_STARTED, (S.AWAIT_CONNECT,)),
        I.CONNECTED: (H.CONNECTION_OPENED, (S.AWAIT_BANNER,)),
        I.CONNECT_FAILED: (H.CONNECTION_REFUSED, _GONE),
        I.CLOSED: (H.CONNECTION_REFUSED, _GONE),
        I.TIMEOUT: (H.CONNECT_TIMED_OUT, _GONE),
    },
    # AWAIT_BANNER: connected, banner_timeout armed
    S.AWAIT_BANNER: {
        I.R2XX: (H.BANNER_ACCEPTED, (S.EHLO_SENT,)),
        I.R3XX: (H.HOST_REFUSED, _GONE),
        I.R4XX: (H.HOST_REFUSED, _GONE),
        I.R421: (H.HOST_REFUSED, _GONE),
        I.R5XX: (H.HOST_REFUSED, _GONE),
        I.TIMEOUT: (H.GREETING_TIMED_OUT, _GONE),
        I.CLOSED: (H.GREETING_CLOSED, _GONE),
        I.MALFORMED: (H.GREETING_MALFORMED, _GONE),
    },
    # EHLO_SENT: ehlo_timeout armed
    S.EHLO_SENT: {
        I.R2XX: (H.EHLO_ACCEPTED, _HELLO_NEXT),
        I.R3XX: (H.HOST_REFUSED, _GONE),
        I.R4XX: (H.HOST_REFUSED, _GONE),
        I.R421: (H.HOST_REFUSED, _GONE),
        I.R5XX: (H.HOST_REFUSED, _GONE),  # no HELO fallback, as KumoMTA
        I.TIMEOUT: (H.GREETING_TIMED_OUT, _GONE),
        I.CLOSED: (H.GREETING_CLOSED, _GONE),
        I.MALFORMED: (H.GREETING_MALFORMED, _GONE),
    },
    # STARTTLS_SENT: starttls_timeout armed.  Anything but 220 fails the host in
    # every mode (KumoMTA: ClientError::Rejected, crates/rfc5321/src/client.rs)
    S.STARTTLS_SENT: {
        I.R2XX: (H.STARTTLS_ACCEPTED, (S.TLS_HANDSHAKE, S.CLOSED)),  # a 2xx not 220 fails
        I.R3XX: (H.HOST_REFUSED, _GONE),
        I.R4XX: (H.HOST_REFUSED, _GONE),
        I.R5XX: (H.HOST_REFUSED, _GONE),
        I.R421: (H.HOST_REFUSED, _GONE),
        I.TIMEOUT: (H.GREETING_TIMED_OUT, _GONE),
        I.CLOSED: (H.GREETING_CLOSED, _GONE),
        I.MALFORMED: (H.GREETING_MALFORMED, _GONE),
    },
    # TLS_HANDSHAKE: StartTls emitted, a fresh starttls_timeout armed; no SMTP
    # replies are read meanwhile.  A failure goes on in clear (EHLO2_SENT) only
    # in OpportunisticInsecure without opportunistic_tls_reconnect_on_failed_handshake
    S.TLS_HANDSHAKE: {
        I.TLS_OK: (H.TLS_ESTABLISHED, (S.EHLO2_SENT,)),
        I.TLS_FAILED: (H.TLS_FAILED, (S.CLOSED, S.EHLO2_SENT)),
        I.CLOSED: (H.TLS_FAILED, _GONE),
        I.TIMEOUT: (H.HANDSHAKE_TIMED_OUT, _GONE),
    },
    # EHLO2_SENT: EHLO again after STARTTLS, ehlo_timeout armed; a failure here
    # counts as broken TLS (and may reconnect in clear), as KumoMTA's
    S.EHLO2_SENT: {
        I.R2XX: (H.EHLO_ACCEPTED, _AFTER_TLS_NEXT),
        I.R3XX: (H.EHLO_AFTER_STARTTLS_FAILED, _GONE),
        I.R4XX: (H.EHLO_AFTER_STARTTLS_FAILED, _GONE),
        I.R421: (H.EHLO_AFTER_STARTTLS_FAILED, _GONE),
        I.R5XX: (H.EHLO_AFTER_STARTTLS_FAILED, _GONE),  # no HELO fallback, as KumoMTA
        I.TIMEOUT: (H.EHLO_AFTER_STARTTLS_FAILED, _GONE),
        I.CLOSED: (H.EHLO_AFTER_STARTTLS_FAILED, _GONE),
        I.MALFORMED: (H.EHLO_AFTER_STARTTLS_FAILED, _GONE),
    },
    # AUTH_SENT: AUTH PLAIN with its initial response, auth_timeout armed
    S.AUTH_SENT: {
        I.R2XX: (H.AUTH_ACCEPTED, (S.IDLE,)),
        I.R3XX: (H.HOST_REFUSED, _GONE),  # 334: we sent the initial response
        I.R4XX: (H.HOST_REFUSED, _GONE),
        I.R421: (H.HOST_REFUSED, _GONE),
        I.R5XX: (H.HOST_REFUSED, _GONE),
        I.TIMEOUT: (H.GREETING_TIMED_OUT, _GONE),
        I.CLOSED: (H.GREETING_CLOSED, _GONE),
        I.MALFORMED: (H.GREETING_MALFORMED, _GONE),
    },
    # IDLE: no command timer; the engine owns the idle timer
    S.IDLE: {
        I.START: (H.TRANSACTION_STARTED, (S.MAIL_SENT, S.RSET_SENT, S.IDLE)),
        I.QUIT: (H.QUIT_SENT, (S.QUIT_SENT,)),
        I.R2XX: (H.UNSOLICITED_REPLY, _GONE),
        I.R3XX: (H.UNSOLICITED_REPLY, _GONE),
        I.R4XX: (H.UNSOLICITED_REPLY, _GONE),
        I.R421: (H.UNSOLICITED_REPLY, _GONE),
        I.R5XX: (H.UNSOLICITED_REPLY, _GONE),
        I.CLOSED: (H.IDLE_CLOSED, _GONE),
        I.MALFORMED: (H.UNSOLICITED_REPLY, _GONE),
    },
    # RSET_SENT: before the connection's second and later transactions
    S.RSET_SENT: {
        I.R2XX: (H.RESET_DONE, (S.MAIL_SENT,)),
        I.R3XX: (H.RESET_REFUSED, _GONE),
        I.R4XX: (H.RESET_REFUSED, _GONE),
        I.R5XX: (H.RESET_REFUSED, _GONE),
        I.R421: (H.SERVER_CLOSING, _GONE),
        I.TIMEOUT: (H.COMMAND_TIMED_OUT, _GONE),
        I.CLOSED: (H.CONNECTION_LOST, _GONE),
        I.MALFORMED: (H.REPLY_MALFORMED, _GONE),
    },
    # MAIL_SENT: mail_from_timeout armed
    S.MAIL_SENT: {
        I.R2XX: (H.SENDER_ACCEPTED, (S.RCPT_SENT,)),
        I.R3XX: (H.SENDER_REFUSED, (S.RCPT_SENT,)),
        I.R4XX: (H.SENDER_REFUSED, (S.RCPT_SENT,)),
        I.R5XX: (H.SENDER_REFUSED, (S.RCPT_SENT,)),
        I.R421: (H.SERVER_CLOSING, _GONE),
        I.TIMEOUT: (H.COMMAND_TIMED_OUT, _GONE),
        I.CLOSED: (H.CONNECTION_LOST, _GONE),
        I.MALFORMED: (H.REPLY_MALFORMED, _GONE),
    },
    # RCPT_SENT: one reply per recipient of the batch, rcpt_to_timeout armed
    S.RCPT_SENT: {
        I.R2XX: (H.RECIPIENT_ACCEPTED, _RCPT_NEXT),
        I.R3XX: (H.RECIPIENT_DEFERRED, _RCPT_NEXT),
        I.R4XX: (H.RECIPIENT_DEFERRED, _RCPT_NEXT),
        I.R5XX: (H.RECIPIENT_REJECTED, _RCPT_NEXT),
        I.R421: (H.SERVER_CLOSING, _GONE),
        I.TIMEOUT: (H.COMMAND_TIMED_OUT, _GONE),
        I.CLOSED: (H.CONNECTION_LOST, _GONE),
        I.MALFORMED: (H.REPLY_MALFORMED, _GONE),
    },
    # DATA_SENT: data_timeout armed
    S.DATA_SENT: {
        I.R3XX: (H.DATA_ACCEPTED, (S.BODY_SENT,)),
        I.R2XX: (H.DATA_REFUSED, (S.IDLE,)),
        I.R4XX: (H.DATA_REFUSED, (S.IDLE,)),
        I.R5XX: (H.DATA_REFUSED, (S.IDLE,)),
        I.R421: (H.SERVER_CLOSING, _GONE),
        I.TIMEOUT: (H.COMMAND_TIMED_OUT, _GONE),
        I.CLOSED: (H.CONNECTION_LOST, _GONE),
        I.MALFORMED: (H.REPLY_MALFORMED, _GONE),
    },
    # BODY_SENT: content and final dot sent, data_dot_timeout armed
    S.BODY_SENT: {
        I.R2XX: (H.MESSAGE_ACCEPTED, (S.IDLE,)),
        I.R3XX: (H.MESSAGE_REFUSED, (S.IDLE,)),
        I.R4XX: (H.MESSAGE_REFUSED, (S.IDLE,)),
        I.R5XX: (H.MESSAGE_REFUSED, (S.IDLE,)),
        I.R421: (H.SERVER_CLOSING, _GONE),
        I.TIMEOUT: (H.COMMAND_TIMED_OUT, _GONE),
        I.CLOSED: (H.CONNECTION_LOST, _GONE),
        I.MALFORMED: (H.REPLY_MALFORMED, _GONE),
    },
    # QUIT_SENT: any answer, or none within idle_timeout, ends the connection
    S.QUIT_SENT: {
        I.R2XX: (H.QUIT_ACKNOWLEDGED, _GONE),
        I.R3XX: (H.QUIT_ACKNOWLEDGED, _GONE),
        I.R4XX: (H.QUIT_ACKNOWLEDGED, _GONE),
        I.R421: (H.QUIT_ACKNOWLEDGED, _GONE),
        I.R5XX: (H.QUIT_ACKNOWLEDGED, _GONE),
        I.MALFORMED: (H.QUIT_ACKNOWLEDGED, _GONE),
        I.TIMEOUT: (H.QUIT_TIMED_OUT, _GONE),
        I.CLOSED: (H.QUIT_CLOSED, _GONE),
    },
    # CLOSED: terminal
    S.CLOSED: {},
}
del S, I, H
