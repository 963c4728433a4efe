"""engine.ready: KumoMTA's connection ramp."""

from __future__ import annotations

import pytest

from engine.ready import ideal_connections


@pytest.mark.parametrize(("q", "ideal"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 3), (5, 4),
                                          (10, 7), (20, 12), (32, 17), (64, 25), (128, 31),
                                          (256, 32), (400, 32), (1024, 32), (10000, 32)])
def test_ideal_connection_count_matches_kumomta_table_for_limit_32(q: int, ideal: int) -> None:
    # crates/kumod/src/ready_queue.rs, test connection_limit_32
    assert ideal_connections(32, q) == ideal
