"""engine/live/listener_limits.py: the listener's bounds as plain bookkeeping."""

from __future__ import annotations

import pytest

from engine.live.listener_limits import (
    AUTH_DELAY_CAP,
    AUTH_WINDOW,
    Limits,
    LimitSettings,
)


def test_connections_are_capped_globally_and_per_client() -> None:
    limits = Limits(LimitSettings(max_connections=3, max_connections_per_client=2))
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is None
    refused = limits.admit("10.0.0.1")
    assert refused is not None and refused.startswith(b"421 4.7.0 too many connections from")
    assert limits.admit("10.0.0.2") is None
    refused = limits.admit("10.0.0.3")
    assert refused is not None and refused.startswith(b"421 4.7.0 too many connections,")
    limits.release("10.0.0.1")
    assert limits.admit("10.0.0.3") is None
    assert (limits.connections, dict(limits.per_client)) == (
        3, {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 1})


def test_buffered_bytes_are_summed_across_connections() -> None:
    limits = Limits(LimitSettings(max_buffered_data=100))
    limits.hold(60)
    limits.hold(40)
    assert not limits.over_budget()
    limits.hold(1)
    assert limits.over_budget()
    limits.hold(-41)
    assert not limits.over_budget()


def test_auth_failures_grow_the_delay_then_lock_until_the_window_passes() -> None:
    limits = Limits(LimitSettings(auth_max_failures=3, auth_delay=2.0))
    assert [limits.auth_failed("p", t) for t in (0.0, 1.0, 2.0)] == [2.0, 4.0, AUTH_DELAY_CAP]
    assert limits.auth_locked("p", 3.0)
    assert not limits.auth_locked("q", 3.0)
    assert limits.auth_locked("p", AUTH_WINDOW - 1.0)
    assert not limits.auth_locked("p", AUTH_WINDOW + 2.5)  # the failures aged out


@pytest.mark.parametrize("bad", [{"max_connections": 0}, {"auth_max_failures": True},
                                 {"max_buffered_data": 1.5}, {"auth_delay": -1}])
def test_settings_refuse_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="Listener"):
        LimitSettings(**bad)  # type: ignore[arg-type]
