"""engine.live.shared_redis against a real redis-server: leases, GCRA, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.effects import AcquireLease, CheckThrottle, ExtendLease, ReleaseLease
from engine.events import Event, LimitAnswered
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


async def _ask(limits: Any, answers: list[LimitAnswered], effects: list[Any]) -> None:
    before = len(answers)
    want = sum(1 for e in effects if isinstance(e, AcquireLease | CheckThrottle))
    for e in effects:
        limits.effects()[type(e)](e)
    for _ in range(200):
        if len(answers) - before >= want:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no answer from Redis")


def _limits(url: str, answers: list[LimitAnswered]) -> Any:
    from engine.live.shared_redis import RedisLimits

    def handle(ev: Event) -> bool:
        assert isinstance(ev, LimitAnswered)
        answers.append(ev)
        return True

    return RedisLimits(url, handle, timeout=0.5)


def test_leases_count_extend_and_release_in_one_pipeline() -> None:
    async def main(url: str) -> None:
        answers: list[LimitAnswered] = []
        limits = _limits(url, answers)
        assert await limits.check() is None
        asks = [AcquireLease(request=i, key="k", limit=3, lease=f"l{i}", ttl=30.0)
                for i in range(5)]
        await _ask(limits, answers, asks)
        assert limits.round_trips == 1  # five asks, one round trip
        assert [a.wait == 0.0 for a in answers] == [True, True, True, False, False]
        assert 29.0 < answers[3].wait <= 30.0  # until the earliest lease expires
        await _ask(limits, answers, [ExtendLease(key="k", lease="l0", ttl=30.0),
                                     ReleaseLease(key="k", lease="l1"),
                                     AcquireLease(request=9, key="k", limit=3, lease="l9",
                                                  ttl=30.0)])
        assert answers[-1].request == 9 and answers[-1].wait == 0.0
        await limits.close()

    with RedisServer() as redis:
        asyncio.run(main(redis.url))


def test_gcra_admits_the_burst_then_answers_the_wait() -> None:
    async def main(url: str) -> None:
        answers: list[LimitAnswered] = []
        limits = _limits(url, answers)
        await limits.check()
        asks = [CheckThrottle(request=i, key="t", limit=20, period=1.0, burst=5)
                for i in range(7)]
        await _ask(limits, answers, asks)
        waits = [a.wait for a in answers]
        assert waits[:5] == [0.0] * 5
        assert 0.0 < waits[5] <= 0.05 and 0.0 < waits[6] <= 0.05
        await asyncio.sleep(0.06)
        await _ask(limits, answers, asks[:1])
        assert answers[-1].wait == 0.0
        await limits.close()

    with RedisServer() as redis:
        asyncio.run(main(redis.url))


def test_redis_gone_answers_every_ask_with_an_error_then_recovers() -> None:
    async def main(redis: RedisServer) -> None:
        answers: list[LimitAnswered] = []
        limits = _limits(redis.url, answers)
        await limits.check()
        redis.stop()
        await _ask(limits, answers, [
            AcquireLease(request=1, key="k", limit=3, lease="a", ttl=30.0),
            CheckThrottle(request=2, key="t", limit=20, period=1.0, burst=5)])
        assert [a.request for a in answers] == [1, 2]
        assert all(a.error.startswith(f"redis {redis.url}:") for a in answers)
        redis.start()  # empty: the script cache is gone too
        await _ask(limits, answers, [
            AcquireLease(request=3, key="k", limit=3, lease="a", ttl=30.0)])
        assert answers[-1].error == "" and answers[-1].wait == 0.0
        await limits.close()

    with RedisServer() as redis:
        asyncio.run(main(redis))
