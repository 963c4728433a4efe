"""engine.overflow: the whole-second wheel of messages a full ready queue turned away."""

from __future__ import annotations

import math
import random

import pytest

from engine.overflow import SPREAD, Fill, OverflowWheel, handles


def _dues(seed: int, n: int, now: float, spread: float = SPREAD) -> list[float]:
    """The due times the engine's per-message rule draws today: uniform(0, spread) each."""
    rng = random.Random(seed)
    return [now + rng.uniform(0.0, spread) for _ in range(n)]


def test_each_message_lands_in_the_second_after_its_own_draw() -> None:
    wheel: OverflowWheel = OverflowWheel()
    now = 1234.25
    assert wheel.add(range(500), now, random.Random(7)) == 500
    dues = _dues(7, 500, now)
    released: dict[int, int] = {}
    for second in range(int(now), int(now + SPREAD) + 3):
        for item in wheel.pop_due(float(second)):
            released[item] = second
    assert len(released) == 500 and not wheel
    for item, due in enumerate(dues):
        # never early, at most one second late, never in the second it was re-delayed
        assert due < released[item] <= due + 1.0
        assert released[item] == math.floor(due) + 1
        assert released[item] > now


def test_the_random_stream_is_the_engines_one_draw_per_message() -> None:
    """After re-delaying k messages the generator is where k uniform draws leave it."""
    ours, theirs = random.Random(3), random.Random(3)
    OverflowWheel().add([5] * 37, 50.0, ours)
    for _ in range(37):
        theirs.uniform(0.0, 60.0)
    assert ours.random() == theirs.random()


def test_pop_due_returns_nothing_early_and_everything_due_in_order() -> None:
    wheel: OverflowWheel = OverflowWheel(spread=0.25)  # these draws land at floor(now) + 1
    wheel.add([1, 2], 10.0, random.Random(1))
    wheel.add([3], 10.5, random.Random(2))
    wheel.add([4], 11.2, random.Random(3))
    assert wheel.next_due() == 11.0
    assert wheel.pop_due(10.99) == handles()
    assert wheel.pop_due(11.0) == handles([1, 2, 3])  # one second, in the order added
    assert wheel.next_due() == 12.0 and len(wheel) == 1
    assert wheel.pop_due(50.0) == handles([4])
    assert wheel.next_due() is None and len(wheel) == 0


def test_a_late_pop_takes_several_seconds_earliest_first() -> None:
    wheel: OverflowWheel = OverflowWheel(spread=0.25)
    wheel.add([2], 13.0, random.Random(0))
    wheel.add([1], 12.0, random.Random(0))
    assert wheel.pop_due(20.0) == handles([1, 2])


def test_fill_admits_the_first_free_and_redelays_the_rest_in_one_batch() -> None:
    wheel: OverflowWheel = OverflowWheel()
    rng = random.Random(5)
    assert wheel.fill(handles([1, 2, 3, 4, 5]), 2, 100.0, rng) == Fill(handles([1, 2]), 3)
    assert len(wheel) == 3 and wheel.redelays == 3
    assert sorted(wheel) == [3, 4, 5]
    assert all(100.0 < s <= 161.0 for s in [wheel.next_due() or 0.0])
    # room for all: nothing re-delayed, no draw taken
    before = rng.getstate()
    assert wheel.fill(handles([6, 7]), 5, 100.0, rng) == Fill(handles([6, 7]), 0)
    assert rng.getstate() == before
    with pytest.raises(ValueError, match="free slots cannot be negative"):
        wheel.fill(handles([1]), -1, 100.0, rng)


def test_a_full_queue_round_trip_keeps_every_message() -> None:
    """A steady full ready queue: each second, what is due is popped, `free` admitted,
    the rest re-delayed.  No message is lost or duplicated."""
    wheel: OverflowWheel = OverflowWheel()
    rng = random.Random(11)
    wheel.add(range(5_000), 0.0, rng)
    admitted: list[int] = []
    t = 0.0
    while wheel:
        t += 1.0
        admitted.extend(wheel.fill(wheel.pop_due(t), 40, t, rng).admitted)
    assert sorted(admitted) == list(range(5_000))
    assert wheel.redelays > 5_000  # the backlog went round more than once


def test_occupied_seconds_stay_within_the_spread_whatever_the_backlog() -> None:
    wheel: OverflowWheel = OverflowWheel()
    wheel.add(range(200_000), 7.5, random.Random(2))
    assert len(wheel) == 200_000
    assert len(wheel._seconds) <= math.ceil(SPREAD) + 1
    assert len(wheel._slots) == len(wheel._seconds)


def test_re_delaying_before_the_last_pop_is_refused() -> None:
    wheel: OverflowWheel = OverflowWheel()
    wheel.pop_due(30.0)
    with pytest.raises(ValueError, match=r"already popped to t=30"):
        wheel.add([1], 29.0, random.Random(0))
    wheel.add([1], 30.0, random.Random(0))  # the same instant is fine: it lands later
    assert (wheel.next_due() or 0.0) > 30.0


def test_remove_if_and_drain() -> None:
    wheel: OverflowWheel = OverflowWheel()
    wheel.add(range(100), 0.0, random.Random(4))
    odd = wheel.remove_if(lambda m: m % 2 == 1)
    assert sorted(odd) == list(range(1, 100, 2))
    assert len(wheel) == 50 and sorted(wheel) == list(range(0, 100, 2))
    assert len(wheel.remove_if(lambda m: False)) == 0
    due = wheel.next_due()
    assert due is not None and due == min(int(d) + 1 for i, d in
                                         enumerate(_dues(4, 100, 0.0)) if i % 2 == 0)
    assert sorted(wheel.drain()) == list(range(0, 100, 2))
    assert len(wheel) == 0 and wheel.next_due() is None and len(wheel.pop_due(1e9)) == 0


def test_same_seed_same_layout() -> None:
    a: OverflowWheel = OverflowWheel()
    b: OverflowWheel = OverflowWheel()
    a.add(range(1000), 3.3, random.Random(9))
    b.add(range(1000), 3.3, random.Random(9))
    assert list(a) == list(b) and a.next_due() == b.next_due()


@pytest.mark.parametrize("spread", [0.0, -1.0, float("nan")])
def test_a_spread_that_is_not_positive_is_refused(spread: float) -> None:
    with pytest.raises(ValueError, match="spread must be a positive number of seconds"):
        OverflowWheel(spread=spread)


def test_entries_and_restore_rebuild_the_wheel_exactly() -> None:
    wheel: OverflowWheel = OverflowWheel()
    wheel.add(range(300), 12.5, random.Random(8))
    copy: OverflowWheel = OverflowWheel()
    copy.restore(wheel.entries())
    assert copy.entries() == wheel.entries() and len(copy) == 300
    assert copy.next_due() == wheel.next_due()
    assert copy.pop_due(40.0) == wheel.pop_due(40.0)
    with pytest.raises(ValueError, match="restore needs an empty wheel"):
        copy.restore([(99, 1)])


def test_add_one_draws_as_add_does() -> None:
    """`add_one` is `add` of a single handle: the same draw, the same second."""
    one, many = OverflowWheel(), OverflowWheel()
    r1, r2 = random.Random(9), random.Random(9)
    for i in range(500):
        one.add_one(i, i * 0.37, r1)
        many.add((i,), i * 0.37, r2)
    assert one.entries() == many.entries() and len(one) == len(many) == 500
    assert one.redelays == many.redelays == 500
    one.pop_due(100.0)
    with pytest.raises(ValueError, match="already popped"):
        one.add_one(501, 50.0, r1)
