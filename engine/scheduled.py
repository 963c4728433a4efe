"""The scheduled queues: messages waiting for their due time.

KumoMTA keeps one scheduled queue per ``campaign:tenant@domain``.  Here every
scheduled message of every queue sits in one `SortedKeyList` of messages
keyed by due time (the float in the message's own ``_w`` slot); messages due
at the same instant come out in the order they were scheduled, as from the
slot of KumoMTA's timer wheel.  No entry is made per message: a
``(due, message)`` tuple each was 56 bytes of a queued message's ~350.
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
from sortedcontainers import SortedKeyList, SortedList

from engine.message import HELD, Message

# a message just taken out of the list is on its way somewhere (the caller sets
# where it goes); until then it counts as held, never as scheduled
SCHEDULED_OUT: Final = HELD


def due_key(msg: Message) -> Any:
    """A scheduled message's due time: the sort key of `ScheduledQueues`.
    Typed Any: the float object the message holds is the key kept (compiled,
    a function returning `float` would box a new one for each message)."""
    return msg._w  # a float while it is scheduled


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class ScheduledQueues:
    """All scheduled messages, ordered by due time, then as scheduled."""

    __slots__ = ("_items", "low")

    def __init__(self) -> None:
        self._items: SortedKeyList = SortedKeyList(key=due_key)
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
        self._items.add(msg)
        if self.low is None or at < self.low:
            self.low = at

    def remove(self, msg: Message) -> None:
        """Take `msg` out (it must be scheduled)."""
        assert msg.due is not None, msg
        self._items.remove(msg)  # found by its key: before `_w` changes
        msg._w = SCHEDULED_OUT

    def next_due(self) -> float | None:
        """The earliest due time, or None when nothing is scheduled."""
        items = self._items
        return items[0]._w if items else None

    def _end(self, now: float) -> int:
        # due < nextafter(now) exactly when due <= now
        return self._items.bisect_key_left(math.nextafter(now, math.inf))

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
        first: Message = items[0]
        if first._w > now:
            return []
        if len(items) == 1 or items[1]._w > now:
            return [first]  # the usual case: one message per promote timer
        return list(items.islice(0, self._end(now)))

    def pop_count(self, n: int) -> None:
        """Remove the first `n` entries (those `peek_due` returned)."""
        if n == 1:
            self._items.pop(0)._w = SCHEDULED_OUT
        elif n:
            items = self._items
            for msg in items.islice(0, n):
                msg._w = SCHEDULED_OUT
            del items[:n]

    def due_of(self, msg: Message) -> float | None:
        """When `msg` is due, if scheduled."""
        return msg.due

    def __iter__(self) -> Iterator[Message]:
        return iter(self._items)

    def remove_where(self, pred: Callable[[Message], bool]) -> list[Message]:
        """Remove and return every scheduled message matching `pred` (in due order)."""
        hit = [msg for msg in self._items if pred(msg)]
        for msg in hit:
            self._items.remove(msg)
            msg._w = SCHEDULED_OUT
        return hit


def upgrade(sched: ScheduledQueues) -> None:
    """Re-key a scheduled list restored from a snapshot written before it was
    keyed by due time (a `SortedList` of ``(due, message)`` pairs, in due,
    created, id order): the messages in that order, ties kept in it."""
    items: Any = sched._items
    if type(items) is SortedList:
        sched._items = SortedKeyList((pair[1] for pair in items), key=due_key)

