"""Waiting on a condition with an asserted deadline, instead of a fixed sleep.

A fixed sleep is either too short on a loaded machine (the test fails) or too
long on a quiet one; a poll with a generous deadline is neither, and the
deadline's failure says what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL = 0.005  # seconds between looks


async def until(cond: Callable[[], object], timeout: float = 10.0,
                what: str = "condition") -> None:
    """Return once `cond()` is true; fail the test after `timeout` seconds."""
    give_up = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < give_up, f"{what}: not true after {timeout} s"
        await asyncio.sleep(POLL)


def until_sync(cond: Callable[[], object], timeout: float = 10.0,
               what: str = "condition") -> None:
    """`until` for a thread that is not running an event loop."""
    give_up = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < give_up, f"{what}: not true after {timeout} s"
        time.sleep(POLL)
