"""A path's re-delayed messages, sampled lazily: the simulator's fast path for a
full ready queue.

KumoMTA re-delays each message that meets a full ready queue by its own
uniform 0-60 s draw (no attempt counted, reason ``ReadyQueueWasFull``).  In
a blast of B messages behind a path delivering r/s that is about B/30
re-delays a second, B^2/(60 r) in all: quadratic in the backlog however
cheap one re-delay is.  `Backlog` keeps the rule's *distribution* and drops
the per-message work:

* A message's first re-delay (from an ordinary promotion, at any instant)
  draws its own due second, as `engine.overflow.OverflowWheel` does: due at
  ``floor(now + U(0, 60)) + 1``.
* Messages re-delayed by the same tick (second ``a``) form a *cohort*.  Each
  one's draw ``a + U(0, 60)`` is rounded to the nearest second: offsets 1..59
  with weight 1, 60 with weight 1/2, and 0 (a draw under half a second) with
  weight 1/2, which means due again at once: nothing being free, it is
  re-delayed again on the spot (one more re-delay, a new draw), as the
  per-message rule does with a draw that small.  Rounding to the nearest
  second keeps the mean gap between re-delays at 30 s, so re-delay counts
  keep their rate; rounding up would make it 30.5 s.
* At each later second, how many of a cohort's n remaining messages come due
  is Binomial(n, w / W): w the weight of the seconds since its last draw, W
  what its window has left (the multinomial over the window, drawn one
  second at a time).  Which ones is a uniformly random subset: the cohort's
  handles are kept in random order and the last d are taken.
* At a tick, everything due (wheel and cohorts) is shuffled; those past
  max_age expire, the first ``free`` (the ready queue's free slots) are
  admitted, and the rest become the tick's cohort, one more re-delay each.

Per tick that is one binomial draw per live cohort (at most 60) and a few
array operations; the per-re-delay work (moving a handle, counting its
re-delay) is done by numpy, never by a Python loop, so a re-delay costs a
few nanoseconds and the Python-level work is O(messages + seconds).

What differs from the per-message rule: a re-delayed message comes back on
the whole second nearest its draw (KumoMTA's own scheduled queue pops on a
3 s tick and draws whole seconds), the messages admitted at one tick are a
uniformly random choice among those due in that second instead of the
first ones within it, and a message re-delayed again never changes path
(`engine.full_queue.lazy_ok` keeps the paths where it could out of the backlog).
The draws come from a numpy generator seeded from the engine's own
generator, so a run is still fully determined by its seed.  The two paths
are compared over 20 seeds in tests/test_blast.py.

Messages are held as integer handles (an index into ``msgs``), each packed
with its re-delays so far into one int64 (``handle << _SHIFT | count``):
the arrays a tick moves carry the counts with them, so counting a re-delay
is a sequential add over the tick's own array, not a scatter into a
per-handle table.  At 2 M messages such a table is 8 MB read and written at
random, one cache miss per re-delay, 80-odd re-delays per message.  The
per-handle ``deadline`` (created + max_age) is read only once a held
message can have passed it (``soonest``, the earliest deadline ever added).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.overflow import SPREAD, OverflowWheel

_WINDOW = int(SPREAD)
#: a held value is ``handle << _SHIFT | re-delays so far``: 2^24 re-delays is
#: far beyond what any max_age allows at one re-delay per 30 s
_SHIFT = 24
_COUNT = (1 << _SHIFT) - 1
#: the chance a draw rounds to the tick's own second: U(0, 60) < 0.5 s
_HALF_SECOND = 0.5 / SPREAD


class Backlog:
    """One path's lazily sampled re-delayed messages (see the module text)."""

    __slots__ = (
        "_len",
        "cohorts",
        "deadline",
        "gen",
        "last",
        "msgs",
        "peak",
        "soonest",
        "timer_at",
        "wheel",
    )

    def __init__(self, gen: np.random.Generator) -> None:
        self.gen = gen
        self.wheel = OverflowWheel()
        self.msgs: list[Any] = []  # handle -> Message (None once it left)
        self.deadline = array("d")  # handle -> created + max_age (read as numpy, rarely)
        self.soonest = float("inf")  # no held message's deadline is earlier
        # [second a, packed values (random order; the first n remain), n, offsets done]
        self.cohorts: list[list[Any]] = []
        self._len = 0
        self.peak = 0  # the most messages it ever held
        self.last = 0  # the second of the latest tick
        self.timer_at: float | None = None  # ("backlog", path) armed at

    def __len__(self) -> int:
        return self._len

    def add(self, msg: Any, deadline: float, now: float, rng: Any) -> None:
        """A first re-delay: `msg` draws its own due second from `rng`."""
        h = len(self.msgs)
        self.msgs.append(msg)
        self.deadline.append(deadline)
        if deadline < self.soonest:
            self.soonest = deadline
        self.wheel.add_one(h << _SHIFT | 1, now, rng)
        self._len += 1
        if self._len > self.peak:
            self.peak = self._len

    def next_due(self) -> float | None:
        """When the next tick is due: the next second while cohorts are live,
        else the wheel's next second (None: nothing held)."""
        due = self.wheel.next_due()
        if self.cohorts:
            after = float(self.last + 1)  # a tick every second while cohorts live
            return after if due is None or after < due else due
        return due

    def tick(self, now: float, free: int) -> tuple[list[Any], list[int], list[Any], int]:
        """The messages due by `now`: (admitted, their re-delay counts, (expired,
        its re-delays) pairs, how many were re-delayed again).  At most `free` are admitted."""
        second = self.last = int(now)
        parts: list[Any] = []
        due_w = self.wheel.pop_due(now)
        if due_w:
            parts.append(np.frombuffer(due_w, dtype=np.int64))
        cohorts = self.cohorts
        if cohorts:
            ns, ps, live = [], [], []
            for c in cohorts:
                j = min(second - c[0], _WINDOW)
                done = c[3]
                if j <= done:
                    continue
                ns.append(c[2])
                ps.append(1.0 if j >= _WINDOW else (j - done) / (_WINDOW - 0.5 - done))
                live.append(c)
                c[3] = j
            if live:
                ds = self.gen.binomial(ns, ps).tolist()
                for c, d in zip(live, ds, strict=True):
                    if d:
                        n = c[2]
                        parts.append(c[1][n - d:n])
                        c[2] = n - d
            self.cohorts = cohorts = [c for c in cohorts if c[2] > 0]
        if not parts:
            return [], [], [], 0
        due = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        self._len -= len(due)
        expired: list[Any] = []
        if now >= self.soonest:
            late = np.frombuffer(self.deadline, dtype=np.float64)[due >> _SHIFT] <= now
            if late.any():
                msgs = self.msgs
                for v in due[late].tolist():
                    h = v >> _SHIFT
                    expired.append((msgs[h], v & _COUNT))
                    msgs[h] = None
                due = due[~late]
        self.gen.shuffle(due)
        take, rest = due[:free], due[free:]
        again = len(rest)
        if again:
            rest += 1  # one more re-delay each (`rest` is this tick's own array)
            # a draw that rounds to this very second is due again at once and,
            # nothing being free, re-delayed again: the same messages each time
            k = len(rest)
            while k:
                k = int(self.gen.binomial(k, _HALF_SECOND))
                if k:
                    rest[len(rest) - k:] += 1
                    again += k
            cohorts.append([second, rest, len(rest), 0])
            self._len += len(rest)
        admitted = []
        msgs = self.msgs
        for h in (take >> _SHIFT).tolist():
            admitted.append(msgs[h])
            msgs[h] = None
        return admitted, (take & _COUNT).tolist(), expired, again

    def remove_if(self, pred: Callable[[Any], bool]) -> list[tuple[Any, int]]:
        """Take out every held message matching `pred`, with its re-delays so
        far: O(held), for rare operations (an admin bounce)."""
        msgs = self.msgs
        hit = {h for h, m in enumerate(msgs) if m is not None and pred(m)}
        if not hit:
            return []
        counts: dict[int, int] = {}
        for v in self.wheel.remove_if(lambda v: v >> _SHIFT in hit):
            counts[v >> _SHIFT] = v & _COUNT
        wanted = np.fromiter(hit, dtype=np.int64, count=len(hit))
        for c in self.cohorts:
            arr = c[1][:c[2]]
            taken = np.isin(arr >> _SHIFT, wanted)
            for v in arr[taken].tolist():
                counts[v >> _SHIFT] = v & _COUNT
            keep = arr[~taken]
            c[1], c[2] = keep, len(keep)
        self.cohorts = [c for c in self.cohorts if c[2] > 0]
        out = []
        for h in sorted(hit):
            out.append((msgs[h], counts[h]))
            msgs[h] = None
        self._len -= len(out)
        return out
