"""Retry arithmetic: when a transiently failed message is next due, or that it expires.

KumoMTA's scheduled queue waits ``retry_interval * 2**n`` after the n-th
failure (n counts the attempts before the failed one, so the first retry waits
exactly ``retry_interval``), capped at ``max_retry_interval`` when set, plus a
jitter uniform in +/- m/2 where ``m = min(retry_interval / 20, 60 s)``.  A
message whose age plus that delay would pass ``max_age`` is expired now rather
than kept for an attempt it is not allowed to make.

Pure: the jitter comes from the generator the engine passes in.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

MAX_DOUBLINGS = 62  # 2**62 * any sane interval is already past every max_age


def retry_delay(
    retry_interval: float,
    max_retry_interval: float | None,
    attempts_before: int,
    rng: random.Random,
) -> float:
    """Seconds until the next attempt after a failure (jitter included, never < 0)."""
    delay = retry_interval * (2.0 ** min(max(attempts_before, 0), MAX_DOUBLINGS))
    if max_retry_interval is not None and delay > max_retry_interval:
        delay = max_retry_interval
    m = min(retry_interval / 20.0, 60.0)
    if m > 0:
        delay += rng.uniform(-m / 2.0, m / 2.0)
    return max(delay, 0.0)


def iso(epoch: float, at: float) -> str:
    """RFC 3339 UTC text of simulated/live time `at` (seconds after `epoch`)."""
    return datetime.fromtimestamp(epoch + at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expiry_text(epoch: float, next_due: float, expires: float) -> str:
    """The content of KumoMTA's ``551 5.4.7`` Expiration response."""
    return (
        f"Next delivery time would be at {iso(epoch, next_due)} "
        f"which exceeds the expiry time {iso(epoch, expires)}"
    )
