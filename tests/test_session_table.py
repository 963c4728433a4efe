"""Tests for engine.session_table (through Session): every (state, input) is a
row or a ProtocolError that changes nothing, and random dialogs keep the books
(one SessionClosed, last; one result per recipient, then TransactionDone)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from engine.errors import ProtocolError
from engine.events import (
    Closed,
    Connected,
    ConnectFailed,
    Malformed,
    Response,
    TimerFired,
    TlsEstablished,
    TlsFailed,
)
from engine.reply import Reply
from engine.session import (
    TRANSITIONS,
    HostFailed,
    Input,
    RecipientResult,
    ReconnectInClear,
    Session,
    SessionClosed,
    SessionReady,
    State,
    TransactionDone,
    TxnMessage,
    parse_ehlo,
)
from engine.session_handlers import _PHASE
from tests.support.session_kit import (
    AUTH,
    CONN,
    EHLO_CAPS,
    MODES,
    MSG,
    ONE,
    fire,
    greet,
    make,
    resp,
)

# -- illegal input -----------------------------------------------------------------------


def _snapshot(s: Session) -> dict[str, Any]:
    values = {name: getattr(s, name) for name in Session.__slots__}
    return {name: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
            for name, v in values.items()}


def test_protocol_error_shape_and_nothing_changes() -> None:
    s = make()
    s.connect(0.0)
    before = _snapshot(s)
    with pytest.raises(ProtocolError) as info:
        s.handle(resp(1.0, 354))
    assert str(info.value) == "session 17 cannot handle Response(354) in state AWAIT_CONNECT"
    assert info.value.__suppress_context__ is True
    assert _snapshot(s) == before


def test_protocol_errors_for_calls_foreign_timers_and_other_connections() -> None:
    s = make()
    greet(s)
    s.start_transaction(10.0, MSG)
    with pytest.raises(ProtocolError, match=r"^session 17 cannot handle start_transaction\(\) "
                                            r"in state MAIL_SENT$"):
        s.start_transaction(11.0, MSG)
    with pytest.raises(ProtocolError, match=r"^session 17 cannot handle quit\(\) in state "
                                            r"MAIL_SENT$"):
        s.quit(11.0)
    with pytest.raises(ProtocolError, match=r"^session 17 cannot handle "
                                            r"TimerFired\(\('idle', 17\)\)"
                                            r" in state MAIL_SENT$"):
        s.handle(TimerFired(at=11.0, timer=("idle", CONN)))
    with pytest.raises(ProtocolError, match=r"^session 17 cannot handle Response\(250\) of conn 18 "
                                            r"in state MAIL_SENT$"):
        s.handle(Response(at=11.0, conn=18, reply=Reply(code=250)))
    assert s.state is State.MAIL_SENT


def in_state(state: State) -> Session:
    """A session driven (without pipelining) into `state`."""
    s = make("Opportunistic", enable_pipelining=False, **AUTH)
    script: list[Any] = [
        lambda: s.connect(0.0),
        lambda: s.handle(Connected(at=1.0, conn=CONN)),
        lambda: s.handle(resp(2.0, 220)),
        lambda: s.handle(resp(3.0, 250, "mx\nSTARTTLS\nAUTH PLAIN")),
        lambda: s.handle(resp(4.0, 220)),
        lambda: s.handle(TlsEstablished(at=5.0, conn=CONN)),
        lambda: s.handle(resp(6.0, 250, "mx\nAUTH PLAIN")),
        lambda: s.handle(resp(7.0, 235)),
        lambda: s.start_transaction(8.0, ONE),
        lambda: s.handle(resp(9.0, 250)),
        lambda: s.handle(resp(10.0, 250)),
        lambda: s.handle(resp(11.0, 354)),
        lambda: s.handle(resp(12.0, 250)),
        lambda: s.start_transaction(13.0, ONE),
    ]
    if state is State.HELO_SENT:
        script[3] = lambda: s.handle(resp(3.0, 500))
    elif state is State.QUIT_SENT:
        script[8] = lambda: s.quit(8.0)
    elif state is State.CLOSED:
        script[1] = lambda: s.handle(ConnectFailed(at=1.0, conn=CONN))
    for step in script:
        if s.state is state:
            return s
        step()
    assert s.state is state, (state, s.state)
    return s


AT = 500.0
INPUTS: dict[Input, tuple[str, Any]] = {
    Input.CONNECT: ("connect()", lambda s: s.connect(AT)),
    Input.START: ("start_transaction()", lambda s: s.start_transaction(AT, ONE)),
    Input.QUIT: ("quit()", lambda s: s.quit(AT)),
    Input.CONNECTED: ("Connected", lambda s: s.handle(Connected(at=AT, conn=CONN))),
    Input.CONNECT_FAILED: ("ConnectFailed", lambda s: s.handle(ConnectFailed(at=AT, conn=CONN))),
    Input.TLS_OK: ("TlsEstablished", lambda s: s.handle(TlsEstablished(at=AT, conn=CONN))),
    Input.TLS_FAILED: ("TlsFailed", lambda s: s.handle(TlsFailed(at=AT, conn=CONN))),
    Input.R2XX: ("Response(250)", lambda s: s.handle(resp(AT, 250))),
    Input.R3XX: ("Response(354)", lambda s: s.handle(resp(AT, 354))),
    Input.R4XX: ("Response(451)", lambda s: s.handle(resp(AT, 451))),
    Input.R421: ("Response(421)", lambda s: s.handle(resp(AT, 421))),
    Input.R5XX: ("Response(550)", lambda s: s.handle(resp(AT, 550))),
    Input.TIMEOUT: ("TimerFired(('conn', 17))", lambda s: s.handle(fire(AT))),
    Input.CLOSED: ("Closed", lambda s: s.handle(Closed(at=AT, conn=CONN))),
    Input.MALFORMED: ("Malformed", lambda s: s.handle(Malformed(at=AT, conn=CONN, detail="x"))),
}


@pytest.mark.parametrize("state", list(State), ids=lambda st: st.name)
def test_totality_every_input_in_every_state(state: State) -> None:
    """Every (state, input kind) is a row (taken without error, to a listed
    state) or a ProtocolError that leaves the session unchanged."""
    legal = 0
    for kind, (what, call) in INPUTS.items():
        s = in_state(state)
        row = TRANSITIONS.get((state, kind))
        if row is None:
            before = _snapshot(s)
            with pytest.raises(ProtocolError) as info:
                call(s)
            assert str(info.value) == f"session 17 cannot handle {what} in state {state.name}"
            assert _snapshot(s) == before
        else:
            legal += 1
            _, out = call(s)
            assert s.state in row[1], (state, kind, s.state)
            if s.state is State.CLOSED:
                assert isinstance(out[-1], SessionClosed)
    assert (legal == 0) == (state is State.CLOSED)


def test_every_state_but_closed_has_a_phase_name() -> None:
    assert set(_PHASE) == set(State) - {State.CLOSED}


def test_table_rows_name_known_states() -> None:
    for (state, kind), (handler, targets) in TRANSITIONS.items():
        assert targets and all(isinstance(t, State) for t in targets), (state, kind)
        assert callable(handler)
        assert state is not State.CLOSED


# -- random dialogs (Hypothesis) ---------------------------------------------------------

CODES = {Input.R2XX: [220, 235, 250], Input.R3XX: [334, 354], Input.R4XX: [450, 451, 454],
         Input.R421: [421], Input.R5XX: [500, 503, 535, 550, 554]}
_OK = [Input.R2XX]
_HAPPY = {  # inputs that move a dialog on, so random runs reach transactions
    State.AWAIT_CONNECT: [Input.CONNECTED], State.TLS_HANDSHAKE: [Input.TLS_OK],
    State.STARTTLS_SENT: [Input.R2XX, Input.R4XX], State.IDLE: [Input.START],
    State.MAIL_SENT: [Input.R2XX, Input.R5XX], State.RCPT_SENT: [Input.R2XX, Input.R5XX],
    State.DATA_SENT: [Input.R3XX, Input.R5XX], State.BODY_SENT: [Input.R2XX, Input.R4XX],
}


@settings(max_examples=400, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    pipelining=st.booleans(),
    auth=st.booleans(),
    data=st.data(),
)
def test_random_dialogs_keep_the_books(mode: str, pipelining: bool, auth: bool,
                                       data: st.DataObject) -> None:
    """Random inputs, mostly legal ones (so dialogs get far), some not: a
    refused input changes nothing; one SessionClosed, last; every
    transaction gives each recipient one result, then TransactionDone."""
    keys: dict[str, Any] = dict(enable_pipelining=pipelining, max_recipients_per_batch=2)
    if auth:
        keys.update(AUTH, allow_smtp_auth_plain_without_tls=True)
    s = make(mode, **keys)
    at = 0.0
    outcomes: list[Any] = []
    txns: list[TxnMessage] = []
    for n in range(data.draw(st.integers(0, 60), label="length")):
        at += 1.0
        legal = sorted((k for (st_, k) in TRANSITIONS if st_ is s.state), key=lambda k: k.value)
        anything = sorted(Input, key=lambda k: k.value)
        happy = _HAPPY.get(s.state, _OK) if legal else []
        bias = data.draw(st.integers(0, 9), label="bias")
        pool = happy if bias >= 3 and happy else legal if bias >= 1 and legal else anything
        kind = data.draw(st.sampled_from(pool), label="input")
        before = _snapshot(s)
        try:
            if kind in CODES:
                code = data.draw(st.sampled_from(CODES[kind]), label="code")
                step = s.handle(resp(at, code, "mx\nPIPELINING\nSTARTTLS\nAUTH PLAIN"))
            elif kind is Input.START:
                nrcpt = data.draw(st.integers(1, 3), label="recipients")
                msg = TxnMessage(f"m{n}", "s@example.org",
                                 tuple(f"r{i}@example.com" for i in range(nrcpt)), 10)
                txns.append(msg)
                step = s.start_transaction(at, msg)
            else:
                step = INPUTS[kind][1](s)
        except ProtocolError:
            assert _snapshot(s) == before
            if kind is Input.START:
                txns.pop()
            continue
        outcomes += step[1]
    closed = [o for o in outcomes if isinstance(o, SessionClosed)]
    assert len(closed) == (1 if s.state is State.CLOSED else 0)
    if closed:
        assert outcomes[-1] is closed[0]
    failed = [o for o in outcomes if isinstance(o, HostFailed | ReconnectInClear)]
    assert len(failed) <= 1
    if failed:
        assert not txns
    event(f"txns={min(len(txns), 3)} closed={bool(closed)}")
    for msg in txns:
        results = [o.recipient for o in outcomes
                   if isinstance(o, RecipientResult) and o.message_id == msg.id]
        done = [i for i, o in enumerate(outcomes)
                if isinstance(o, TransactionDone) and o.message_id == msg.id]
        if s.message is msg:
            assert done == []
            assert len(results) == len(set(results))
            continue
        assert sorted(results) == sorted(msg.recipients)
        assert len(done) == 1
        last_result = max(i for i, o in enumerate(outcomes)
                          if isinstance(o, RecipientResult) and o.message_id == msg.id)
        assert last_result < done[0]
        assert isinstance(outcomes[done[0] + 1], SessionReady | SessionClosed)


def test_parse_ehlo() -> None:
    assert parse_ehlo(EHLO_CAPS) == {"PIPELINING": (), "SIZE": ("10000000",), "STARTTLS": (),
                                     "AUTH": ("LOGIN", "PLAIN"), "8BITMIME": ()}
    assert parse_ehlo("mx\nauth=login\nAUTH PLAIN\n\n") == {"AUTH": ("LOGIN", "PLAIN")}
    assert parse_ehlo("mx only") == {}
