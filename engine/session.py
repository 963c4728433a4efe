"""The SMTP client session: one `Session` per TCP connection.

Sans-IO, like h11 and h2: the session is fed events (`Connected`,
`Response`, `TimerFired`...) and the engine's calls (`connect`,
`start_transaction`, `quit`), and answers with a `Step`: effects for the
driver (`Send`, `StartTls`, `SetTimer`, `Close`...) and outcomes for the
engine (`RecipientResult`, `HostFailed`, `SessionReady`...).  The engine
decides what follows; the session only speaks SMTP.

What may follow what is the table in `engine.session_model`; the handlers
it names are in `engine.session_setup` and `engine.session_txn`; the
connection's fields in `engine.session_data`.  This module binds the
table's names to the handlers, turns an input into its kind, looks the row
up and commits the next state; it re-exports the public names of the
others, so the engine imports the session from here.

Illegal input (a pair with no row) raises `ProtocolError` of one fixed
shape, ``"session 17 cannot handle Response(354) in state MAIL_SENT"``,
before anything has changed: the lookup happens first and handlers never
raise, so a rejected input leaves the session exactly as it was.

Per-event cost matters (the simulator runs about ten per message): one
type check for the kind, one list index or dict lookup for the row, and no
allocation beyond the effects and outcomes themselves.

Command timeouts use one timer per connection, ``("conn", conn)``, armed
(re-armed) when a command is sent or, in a pipelined batch, as each reply
arrives with the timeout of the command answered next; cancelled on
reaching IDLE or on closing.  A timeout before IDLE makes the host
unusable (`HostFailed`); inside a transaction it defers the in-flight
recipients with ``421 4.4.2 ... timed out``.
"""

from __future__ import annotations

from typing import Any, Final

from engine import session_setup, session_txn
from engine.errors import ProtocolError
from engine.events import (
    Closed,
    Connected,
    ConnectFailed,
    ConnEvent,
    Malformed,
    Response,
    TimerFired,
    TlsEstablished,
    TlsFailed,
)
from engine.session_data import Handler, SessionData, reply_status
from engine.session_model import (
    DELIVERED,
    PERMANENT,
    TRANSIENT,
    TRANSITIONS,
    Happened,
    HostFailed,
    Input,
    Outcome,
    RecipientResult,
    ReconnectInClear,
    SessionClosed,
    SessionReady,
    State,
    Status,
    Step,
    TransactionDone,
    TxnMessage,
)
from engine.session_setup import parse_ehlo

__all__ = [
    "DELIVERED",
    "HANDLERS",
    "PERMANENT",
    "TRANSIENT",
    "TRANSITIONS",
    "Happened",
    "HostFailed",
    "Input",
    "Outcome",
    "RecipientResult",
    "ReconnectInClear",
    "Session",
    "SessionClosed",
    "SessionReady",
    "State",
    "Status",
    "Step",
    "TransactionDone",
    "TxnMessage",
    "parse_ehlo",
    "reply_status",
]


def _bind(happened: Happened) -> Handler:
    """The handler a table row names: the function called `happened.value` in
    exactly one of the two handler modules."""
    found = [getattr(m, happened.value) for m in (session_setup, session_txn)
             if happened.value in m.__all__]
    if len(found) != 1:
        raise ImportError(f"{happened}: {len(found)} handlers named {happened.value!r}")
    return found[0]  # type: ignore[no-any-return]


HANDLERS: dict[Happened, Handler] = {happened: _bind(happened) for happened in Happened}
"""Each name the table uses, bound to its function."""

_FastRow = tuple[Handler, tuple[State, ...]]
_EVENT_KINDS: Final[dict[type, Input]] = {
    Connected: Input.CONNECTED,
    ConnectFailed: Input.CONNECT_FAILED,
    TlsEstablished: Input.TLS_OK,
    TlsFailed: Input.TLS_FAILED,
    Malformed: Input.MALFORMED,
    Closed: Input.CLOSED,
}
_REPLY_KINDS: Final = {2: Input.R2XX, 3: Input.R3XX, 4: Input.R4XX, 5: Input.R5XX}


def _reply_kind(code: int) -> Input | None:
    """The input kind of a reply code: its class, 421 on its own."""
    return Input.R421 if code == 421 else _REPLY_KINDS.get(code // 100)


# The table with its handlers bound, reshaped for the one lookup made per
# input (TRANSITIONS stays the one place rows are written): per state, the
# rows by input kind, and for replies a list indexed by the reply code
# itself, so a Response costs one list index instead of classifying the code
# (`engine.engine` reads it too, for the Response it handles without a call here).
_ROWS: Final[dict[State, dict[Input, _FastRow]]] = {
    state: {kind: (HANDLERS[happened], targets) for kind, (happened, targets) in rows.items()}
    for state, rows in TRANSITIONS.items()
}
REPLY_ROWS: Final[dict[State, list[_FastRow | None]]] = {
    state: [None if (k := _reply_kind(code)) is None else rows.get(k) for code in range(600)]
    for state, rows in _ROWS.items()
}


# `Session.start_transaction` calls this row's handler without the lookup;
# every state it returns is one of the row's targets.
_IDLE: Final = State.IDLE  # Final: a C static in the compiled build (setup.py)
_START: Final = _ROWS[State.IDLE][Input.START]
if _START[0] is not session_txn.transaction_started \
        or set(_START[1]) != {State.MAIL_SENT, State.RSET_SENT, State.IDLE}:
    raise ImportError(f"IDLE's START row changed ({_START}): update Session.start_transaction")


def _describe(ev: Any) -> str:
    t = type(ev)
    if t is Response:
        return f"Response({ev.reply.code})"
    if t is TimerFired:
        return f"TimerFired({ev.timer!r})"
    return t.__name__


class Session(SessionData):
    """One SMTP client connection (its fields: `SessionData`), driven by the
    engine's calls and the driver's events."""

    __slots__ = ()

    def connect(self, at: float) -> Step:
        """Arm the connect timeout (the engine emits `Connect` itself)."""
        return self._run(Input.CONNECT, at, None, "connect()")

    def handle(self, ev: ConnEvent | TimerFired) -> Step:
        """Feed one event about this connection (or its ``("conn", conn)`` timer)."""
        t = type(ev)
        if t is Response:  # most inputs: straight to the row by the reply code
            if ev.conn != self.conn:  # type: ignore[union-attr]
                self._refuse(f"{_describe(ev)} of conn {ev.conn}")  # type: ignore[union-attr]
            row = REPLY_ROWS[self.state][ev.reply.code]  # type: ignore[union-attr]
        elif t is TimerFired:
            if ev.timer != self.timer:  # type: ignore[union-attr]
                self._refuse(_describe(ev))
            row = _ROWS[self.state].get(Input.TIMEOUT)
        else:
            kind = _EVENT_KINDS.get(t)
            if kind is None:
                self._refuse(_describe(ev))
            if ev.conn != self.conn:  # type: ignore[union-attr]
                self._refuse(f"{_describe(ev)} of conn {ev.conn}")  # type: ignore[union-attr]
            row = _ROWS[self.state].get(kind)  # type: ignore[arg-type]
        if row is None:
            self._refuse(ev)  # described only when refused
        handler, targets = row  # type: ignore[misc]
        fx: list[Any] = []
        out: list[Outcome] = []
        nxt = handler(self, ev.at, ev, fx, out)
        if nxt is None:
            nxt = targets[0]
        elif nxt not in targets:
            raise AssertionError(f"{handler.__name__} chose {nxt.name}, not in {targets}")
        self.state = nxt
        return fx, out

    def start_transaction(self, at: float, msg: TxnMessage) -> Step:
        """Send one message (only in IDLE).  IDLE's one row for it is called
        directly (once per message; checked at import, `_START`)."""
        if self.state is not _IDLE:
            return self._run(Input.START, at, msg, "start_transaction()")
        fx: list[Any] = []
        out: list[Outcome] = []
        self.state = session_txn.transaction_started(self, at, msg, fx, out)
        return fx, out

    def quit(self, at: float) -> Step:
        """Say goodbye (only in IDLE): QUIT, then Close on its reply or after
        idle_timeout seconds (KumoMTA's QUIT timeout)."""
        return self._run(Input.QUIT, at, None, "quit()")

    def _refuse(self, what: Any) -> None:
        if not isinstance(what, str):
            what = _describe(what)
        raise ProtocolError(
            f"session {self.conn} cannot handle {what} in state {self.state.name}"
        ) from None

    def _run(self, kind: Input, at: float, payload: Any, what: Any) -> Step:
        row = _ROWS[self.state].get(kind)
        if row is None:
            self._refuse(what)
        handler, targets = row  # type: ignore[misc]
        fx: list[Any] = []
        out: list[Outcome] = []
        nxt = handler(self, at, payload, fx, out)
        if nxt is None:
            nxt = targets[0]
        elif nxt not in targets:
            raise AssertionError(f"{handler.__name__} chose {nxt.name}, not in {targets}")
        self.state = nxt
        return fx, out
