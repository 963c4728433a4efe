"""The shared store in Redis: the live driver's answers to the engine's shared-limit asks.

The engine asks (`AcquireLease`, `ExtendLease`, `ReleaseLease`, `CheckThrottle`);
this module carries the asks out in Redis with redis-py's asyncio client and
feeds each answer back as a `LimitAnswered` event.  The arithmetic is
KumoMTA's (crates/throttle): a connection limit is a sorted set of leases
(member = lease, score = expiry; acquire prunes expired members, counts and
adds, else answers the wait until the earliest expiry); a throttle is one GCRA
step on a theoretical arrival time.  Two differences, both deliberate: the
scripts read Redis's own clock (``TIME``), so nodes with skewed clocks still
share one timeline, and they keep sub-second precision (KumoMTA's script
rounds waits up to whole seconds, which at 20/s would be a 20x coarser wait).
redis-cell's ``CL.THROTTLE`` is not used: Debian's redis-server has no module.

One round trip per loop iteration: every ask the engine made while handling
the events of one loop iteration goes into one pipeline (for a message, its
lease extension and its throttle checks travel together).

When Redis fails (refused, reset, timed out) every ask of the pipeline is
answered with an `error`; the engine then stops or falls back to local limits
(`engine.shared_limits`).  There is no retry here: the engine asks again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from engine.effects import AcquireLease, CheckThrottle, ExtendLease, ReleaseLease
from engine.events import Event, LimitAnswered

__all__ = ["RedisLimits"]

log = logging.getLogger("egress.live")

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

LEASE = _NOW + """
local ttl = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
if count + 1 > limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return string.format('%.6f', math.max(tonumber(first[2]) - now, 0.001))
end
redis.call('ZADD', KEYS[1], 'NX', now + ttl, ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 60)
return '0'
"""

EXTEND = _NOW + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 60)
return '0'
"""

GCRA = _NOW + """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now - interval * burst then tat = now - interval * burst end
local wait = tat - interval * (burst - 1) - now
if wait > 1e-6 then
  return string.format('%.6f', wait)
end
local new = math.max(tat, now) + interval
redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX',
           math.ceil((new - now) * 1000) + 1000)
return '0'
"""

_SCRIPTS = {"lease": LEASE, "extend": EXTEND, "gcra": GCRA}


class RedisLimits:
    """Carries out shared-limit effects against one Redis; answers with `handle_io`."""

    def __init__(self, url: str, handle_io: Callable[[Event], Any], *,
                 timeout: float = 1.0) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.handle_io = handle_io
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), decode_responses=True)
        self.loop = asyncio.get_running_loop()
        self.shas: dict[str, str] = {}
        self._batch: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        self.asks = 0
        self.errors = 0

    def effects(self) -> dict[type, Callable[[Any], None]]:
        """The driver's handlers for the shared-limit effects."""
        return dict.fromkeys((AcquireLease, ExtendLease, ReleaseLease, CheckThrottle),
                             self._enqueue)

    async def check(self) -> str | None:
        """Load the scripts; None when Redis answered, else why not (a start check)."""
        try:
            await self._load()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _load(self) -> None:
        for name, text in _SCRIPTS.items():
            self.shas[name] = await self.client.script_load(text)

    def _enqueue(self, effect: Any) -> None:
        if not self._batch:
            self.loop.call_soon(self._flush)
        self._batch.append(effect)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        task = self.loop.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _call(effect: Any) -> tuple[str, list[str], list[Any]]:
        if type(effect) is AcquireLease:
            return "lease", [effect.key], [effect.ttl, effect.limit, effect.lease]
        if type(effect) is CheckThrottle:
            return "gcra", [effect.key], [effect.period / effect.limit, effect.burst]
        if type(effect) is ExtendLease:
            return "extend", [effect.key], [effect.ttl, effect.lease]
        return "", [effect.key], [effect.lease]

    async def _execute(self, batch: list[Any], *, by_text: bool) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for effect in batch:
            name, keys, args = self._call(effect)
            if not name:
                pipe.zrem(keys[0], *args)
            elif by_text or name not in self.shas:
                pipe.eval(_SCRIPTS[name], len(keys), *keys, *args)
            else:
                pipe.evalsha(self.shas[name], len(keys), *keys, *args)
        self.round_trips += 1
        return list(await pipe.execute(raise_on_error=False))

    async def _run(self, batch: list[Any]) -> None:
        from redis.exceptions import NoScriptError

        error = ""
        results: list[Any] = []
        try:
            results = await self._execute(batch, by_text=False)
            again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if again:  # Redis restarted and lost its script cache: send those as text
                redo = await self._execute([batch[i] for i in again], by_text=True)
                for i, r in zip(again, redo, strict=True):
                    results[i] = r
                self.loop.create_task(self._reload())
        except Exception as exc:
            error = f"redis {self.url}: {type(exc).__name__}: {exc}"
            self.errors += 1
        now = time.time()
        for i, effect in enumerate(batch):
            if type(effect) not in (AcquireLease, CheckThrottle):
                continue
            self.asks += 1
            if error:
                self.handle_io(LimitAnswered(at=now, request=effect.request, error=error))
                continue
            result = results[i]
            if isinstance(result, Exception):
                self.handle_io(LimitAnswered(at=now, request=effect.request,
                                             error=f"redis: {result}"))
                continue
            self.handle_io(LimitAnswered(at=now, request=effect.request, wait=float(result)))

    async def _reload(self) -> None:
        try:
            await self._load()
        except Exception:
            log.warning("shared limits: could not reload the Redis scripts", exc_info=True)

    def release_all(self, leases: Any) -> None:
        """Give back every lease still held (a stop that aborted connections): the
        other nodes need not wait for their expiry."""
        for key, lease in list(leases):
            self._enqueue(ReleaseLease(key=key, lease=lease))

    async def close(self) -> None:
        """Send what is waiting, wait for what is on the way, close the client."""
        if self._batch:
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
