"""Choosing the egress source of a message: smooth weighted round robin.

KumoMTA picks a source from the message's egress pool by weighted round robin.
We use nginx's *smooth* variant (each pick adds every weight to its running
score, takes the highest, and subtracts the total from the winner): it is
deterministic, spreads a 3:1 pool as a,a,b,a rather than a,a,a,b, and needs
no randomness, so a replay picks the same sources in the same order.
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
