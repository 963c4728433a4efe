"""Choosing the egress source of a message: smooth weighted round robin.

KumoMTA picks a source from the message's egress pool by weighted round robin.
We use nginx's *smooth* variant (each pick adds every weight to its running
score, takes the highest, and subtracts the total from the winner): it is
deterministic, spreads a 3:1 pool as a,a,b,a rather than a,a,a,b, and needs
no randomness, so a replay picks the same sources in the same order.

`pick_among` is the same pick over a subset: KumoMTA's ``select_and_insert``
(crates/kumod/src/egress_source.rs) drops a source that cannot take the
message (its ready queue full, its ``source_selection_rate`` spent) and runs
the round robin again over the rest; a skipped source's score does not grow
meanwhile, so it gets no burst of catch-up picks when it is eligible again.
"""

from __future__ import annotations

from collections.abc import Sequence


class WeightedRoundRobin:
    """Smooth weighted round robin over ``(name, weight)`` entries."""

    __slots__ = ("_current", "_names", "_total", "_weights", "names")

    def __init__(self, entries: Sequence[tuple[str, int]]) -> None:
        usable = [(n, int(w)) for n, w in entries if int(w) > 0]
        if not usable:
            raise ValueError(f"egress pool has no source with a positive weight: {entries!r}")
        self._names = [n for n, _ in usable]
        self._weights = [w for _, w in usable]
        self._current = [0] * len(usable)
        self._total = sum(self._weights)
        self.names = tuple(self._names)  # the sources it picks from, in pool order

    def pick(self) -> str:
        """The next source name."""
        if len(self._names) == 1:
            return self._names[0]
        current = self._current
        best = 0
        for i, w in enumerate(self._weights):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return self._names[best]

    def pick_among(self, allowed: frozenset[str] | set[str]) -> str | None:
        """The next source name among `allowed` (None when no source is allowed);
        the others' scores are left as they are."""
        current = self._current
        best = -1
        total = 0
        for i, name in enumerate(self._names):
            if name not in allowed:
                continue
            w = self._weights[i]
            total += w
            current[i] += w
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return self._names[best]
