"""Messages turned away by a full ready queue, kept per whole second until due.

When a path's ready queue holds ``max_ready`` messages, KumoMTA re-delays
every message promoted into it by a random 0-60 s, counts no attempt, and
logs reason ``ReadyQueueWasFull``.  In a blast (a campaign injected at once)
that is most of what happens: a backlog of B messages behind a path that
delivers r/s re-delays about B/60 of them every second for B/r seconds.
Done one message at a time (a sorted scheduled-queue insertion, a promote
timer at the message's own instant, a `Log` effect each), every re-delay
costs O(log B) plus several objects, and one promote event per re-delay.

`OverflowWheel` is the structure that makes one re-delay cost the same
whatever the backlog: a wheel of slots keyed by the whole second a message
comes due, each slot a plain list appended to in order.  Re-delaying k
messages is k random draws and k list appends (`add`, `fill`); everything
due by ``now`` comes out in one call (`pop_due`), so the owner needs one
timer per path at the earliest occupied second (`next_due`), not one per
message.  Occupied seconds sit in a small heap (at most one push per second
that has messages, about 60 live at a time for the 60 s spread), so the
heap never grows with the backlog.

Why whole seconds are faithful: KumoMTA does not keep a re-delayed message's
due time any finer.  ``Message::delay_with_jitter(60)`` draws
``(rand::random::<f32>() * 60) as i64`` whole seconds
(crates/message/src/message.rs; a draw of 0 is "due now", and
``Queue::force_into_delayed`` in crates/kumod/src/queue/queue.rs draws
again), and the default scheduled-queue strategy, ``SingletonTimerWheel``
(crates/kumod/src/queue/strategy.rs), keeps every scheduled message in one
hashed hierarchical timer wheel (crates/timeq, ``QuadWheelWithOverflow``)
that ``run_singleton_wheel_v1`` (crates/kumod/src/queue/maintainer.rs) pops
every 3 s, re-inserting what came due in batches (``reinsert_batch``);
``SingletonTimerWheelV2`` is a three-level wheel with a 3 s tick
(``TriTimeQ::new(Duration::from_secs(3))``, crates/message/src/timeq.rs).
So in KumoMTA a re-delayed message returns on a multi-second tick, in a
batch with everything else due on it.  Here a message whose draw puts it at
``due`` is released at ``floor(due) + 1``: never early, at most one second
late, and always after the instant it was re-delayed, so a batch popped at
``t`` never re-enters the slot being popped.  (Checked against KumoCorp/kumomta
at commit 3ebc1e8, 2026-08-04.)

The draws: one ``rng.random()`` per message, in the order given, scaled by
``spread``; ``random.Random.uniform(0.0, spread)`` is exactly that value, so
an engine that today calls ``uniform(0.0, 60.0)`` once per re-delayed message
keeps its random stream (and each message its drawn due time, before the
rounding to the next second) when it calls `add` with the same messages in
the same order.

What the wheel holds is integer *handles*, not message objects: each slot
is an ``array('q')``, so a re-delay copies a machine integer and never
touches the message.  With a list of objects every append, slice and
extend writes the object's reference count; at a million waiting messages
those are cache misses, and the cost per re-delay more than doubled between
a 100 k and a 1 M backlog (measured with bench/overflow.py before this
change).  The owner keeps the handle -> message table (a list indexed by
handle, or a dict) and looks up only the messages it admits.

Pure: standard library only, no engine state; the owner (the engine's
promotion step) decides what is expired, what records to write and what
timer to arm.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, Protocol

Handles = array  # array('q') of message handles

#: KumoMTA's re-delay for a full ready queue: up to 60 s (``delay_with_jitter(60)``).
SPREAD = 60.0


class RandomSource(Protocol):
    """What the wheel needs of a generator: `random.Random` has it."""

    def random(self) -> float: ...


class Fill(NamedTuple):
    """What `OverflowWheel.fill` did: the handles that took the free slots, in
    order, and how many went back to the wheel."""

    admitted: Handles
    redelayed: int


def handles(values: Iterable[int] = ()) -> Handles:
    """An ``array('q')`` of handles (what `pop_due` returns and `fill` takes)."""
    return array("q", values)


class OverflowWheel:
    """Re-delayed messages of one path (as integer handles), in whole-second slots.

    >>> import random
    >>> w = OverflowWheel()
    >>> w.add([7, 8, 9], now=10.0, rng=random.Random(1))
    3
    >>> w.next_due() is not None and 11 <= w.next_due() <= 70
    True
    >>> sorted(w.pop_due(100.0))
    [7, 8, 9]
    >>> len(w)
    0
    """

    __slots__ = ("_len", "_popped_to", "_seconds", "_slots", "redelays", "spread")

    def __init__(self, spread: float = SPREAD) -> None:
        if not spread > 0.0:
            raise ValueError(f"spread must be a positive number of seconds, got {spread!r}")
        self.spread = float(spread)
        self._slots: dict[int, Handles] = {}  # whole second -> handles due then, in order added
        self._seconds: list[int] = []  # heap of the keys of _slots
        self._len = 0
        self._popped_to = -1  # every slot at or before this second has been popped
        self.redelays = 0  # handles ever added (each `add` of one handle is one re-delay)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[int]:
        """Every handle held, earliest second first (for inspection)."""
        for second in sorted(self._slots):
            yield from self._slots[second]

    def next_due(self) -> float | None:
        """The earliest second a message comes due (when to arm the path's one
        promote timer), or None when the wheel is empty."""
        return float(self._seconds[0]) if self._seconds else None

    def add(self, items: Iterable[int], now: float, rng: RandomSource) -> int:
        """Re-delay each handle of `items` by its own draw in ``[0, spread)`` from
        `rng`, in order; returns how many.  Each lands in the slot ``floor(now +
        draw) + 1``.  O(1) per handle: a draw, an int, a dict lookup, an append
        (a heap push only for a second no handle occupied yet)."""
        if now < self._popped_to:
            raise ValueError(f"cannot re-delay at t={now!r}: "
                             f"the wheel was already popped to t={self._popped_to}")
        slots, seconds = self._slots, self._seconds
        draw, spread = rng.random, self.spread
        last_second = -1  # no slot yet: a second is never negative for now >= -1
        last_append = array("q").append  # replaced at the first item
        n = 0
        for item in items:
            second = int(now + draw() * spread) + 1
            if second != last_second:
                slot = slots.get(second)
                if slot is None:
                    slot = slots[second] = array("q")
                    heapq.heappush(seconds, second)
                last_second, last_append = second, slot.append
            last_append(item)
            n += 1
        self._len += n
        self.redelays += n
        return n

    def add_one(self, item: int, now: float, rng: RandomSource) -> None:
        """`add` of a single handle, the same draw: a lazy backlog's first
        re-delay, once per message of a blast, without `add`'s loop set-up."""
        if now < self._popped_to:
            raise ValueError(f"cannot re-delay at t={now!r}: "
                             f"the wheel was already popped to t={self._popped_to}")
        second = int(now + rng.random() * self.spread) + 1
        slot = self._slots.get(second)
        if slot is None:
            slot = self._slots[second] = array("q")
            heapq.heappush(self._seconds, second)
        slot.append(item)
        self._len += 1
        self.redelays += 1

    def pop_due(self, now: float) -> Handles:
        """Every handle whose second is at or before `now`, earliest second first
        and in the order added within a second.  O(handles returned), copied as
        machine integers."""
        seconds = self._seconds
        if not seconds or seconds[0] > now:
            if now > self._popped_to:
                self._popped_to = int(now)
            return array("q")
        slots = self._slots
        out = slots.pop(heapq.heappop(seconds))
        while seconds and seconds[0] <= now:
            out.extend(slots.pop(heapq.heappop(seconds)))
        self._len -= len(out)
        self._popped_to = max(self._popped_to, int(now))
        return out

    def fill(self, items: Handles, free: int, now: float, rng: RandomSource) -> Fill:
        """The first `free` of `items` take the ready queue's free slots; the rest
        are re-delayed in one batch (`add`).  The step for a full ready queue:
        ``wheel.fill(wheel.pop_due(now), free, now, rng)``."""
        if free < 0:
            raise ValueError(f"free slots cannot be negative, got {free}")
        if free >= len(items):
            return Fill(items, 0)
        return Fill(items[:free], self.add(items[free:], now, rng))

    def remove_if(self, predicate: Callable[[int], bool]) -> Handles:
        """Take out every held handle for which `predicate` is true (an admin
        bounce, a suspended path's messages moved elsewhere): O(held), for rare
        operations only.  Returned earliest second first."""
        taken = array("q")
        for second in sorted(self._slots):
            keep = array("q")
            for m in self._slots[second]:
                (taken if predicate(m) else keep).append(m)
            if keep:
                self._slots[second] = keep
            else:
                del self._slots[second]
        if taken:
            self._seconds = list(self._slots)
            heapq.heapify(self._seconds)
            self._len -= len(taken)
        return taken

    def entries(self) -> list[tuple[int, int]]:
        """(second, handle) for everything held, earliest first: what a snapshot
        stores so that `restore` rebuilds the wheel exactly."""
        return [(second, m) for second in sorted(self._slots) for m in self._slots[second]]

    def restore(self, entries: Iterable[tuple[int, int]]) -> None:
        """Put back what `entries` returned (into an empty wheel), same seconds,
        same order within a second; no draw is taken."""
        if self._len:
            raise ValueError("restore needs an empty wheel")
        slots, seconds = self._slots, self._seconds
        for second, item in entries:
            slot = slots.get(second)
            if slot is None:
                slot = slots[second] = array("q")
                heapq.heappush(seconds, second)
            slot.append(item)
            self._len += 1

    def drain(self) -> Handles:
        """Everything held, earliest second first; the wheel is left empty."""
        out = array("q", self)
        self._slots.clear()
        self._seconds.clear()
        self._len = 0
        return out
