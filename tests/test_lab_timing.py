"""lab.timing: paced sleeps end on their deadline on average; the client's turnaround."""

from __future__ import annotations

import asyncio
import random

import pytest

from lab.timing import ConnectTimes, Pacer, Turnaround, turnaround_summary


def _interleaved(n: int) -> tuple[Pacer, Pacer]:
    """`n` sleeps each of a plain and a paced pacer, alternating, so both see the
    same load; delays of random fractions of a millisecond, as latencies drawn
    from a distribution are (epoll rounds every timeout up to a whole ms)."""
    plain, paced = Pacer(compensate=False), Pacer()

    async def main() -> None:
        rng = random.Random(3)
        for _ in range(n):
            await plain.sleep(rng.uniform(0.001, 0.003))
            await paced.sleep(rng.uniform(0.001, 0.003))

    asyncio.run(main())
    return plain, paced


def test_plain_sleeps_are_late_and_paced_ones_on_time_on_average() -> None:
    plain, paced = _interleaved(300)
    p, q = plain.stats(), paced.stats()
    assert (p.sleeps, q.sleeps) == (300, 300)
    assert p.error > 0.0001  # asyncio timers fire late: at least 0.1 ms on average
    assert p.error == pytest.approx(p.wake_lag)  # without pacing the lateness is the error
    assert abs(q.error) < p.error / 2, (p, q)
    assert plain.lag == 0.0 and 0 < paced.lag <= 0.005


def test_the_latency_runs_from_its_start_not_from_the_call() -> None:
    async def main() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(compensate=False)
        start = loop.time()
        await asyncio.sleep(0.01)  # work done after the request arrived
        called = loop.time()
        await pacer.sleep(0.005, start)  # already past: returns at once
        stats = pacer.stats()
        assert stats.sleeps == 1
        # No timer was armed (a timer's wake adds its lateness, never exactly 0),
        # and the realised latency is what the work took, not work + 5 ms.
        assert stats.wake_lag == 0.0
        return called - start, stats.error, loop.time() - called

    worked, error, _ = asyncio.run(main())
    assert worked >= 0.01  # asyncio never wakes early
    assert error == pytest.approx(worked - 0.005, abs=0.0005)


def test_a_latency_still_ahead_is_slept_from_its_start() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        pacer = Pacer(compensate=False)
        start = loop.time()
        await asyncio.sleep(0.01)
        await pacer.sleep(0.05, start)  # 10 ms of it already spent
        return loop.time() - start

    assert asyncio.run(main()) >= 0.05  # the lower bound: from the start, never early


def test_no_sleep_for_a_zero_delay() -> None:
    pacer = Pacer()
    asyncio.run(pacer.sleep(0.0))
    assert pacer.stats().sleeps == 0


def test_turnaround_counts_the_first_bytes_after_a_reply_that_needs_an_answer() -> None:
    samples: list[float] = []
    t = Turnaround(samples)
    t.received(1.0)  # nothing pending: not a sample
    t.replied(2.0)
    t.received(2.0004)
    t.received(2.5)  # only the first bytes after a reply count
    t.replied(4.0)
    t.received(4.001)
    t.replied(5.0)
    t.received(5.2)  # a slow client is still counted
    assert samples == pytest.approx([0.0004, 0.001, 0.2])
    assert turnaround_summary(samples) == pytest.approx(
        {"count": 3, "mean": (0.0004 + 0.001 + 0.2) / 3, "median": 0.001})
    assert turnaround_summary([]) == {"count": 0, "mean": 0.0, "median": 0.0}


def test_connect_times_run_from_the_connect_effect_to_connected() -> None:
    c = ConnectTimes()
    c.started(1, 10.0)
    c.started(2, 10.5)
    c.started(3, 11.0)
    c.connected(2, 10.5015)
    c.forget(3)  # refused: no sample
    c.connected(3, 11.2)  # ...and nothing later either
    c.connected(9, 12.0)  # never started
    c.connected(1, 10.0005)
    c.connected(1, 10.9)  # counted once
    assert c.samples == pytest.approx([0.0015, 0.0005])
    assert c.summary() == pytest.approx({"count": 2, "mean_ms": 1.0, "median_ms": 1.5})
    assert ConnectTimes().summary() == {"count": 0, "mean_ms": 0.0, "median_ms": 0.0}
