"""engine.scheduled: the scheduled queue structure."""

from __future__ import annotations

from engine.message import SCHEDULED, Message, QueueInfo
from engine.scheduled import ScheduledQueues

Q = QueueInfo("example.com", "example.com", "", "", "", None, "unspecified")


def msg(i: int) -> Message:
    return Message(f"m{i}", "s@x.org", ("r@example.com",), 10, Q, 0.0)


def test_pop_due_in_due_then_arrival_order() -> None:
    s = ScheduledQueues()
    ms = [msg(i) for i in range(5)]
    for m, due in zip(ms, [30.0, 10.0, 10.0, 50.0, 20.0], strict=True):
        s.add(m, due)
    assert ms[0].where == SCHEDULED and len(s) == 5 and s.next_due() == 10.0
    assert [m.id for m in s.pop_due(20.0)] == ["m1", "m2", "m4"]
    assert s.next_due() == 30.0 and len(s) == 2
    assert s.pop_due(29.999) == []
    assert [m.id for m in s.pop_due(100.0)] == ["m0", "m3"]
    assert s.next_due() is None


def test_remove_and_remove_where() -> None:
    s = ScheduledQueues()
    ms = [msg(i) for i in range(4)]
    for i, m in enumerate(ms):
        s.add(m, float(i))
    s.remove(ms[1])
    assert ms[1].due is None and [m.id for m in s] == ["m0", "m2", "m3"]
    gone = s.remove_where(lambda m: m.id != "m2")
    assert [m.id for m in gone] == ["m0", "m3"] and [m.id for m in s] == ["m2"]
    assert s.due_of(ms[2]) == 2.0 and s.due_of(ms[0]) is None
