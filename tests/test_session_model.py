"""Tests for engine.session_model: the transition table is total (every
(state, input) is a row, taken to a listed state, or a ProtocolError that
changes nothing) and names only known states; a transaction needs a recipient."""

from __future__ import annotations

import pytest

from engine.errors import ProtocolError
from engine.session import (
    TRANSITIONS,
    Happened,
    SessionClosed,
    State,
    TxnMessage,
)
from tests.support.session_kit import (
    INPUTS,
    in_state,
    snapshot,
)


@pytest.mark.parametrize("state", list(State), ids=lambda st: st.name)
def test_totality_every_input_in_every_state(state: State) -> None:
    """Every (state, input kind) is a row (taken without error, to a listed
    state) or a ProtocolError that leaves the session unchanged."""
    legal = 0
    for kind, (what, call) in INPUTS.items():
        s = in_state(state)
        row = TRANSITIONS[state].get(kind)
        if row is None:
            before = snapshot(s)
            with pytest.raises(ProtocolError) as info:
                call(s)
            assert str(info.value) == f"session 17 cannot handle {what} in state {state.name}"
            assert snapshot(s) == before
        else:
            legal += 1
            _, out = call(s)
            assert s.state in row[1], (state, kind, s.state)
            if s.state is State.CLOSED:
                assert isinstance(out[-1], SessionClosed)
    assert (legal == 0) == (state is State.CLOSED)


def test_every_state_has_an_entry_and_only_closed_is_empty() -> None:
    assert list(TRANSITIONS) == list(State)
    assert [state for state, rows in TRANSITIONS.items() if not rows] == [State.CLOSED]


def test_every_target_state_can_go_on_and_every_state_is_reached() -> None:
    # A row may only lead to a state that has rows of its own (or to CLOSED,
    # the one terminal state), and every state but the first is the target of
    # some row: no dead end and no unreachable state in the table.
    targets = {t for rows in TRANSITIONS.values() for _, ts in rows.values() for t in ts}
    assert [t for t in targets if not TRANSITIONS[t]] == [State.CLOSED]
    assert set(State) - targets <= {State.AWAIT_CONNECT}


def test_every_handler_name_is_used_by_a_row() -> None:
    used = {happened for rows in TRANSITIONS.values() for happened, _ in rows.values()}
    assert used == set(Happened)


def test_a_transaction_needs_a_recipient() -> None:
    with pytest.raises(ValueError, match=r"^message m1: a transaction needs at least one"):
        TxnMessage("m1", "s@example.org", ())
