"""engine.retry: the retry arithmetic and expiry text."""

from __future__ import annotations

import random

import pytest

from engine.retry import expiry_text, retry_delay


class Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.value


# KumoMTA's retry rule, transcribed from its source as the reference these
# tests check against (crates/kumod/src/queue/config.rs, QueueConfig::
# delay_for_attempt; crates/kumod/src/queue/queue.rs, increment_attempts_and_
# update_delay):
#   base   = min(retry_interval * 2**num_attempts, max_retry_interval)
#   J      = min(retry_interval / 20, 60 s)
#   jitter = rand::random::<f32>() * J - J / 2        (uniform in [-J/2, J/2))
# KumoMTA then truncates the jittered delay to whole seconds (`jitter as i64`);
# egress keeps the fraction on purpose (its clock is a float), so the bounds
# below are KumoMTA's interval before truncation.


def kumo_base(retry_interval: float, max_retry_interval: float | None, attempt: int) -> float:
    delay = retry_interval * 2**attempt
    return delay if max_retry_interval is None else min(delay, max_retry_interval)


def kumo_jitter_magnitude(retry_interval: float) -> float:
    return min(retry_interval / 20.0, 60.0)


def test_retry_delay_doubles_from_retry_interval() -> None:
    mid = Fixed(0.5)  # the middle of the jitter interval: KumoMTA's base delay
    assert [retry_delay(1200.0, None, n, mid) for n in range(4)] == [
        kumo_base(1200.0, None, n) for n in range(4)] == [1200.0, 2400.0, 4800.0, 9600.0]


def test_retry_delay_capped_by_max_retry_interval() -> None:
    assert retry_delay(1200.0, 3000.0, 5, Fixed(0.5)) == kumo_base(1200.0, 3000.0, 5) == 3000.0


@pytest.mark.parametrize(("interval", "maximum", "attempt"),
                         [(1200.0, None, 0), (200.0, None, 2), (7200.0, None, 1),
                          (30.0, 100.0, 6)])
def test_retry_jitter_is_plus_minus_half_of_min_interval_twentieth_and_60s(
    interval: float, maximum: float | None, attempt: int,
) -> None:
    base, j = kumo_base(interval, maximum, attempt), kumo_jitter_magnitude(interval)
    rng = random.Random(4)
    draws = [retry_delay(interval, maximum, attempt, rng) for _ in range(2000)]
    assert all(base - j / 2 <= d <= base + j / 2 for d in draws), (min(draws), max(draws))
    # Uniform over the whole interval: the ends are reached and the mean is the
    # base (2,000 draws put the mean within 0.05 J of it with overwhelming odds).
    assert min(draws) < base - 0.45 * j and max(draws) > base + 0.45 * j
    assert abs(sum(draws) / len(draws) - base) < 0.05 * j
    # The generator's extremes land exactly on KumoMTA's ends.
    assert retry_delay(interval, maximum, attempt, Fixed(0.0)) == base - j / 2
    assert retry_delay(interval, maximum, attempt, Fixed(1.0)) == base + j / 2


def test_defaults_expire_after_nine_attempts_about_85_hours() -> None:
    at, attempts, mid = 0.0, 0, Fixed(0.5)
    max_age = 7 * 86400.0
    while True:
        attempts += 1
        due = at + retry_delay(1200.0, None, attempts - 1, mid)
        if due > max_age:
            break
        at = due
    assert attempts == 9
    assert at == 1200.0 * 255  # 85 h


def test_expiry_text() -> None:
    assert expiry_text(1_700_000_000.0, 100.0, 50.0) == (
        "Next delivery time would be at 2023-11-14T22:15:00Z which exceeds the expiry time "
        "2023-11-14T22:14:10Z")


