"""engine.pools: egress source choice."""

from __future__ import annotations

import pytest

from engine.pools import WeightedRoundRobin


def test_smooth_weighted_round_robin() -> None:
    rr = WeightedRoundRobin((("a", 3), ("b", 1)))
    assert [rr.pick() for _ in range(8)] == ["a", "a", "b", "a", "a", "a", "b", "a"]
    rr2 = WeightedRoundRobin((("a", 1), ("b", 1), ("c", 1)))
    assert [rr2.pick() for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    with pytest.raises(ValueError, match="no source with a positive weight"):
        WeightedRoundRobin((("a", 0),))
