"""engine.retry: the retry arithmetic and expiry text."""

from __future__ import annotations

import random

from engine.retry import expiry_text, retry_delay


class Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.value


def test_retry_delay_doubles_from_retry_interval() -> None:
    mid = Fixed(0.5)  # no jitter
    assert [retry_delay(1200.0, None, n, mid) for n in range(4)] == [1200.0, 2400.0, 4800.0,
                                                                        9600.0]


def test_retry_delay_capped_by_max_retry_interval() -> None:
    assert retry_delay(1200.0, 3000.0, 5, Fixed(0.5)) == 3000.0


def test_retry_jitter_is_plus_minus_half_of_min_interval_twentieth_and_60s() -> None:
    assert retry_delay(1200.0, None, 0, Fixed(0.0)) == 1200.0 - 30.0
    assert retry_delay(1200.0, None, 0, Fixed(1.0)) == 1200.0 + 30.0
    assert retry_delay(200.0, None, 0, Fixed(1.0)) == 205.0  # m = 10 s
    rng = random.Random(4)
    draws = [retry_delay(1200.0, None, 0, rng) for _ in range(200)]
    assert min(draws) >= 1170.0 and max(draws) <= 1230.0 and len(set(draws)) == 200


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
