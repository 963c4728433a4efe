"""Random quantities of the simulated world: latencies and message sizes.

A scenario gives a latency or a size as a constant, as ``{median, p99}`` (a
lognormal fitted to those two quantiles, the usual shape of network and
server latencies: a floor, a bulk, and a long right tail), or as ``{min,
max}`` (uniform).  Each shape is a small frozen value built once when the
scenario is read, so the world's hot path only calls `sample`.

Two ways to draw, because the two callers differ:

- `sample(rng)` takes a `random.Random` and returns one float.  The world
  draws one latency per transaction phase, interleaved with other draws, and
  a `random.Random` method call is cheaper than a numpy call for one value.
  `Constant.sample` does not touch the generator at all, so a scenario with
  constant latencies costs no random draws.
- `sample_many(gen, n)` takes a `numpy.random.Generator` and returns an
  array: traffic generation draws message sizes in batches.

Nothing here knows about scenario files; parsing a spec (with error messages
that name the field) is `sim.scenario_schema`'s job.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np

from engine.snapshot import by_fields

# The standard normal quantile at 0.99: a lognormal with median m and sigma s
# has its 99th percentile at m * exp(Z99 * s).
Z99 = 2.3263478740408408


class Distribution(Protocol):
    """What the world and the traffic generator need of a random quantity."""

    def sample(self, rng: random.Random) -> float:
        """One draw."""
        ...

    def sample_many(self, gen: np.random.Generator, n: int) -> np.ndarray:
        """`n` draws as a float64 array."""
        ...

    @property
    def median(self) -> float:
        """The distribution's median (for summaries and closed-form bounds)."""
        ...

    @property
    def mean(self) -> float:
        """The distribution's mean (for closed-form bounds)."""
        ...


@dataclass(frozen=True, slots=True)
class Constant:
    """Always `value`; draws nothing from the generator."""

    value: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"a constant must be a finite number >= 0, got {self.value!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)  # compiled, a frozen class pickles no other way

    def sample(self, rng: random.Random) -> float:
        return self.value

    def sample_many(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.float64)

    @property
    def median(self) -> float:
        return self.value

    @property
    def mean(self) -> float:
        return self.value


@dataclass(frozen=True, slots=True)
class LogNormal:
    """A lognormal with the given median and 99th percentile (p99 > median > 0)."""

    median_value: float
    p99: float
    mu: float = 0.0
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.median_value) and self.median_value > 0):
            raise ValueError(f"median must be a number > 0, got {self.median_value!r}")
        if not (math.isfinite(self.p99) and self.p99 > self.median_value):
            raise ValueError(
                f"p99 must be greater than the median ({self.median_value!r}), got {self.p99!r}"
            )
        # Derived once here so sample() is one lognormvariate call.
        object.__setattr__(self, "mu", math.log(self.median_value))
        object.__setattr__(self, "sigma", (math.log(self.p99) - self.mu) / Z99)

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)

    def sample(self, rng: random.Random) -> float:
        """`rng.lognormvariate(mu, sigma)`: the same draws, the same float, by
        the standard library's own steps (`_lognormal`) in one call instead of
        three; where this Python's steps differ (`_SAME_STEPS`), its own method."""
        if _SAME_STEPS:
            return _lognormal(rng, self.mu, self.sigma)
        return rng.lognormvariate(self.mu, self.sigma)

    def sample_many(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return gen.lognormal(self.mu, self.sigma, n)

    @property
    def median(self) -> float:
        return self.median_value

    @property
    def mean(self) -> float:
        return math.exp(self.mu + self.sigma * self.sigma / 2.0)


@dataclass(frozen=True, slots=True)
class Uniform:
    """Uniform on [low, high] (low <= high, both >= 0)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and self.low >= 0):
            raise ValueError(f"min must be a number >= 0, got {self.low!r}")
        if not (math.isfinite(self.high) and self.high >= self.low):
            raise ValueError(f"max must be a number >= min ({self.low!r}), got {self.high!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)

    def sample(self, rng: random.Random) -> float:
        return self.low + (self.high - self.low) * rng.random()

    def sample_many(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return gen.uniform(self.low, self.high, n)

    @property
    def median(self) -> float:
        return (self.low + self.high) / 2.0

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2.0


ZERO = Constant(0.0)

_NV_MAGICCONST: Final = 4 * math.exp(-0.5) / math.sqrt(2.0)  # random.NV_MAGICCONST


def _lognormal(rng: random.Random, mu: float, sigma: float) -> float:
    """`random.Random.lognormvariate`'s steps (`normalvariate`'s
    Kinderman-Monahan ratio of uniforms), drawing from `rng` exactly as it does."""
    draw = rng.random
    while True:
        u1 = draw()
        u2 = 1.0 - draw()
        z = _NV_MAGICCONST * (u1 - 0.5) / u2
        if z * z / 4.0 <= -math.log(u2):
            return math.exp(mu + z * sigma)


def _same_steps() -> bool:
    """Whether `_lognormal` gives this Python's `random.Random.lognormvariate`
    exactly (checked once, at import, on fixed draws)."""
    ours, theirs = random.Random(20261207), random.Random(20261207)
    d = LogNormal(0.02, 0.25)
    return all(_lognormal(ours, d.mu, d.sigma) == theirs.lognormvariate(d.mu, d.sigma)
               for _ in range(2000)) and ours.random() == theirs.random()


# Final: a constant to the compiled build (no lookup per draw)
_SAME_STEPS: Final = _same_steps()
