"""engine.metrics: counters flattened into KumoMTA's metric names."""

from __future__ import annotations

from engine import metrics
from engine.metrics import Counters


def test_snapshot_flattens_totals_paths_and_providers_sorted() -> None:
    c = Counters()
    c.bump(metrics.DELIVERED, "s->site", "gmail")
    c.bump(metrics.DELIVERED, "s->site", "gmail")
    c.bump(metrics.EXPIRED)
    snap = c.snapshot({"s->site": 3}, {"s->site": 1})
    assert snap["total_messages_delivered"] == 2
    assert snap['total_messages_delivered{path="s->site"}'] == 2
    assert snap['total_messages_delivered{provider="gmail"}'] == 2
    assert snap["total_messages_expired"] == 1
    assert 'total_messages_expired{path=""}' not in snap
    assert snap["ready_count"] == 3 and snap['ready_count{path="s->site"}'] == 3
    assert snap["connection_count"] == 1
    assert list(snap) == sorted(snap)
