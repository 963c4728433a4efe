"""An in-process model of the shared store (Redis) that N engines share.

It answers the engine's shared-limit effects with the arithmetic of the Redis
scripts the live driver runs (`engine.live.shared_redis`): a connection lease
is KumoMTA's sorted set (prune expired members, count, add, else the wait
until the earliest expiry), a throttle one GCRA step (`engine.throttle.gcra`,
the one copy of the rate arithmetic).  Time is passed in, so the simulator and
the engine tests drive it on their own clocks.
"""

from __future__ import annotations

import math

from engine.effects import AcquireLease, CheckThrottle, Effect, ExtendLease, ReleaseLease
from engine.events import LimitAnswered
from engine.throttle import gcra

__all__ = ["StoreModel"]


class StoreModel:
    """Leases and throttle states by key; `down` makes every ask fail."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, float]] = {}
        self.tats: dict[str, float] = {}
        self.down = False
        self.peak: dict[str, int] = {}  # key -> most leases held at once

    def acquire(self, key: str, limit: int, lease: str, ttl: float, now: float) -> float:
        held = self.leases.setdefault(key, {})
        for name in [n for n, exp in held.items() if exp <= now]:
            del held[name]
        if len(held) + 1 > limit:
            return max(min(held.values()) - now, 1e-6)
        held[lease] = now + ttl
        self.peak[key] = max(self.peak.get(key, 0), len(held))
        return 0.0

    def throttle(self, key: str, limit: int, period: float, burst: int, now: float) -> float:
        wait, tat = gcra(self.tats.get(key, -math.inf), now, period / limit, burst)
        self.tats[key] = tat
        return wait

    def answer(self, effect: Effect, now: float) -> LimitAnswered | None:
        """Carry out one shared-limit effect; its answer (None when it takes none)."""
        if isinstance(effect, AcquireLease | CheckThrottle) and self.down:
            return LimitAnswered(at=now, request=effect.request, error="store unavailable")
        if isinstance(effect, AcquireLease):
            wait = self.acquire(effect.key, effect.limit, effect.lease, effect.ttl, now)
            return LimitAnswered(at=now, request=effect.request, wait=wait)
        if isinstance(effect, CheckThrottle):
            wait = self.throttle(effect.key, effect.limit, effect.period, effect.burst, now)
            return LimitAnswered(at=now, request=effect.request, wait=wait)
        if isinstance(effect, ExtendLease) and not self.down:
            self.leases.setdefault(effect.key, {})[effect.lease] = now + effect.ttl
        elif isinstance(effect, ReleaseLease) and not self.down:
            self.leases.get(effect.key, {}).pop(effect.lease, None)
        return None
