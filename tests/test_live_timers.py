"""engine.live.timers: one handle per name, lazy re-arm, real cancels, on a real loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from engine.live.timers import EARLY, LiveTimers

pytestmark = pytest.mark.timeout(10)


def run(body: Callable[[LiveTimers, list[tuple[Any, float]]], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        fired: list[tuple[Any, float]] = []
        timers = LiveTimers(asyncio.get_running_loop(),
                            lambda name: fired.append((name, time.time())))
        await body(timers, fired)

    # asyncio's own loop even when the session runs on uvloop (EGRESS_TEST_LOOP):
    # `live_handles` counts the handles in its private `_scheduled` heap
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(main())


async def fired_by(fired: list[tuple[Any, float]], n: int, within: float = 5.0) -> None:
    """Wait until `n` timers have fired; fail after `within` seconds (a generous
    deadline: on a loaded machine a timer fires late, never early)."""
    give_up = time.monotonic() + within
    while len(fired) < n:
        assert time.monotonic() < give_up, f"only {len(fired)} of {n} fired in {within} s"
        await asyncio.sleep(0.005)


def live_handles() -> int:
    """Timer handles still scheduled (not cancelled) in the running loop."""
    loop: Any = asyncio.get_running_loop()
    return sum(not h.cancelled() for h in loop._scheduled)


def test_fires_once_at_its_deadline() -> None:
    async def body(timers: LiveTimers, fired: list[tuple[Any, float]]) -> None:
        at = time.time() + 0.05
        timers.set(("conn", 1), at)
        assert ("conn", 1) in timers and timers.deadline(("conn", 1)) == at
        await fired_by(fired, 1)
        assert [name for name, _ in fired] == [("conn", 1)]
        assert fired[0][1] >= at - EARLY
        # Once: nothing is left armed, in the table or in the loop.
        assert len(timers) == 0 and timers.deadline(("conn", 1)) is None
        assert live_handles() == 0

    run(body)


def test_rearming_later_moves_the_deadline_without_a_new_handle() -> None:
    async def body(timers: LiveTimers, fired: list[tuple[Any, float]]) -> None:
        start = time.time()
        for i in range(100):  # what a session does: every reply re-arms a little later
            timers.set(("conn", 1), start + 0.05 + i * 0.004)
        assert timers.handles_created == 1
        last = start + 0.05 + 99 * 0.004
        await fired_by(fired, 1)
        # Not at the first deadline: the first handle woke early and waited again.
        assert [name for name, _ in fired] == [("conn", 1)]
        assert fired[0][1] >= last - EARLY
        assert timers.handles_created == 2  # the first one, and the one re-scheduled
        assert live_handles() == 0

    run(body)


def test_rearming_earlier_replaces_the_handle() -> None:
    async def body(timers: LiveTimers, fired: list[tuple[Any, float]]) -> None:
        start = time.time()
        timers.set(("idle", 3), start + 5.0)
        timers.set(("idle", 3), start + 0.03)
        assert timers.handles_created == 2
        assert live_handles() == 1  # the 5 s handle was cancelled, not left to wake
        await fired_by(fired, 1, within=2.5)
        assert [name for name, _ in fired] == [("idle", 3)]
        assert start + 0.03 - EARLY <= fired[0][1] < start + 2.5  # well before the 5 s one

    run(body)


def test_cancel_is_real_and_a_later_arming_fires_once() -> None:
    async def body(timers: LiveTimers, fired: list[tuple[Any, float]]) -> None:
        timers.set(("conn", 1), time.time() + 0.02)
        timers.set(("ready", "p"), time.time() + 0.02)
        timers.cancel(("conn", 1))
        timers.cancel(("never", 0))  # not armed: nothing happens
        assert live_handles() == 1  # the cancelled name left no live handle in the loop
        # A later sentinel: the loop runs timers in deadline order, so once it has
        # fired, a cancelled timer that still fired would already be in the list.
        timers.set(("sentinel", 0), time.time() + 0.04)
        await fired_by(fired, 2)
        assert [name for name, _ in fired] == [("ready", "p"), ("sentinel", 0)]
        at = time.time() + 0.02
        timers.set(("conn", 1), at)
        await fired_by(fired, 3)
        assert [name for name, _ in fired][2:] == [("conn", 1)]
        assert fired[2][1] >= at - EARLY
        assert live_handles() == 0

    run(body)


def test_clear_disarms_everything() -> None:
    async def body(timers: LiveTimers, fired: list[tuple[Any, float]]) -> None:
        for n in range(5):
            timers.set(("conn", n), time.time() + 0.02)
        timers.clear()
        assert len(timers) == 0 and live_handles() == 0
        timers.set(("sentinel", 0), time.time() + 0.04)  # fires after all five would have
        await fired_by(fired, 1)
        assert [name for name, _ in fired] == [("sentinel", 0)]

    run(body)


def test_a_deadline_in_the_past_fires_on_the_next_iteration() -> None:
    async def body(timers: LiveTimers, fired: list[tuple[Any, float]]) -> None:
        timers.set(("promote", ""), time.time() - 10.0)
        assert fired == []  # never synchronously, inside the effect that armed it
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [name for name, _ in fired] == [("promote", "")]

    run(body)
