"""Latencies that the lab realises on time, and what the lab measures of the client.

Why a lab server does not simply ``await asyncio.sleep(latency)``: an
asyncio timer wakes late.  The selector's timeout is rounded up to whole
milliseconds (epoll), and the loop runs the timer only once it has finished
whatever callbacks were ready, which in a lab shared with the engine (or on
a loaded machine) is another 1-3 ms.  Measured on a 2-core machine the mean
lateness was 0.85-1.4 ms per sleep, 2-3 ms under load: on a 5 ms command
latency that is a fifth more than the scenario says, and the simulator, which
realises latencies exactly, then looks wrong when it is the lab that is.

`Pacer` fixes that the cheap way, without spinning the CPU (which would
steal the core the engine needs):

- a latency is measured from a deadline on ``loop.time()`` taken when the
  request arrived, not from when the handler got round to sleeping, so time
  spent in the lab's own code is part of the latency, not added to it;
- the pacer keeps a running mean of how late its timers actually fire and
  asks to be woken that much *before* the deadline.  The realised latency is
  then right on average (its mean is what the scenario asks; single replies
  scatter by the lateness's own spread), which is what drain times and rates
  are sums of.

`Pacer.stats()` reports what it saw (mean lateness before and after the
correction), and `Turnaround` what the client took: the time from a reply
the client must answer at once (the banner, EHLO's, DATA's 354) to its next
bytes.  That is the client's own time per round trip (its event loop,
the engine, encoding, loopback), the figure a scenario's
``[client] round_trip_overhead`` stands for, so the lab measures it for the
simulator.

`ConnectTimes` measures the client's other cost, per connection: from the
engine's ``Connect`` effect to the ``Connected`` event the driver feeds back
once the TCP connection is made (the task starting, the socket, the
connect, the loop noticing it completed).  The server's ``connect_latency``
starts only after that (the banner waits for it), so this is the client's
time alone, what ``[client] connect_overhead`` stands for.  It is measured in
the engine's process (`lab.run`), since the server cannot see when the client
decided to connect.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

INITIAL_LAG = 0.0005  # seconds: half of epoll's millisecond rounding, before any measurement
LAG_WEIGHT = 0.05  # weight of each new measurement in the running mean (about 20 sleeps)
MAX_LAG = 0.005  # never wake more than this much early, whatever the load did to the mean
SAMPLE_CAP = 100_000  # turnaround samples kept for the median


@dataclass(frozen=True, slots=True)
class PacerStats:
    """What a pacer saw: sleeps, mean lateness of the timer (``wake_lag``) and
    of the realised latency against the deadline (``error``), in seconds."""

    sleeps: int
    wake_lag: float
    error: float
    abs_error: float


class Pacer:
    """Sleeps that end on their deadline on average (one per lab process)."""

    __slots__ = ("_abs_error", "_error", "_lag_sum", "compensate", "lag", "sleeps")

    def __init__(self, *, compensate: bool = True) -> None:
        self.compensate = compensate
        self.lag = INITIAL_LAG if compensate else 0.0
        self.sleeps = 0
        self._lag_sum = 0.0
        self._error = 0.0
        self._abs_error = 0.0

    async def sleep(self, delay: float, start: float | None = None) -> None:
        """Sleep until `start` + `delay` on the loop's clock (`start`: now when None)."""
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        if start is None:
            start = loop.time()
        deadline = start + delay
        wake = deadline - self.lag
        now = loop.time()
        if wake > now:
            future = loop.create_future()
            handle = loop.call_at(wake, _set_done, future)
            try:
                await future
            finally:
                handle.cancel()
            woke = loop.time()
            late = woke - wake
            self._lag_sum += late
            if self.compensate:
                self.lag = min(MAX_LAG, self.lag + LAG_WEIGHT * (late - self.lag))
        else:
            woke = now
        self.sleeps += 1
        error = woke - deadline
        self._error += error
        self._abs_error += abs(error)

    def stats(self) -> PacerStats:
        """Means over every sleep so far (zeros before the first)."""
        n = self.sleeps or 1
        return PacerStats(self.sleeps, self._lag_sum / n, self._error / n, self._abs_error / n)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Turnaround:
    """One connection's side of the client's turnaround: the time from a reply
    the client must answer at once to its next bytes, added to a shared list.

    Only replies that admit no waiting count (the banner, EHLO's, DATA's
    354): after a delivery's 250 the client may rightly wait (for the next
    message, or for a throttle), which is not its own overhead."""

    __slots__ = ("_pending", "samples")

    def __init__(self, samples: list[float]) -> None:
        self._pending: float | None = None
        self.samples = samples

    def replied(self, at: float) -> None:
        """A reply the client answers at once was written at `at`."""
        self._pending = at

    def received(self, at: float) -> None:
        """Bytes from the client arrived at `at`."""
        if self._pending is not None:
            if len(self.samples) < SAMPLE_CAP:
                self.samples.append(at - self._pending)
            self._pending = None


def turnaround_summary(samples: list[float]) -> dict[str, float]:
    """Count, mean and median (seconds) of turnaround samples."""
    ordered = sorted(samples)
    count = len(ordered)
    if not count:
        return {"count": 0, "mean": 0.0, "median": 0.0}
    return {"count": count, "mean": sum(ordered) / count, "median": ordered[count // 2]}


class ConnectTimes:
    """The client's cost of opening connections: ``Connect`` effect to ``Connected``.

    `started` when the engine asks for a connection, `connected` when the
    driver reports it made; attempts that fail (refused, timed out) leave no
    sample, their time being the failure's, not the client's.
    """

    __slots__ = ("_started", "samples")

    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self.samples: list[float] = []

    def started(self, conn: int, at: float) -> None:
        """The engine asked for connection `conn` at `at`."""
        self._started[conn] = at

    def connected(self, conn: int, at: float) -> None:
        """Connection `conn` was made at `at` (ignored if never started)."""
        began = self._started.pop(conn, None)
        if began is not None and len(self.samples) < SAMPLE_CAP:
            self.samples.append(at - began)

    def forget(self, conn: int) -> None:
        """Connection `conn` failed or closed before it was made."""
        self._started.pop(conn, None)

    def summary(self) -> dict[str, float]:
        """Count, mean and median, in milliseconds, like ``client_turnaround``."""
        s = turnaround_summary(self.samples)
        return {"count": s["count"], "mean_ms": s["mean"] * 1e3, "median_ms": s["median"] * 1e3}
