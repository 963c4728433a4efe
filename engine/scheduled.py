"""The scheduled queues: messages waiting for their due time.

KumoMTA keeps one scheduled queue per ``campaign:tenant@domain``.  Here every
scheduled message of every queue sits in one `SortedList` of
``(due, message)`` keyed by due time; a tie is broken by the message's own
order (creation time, then id), so no sequence number is stored per message.
Each `QueueInfo` counts its own messages.  One list means the engine's single ``("promote",
"")`` timer is simply armed at the head's due time, and insertion, removal and
"pop everything due" are all O(log n) in the number of scheduled messages,
whatever the number of queues.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Final

from mypy_extensions import mypyc_attr
from sortedcontainers import SortedList

from engine.message import HELD, Message

# a message just taken out of the list is on its way somewhere (the caller sets
# where it goes); until then it counts as held, never as scheduled
SCHEDULED_OUT: Final = HELD


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class ScheduledQueues:
    """All scheduled messages, ordered by (due, message)."""

    __slots__ = ("_items", "low")

    def __init__(self) -> None:
        self._items: SortedList = SortedList()
        # earliest due added since the engine last looked (None: nothing added),
        # so the engine re-checks the head only when something was scheduled
        self.low: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, msg: Message, due: float) -> None:
        """Schedule `msg` at `due`."""
        # one float object, shared by the message and its entry (typed Any so
        # the compiled build, setup.py, does not box an unboxed float twice)
        at: Any = float(due)
        msg._w = at
        self._items.add((at, msg))
        if self.low is None or at < self.low:
            self.low = at

    def remove(self, msg: Message) -> None:
        """Take `msg` out (it must be scheduled)."""
        due = msg.due
        assert due is not None, msg
        self._items.remove((due, msg))
        msg._w = SCHEDULED_OUT

    def next_due(self) -> float | None:
        """The earliest due time, or None when nothing is scheduled."""
        items = self._items
        return items[0][0] if items else None

    def _end(self, now: float) -> int:
        # (due, msg) < (nextafter(now),) exactly when due <= now
        return self._items.bisect_left((math.nextafter(now, math.inf),))

    def pop_due(self, now: float) -> list[Message]:
        """Remove and return every message due at or before `now`, in order."""
        taken = self.peek_due(now)
        self.pop_count(len(taken))
        return taken

    def peek_due(self, now: float) -> list[Message]:
        """Every message due at or before `now`, in order, left in place
        (`pop_count` then removes them)."""
        items = self._items
        if not items:
            return []
        first = items[0]
        if first[0] > now:
            return []
        if len(items) == 1 or items[1][0] > now:
            return [first[1]]  # the usual case: one message per promote timer
        return [key[1] for key in items.islice(0, self._end(now))]

    def pop_count(self, n: int) -> None:
        """Remove the first `n` entries (those `peek_due` returned)."""
        if n == 1:
            self._items.pop(0)[1]._w = SCHEDULED_OUT
        elif n:
            items = self._items
            for key in items.islice(0, n):
                key[1]._w = SCHEDULED_OUT
            del items[:n]

    def due_of(self, msg: Message) -> float | None:
        """When `msg` is due, if scheduled."""
        return msg.due

    def __iter__(self) -> Iterator[Message]:
        return (key[1] for key in self._items)

    def remove_where(self, pred: Callable[[Message], bool]) -> list[Message]:
        """Remove and return every scheduled message matching `pred` (in due order)."""
        hit = [key for key in self._items if pred(key[1])]
        for key in hit:
            self._items.remove(key)
            key[1]._w = SCHEDULED_OUT
        return [key[1] for key in hit]
