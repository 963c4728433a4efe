"""The live driver's named timers: one asyncio handle per name, re-armed lazily.

Why it is shaped so: the session re-arms its command timer (``("conn", n)``)
with every command sent and every reply read, five times per message on a
reused connection, and almost always to a *later* deadline.  Creating an
asyncio `TimerHandle` and cancelling the previous one each time was about a
tenth of the delivery loop's time.  Here a name keeps one handle and a
deadline: a re-arm to a later time only moves the deadline (no handle, no
heap operation); when the handle fires before the deadline it is scheduled
again for the deadline (the lazy re-arm).  Only a re-arm to an *earlier* time
replaces the handle.  A cancel drops the handle for real, so a closed
connection leaves nothing in the loop's heap.

Deadlines are Unix times (what the engine's `SetTimer.at` carries); handles
are scheduled on the loop's monotonic clock, converted when scheduled.  A
handle that wakes less than `EARLY` seconds before its deadline fires: the
loop's clock and the wall clock need not agree to the microsecond, and
waiting again for less than a millisecond would only spin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from engine.events import Timer as TimerName

__all__ = ["EARLY", "LiveTimers"]

EARLY = 0.001
"""A handle this close to its deadline (seconds) fires rather than waiting again."""


class _Armed:
    """One armed name: its deadline and the handle that will wake it (at `wake`)."""

    __slots__ = ("deadline", "handle", "wake")

    def __init__(self) -> None:
        self.deadline = 0.0
        self.wake = 0.0
        self.handle: asyncio.TimerHandle | None = None


class LiveTimers:
    """Named timers on a running loop; `fire(name)` is called once per arming, at
    (or within `EARLY` of) its latest deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 fire: Callable[[TimerName], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._armed: dict[TimerName, _Armed] = {}
        self.handles_created = 0  # for tests and benchmarks: how often the heap was touched

    def set(self, name: TimerName, at: float) -> None:
        """Arm `name` for Unix time `at`, or re-arm it (the latest arming wins)."""
        armed = self._armed.get(name)
        if armed is None:
            armed = self._armed[name] = _Armed()
        elif armed.wake <= at:
            armed.deadline = at  # the handle wakes first and waits again: nothing to do
            return
        else:
            armed.handle.cancel()  # type: ignore[union-attr]  # earlier than the handle
        armed.deadline = at
        self._schedule(name, armed, at)

    def cancel(self, name: TimerName) -> None:
        """Disarm `name` (nothing happens if it is not armed)."""
        armed = self._armed.pop(name, None)
        if armed is not None and armed.handle is not None:
            armed.handle.cancel()

    def clear(self) -> None:
        """Disarm every name (shutdown)."""
        for armed in self._armed.values():
            if armed.handle is not None:
                armed.handle.cancel()
        self._armed.clear()

    def deadline(self, name: TimerName) -> float | None:
        """The Unix time `name` is armed for, or None."""
        armed = self._armed.get(name)
        return None if armed is None else armed.deadline

    def __len__(self) -> int:
        return len(self._armed)

    def table(self) -> dict[TimerName, _Armed]:
        """The armed names' dict itself (for `engine.lifecycle.compact` after a reap)."""
        return self._armed

    def __contains__(self, name: object) -> bool:
        return name in self._armed

    def _schedule(self, name: TimerName, armed: _Armed, at: float) -> None:
        loop = self._loop
        armed.wake = at
        armed.handle = loop.call_at(loop.time() + (at - time.time()), self._wake, name, armed)
        self.handles_created += 1

    def _wake(self, name: TimerName, armed: _Armed) -> None:
        if self._armed.get(name) is not armed:
            return  # cancelled (and perhaps armed again) after this handle was queued
        if armed.deadline - time.time() > EARLY:
            self._schedule(name, armed, armed.deadline)  # re-armed later meanwhile
            return
        del self._armed[name]
        self._fire(name)
