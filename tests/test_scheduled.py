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


def test_messages_due_together_come_out_in_the_order_scheduled() -> None:
    """Ties in scheduling order (the slot of a timer wheel), not by id: and no
    entry is made per message, the list holds the messages themselves."""
    s = ScheduledQueues()
    ms = [msg(i) for i in range(6)]
    for i in (5, 1, 3, 0):
        s.add(ms[i], 10.0)
    s.add(ms[2], 5.0)
    assert all(type(m) is Message for m in s._items)
    assert [m.id for m in s.pop_due(10.0)] == ["m2", "m5", "m1", "m3", "m0"]
    s.add(ms[4], 7.0)
    s.add(ms[0], 7.0)
    s.remove(ms[4])
    assert [m.id for m in s] == ["m0"]


def test_a_list_of_pairs_from_an_earlier_snapshot_is_rekeyed_in_its_order() -> None:
    from sortedcontainers import SortedKeyList, SortedList

    from engine.scheduled import upgrade

    s = ScheduledQueues()
    ms = [msg(i) for i in range(4)]
    for m, due in zip(ms, [20.0, 10.0, 10.0, 5.0], strict=True):
        m._w = due
    s._items = SortedList((m._w, m) for m in ms)  # what a snapshot before held
    upgrade(s)
    assert type(s._items) is SortedKeyList
    assert [m.id for m in s] == ["m3", "m1", "m2", "m0"]
    s.add(msg(9), 10.0)  # and it works on: after its equals
    assert [m.id for m in s.pop_due(10.0)] == ["m3", "m1", "m2", "m9"]
    upgrade(s)  # a keyed list is left as it is
    assert [m.id for m in s] == ["m0"]
