"""A blast (every message at t=0) behind a full ready queue: the lazy backlog
(`engine.backlog`, the simulator's default) against the per-message rule
(`exact=True`, what live delivery does).

The two draw from different random streams, so they are compared as
distributions: over 20 seeds each, drain time, time to deliver (p50, p95,
p99) and re-delay counts must agree within the spread between seeds (a
Welch two-sample test, and the difference of the means within one
between-seed standard deviation).
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import numpy as np
import pytest

from engine.backlog import Backlog
from sim.result import run
from sim.scenario import Scenario

SEEDS = range(20)
MESSAGES = 1500


def blast(seed: int, messages: int = MESSAGES) -> Scenario:
    """`messages` at once on one path of two connections, max_ready 20: about
    ten re-delays per message, drained in a few minutes of simulated time."""
    return Scenario.from_dict({
        "name": "small-blast", "seed": seed, "horizon": "2h", "sample_interval": "60s",
        "traffic": [{"domain": "example.com", "messages": messages, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 10}]}},
        "hosts": {"mx.example.com": {
            "connect_latency": {"median": "20ms", "p99": "200ms"},
            "command_latency": {"median": "20ms", "p99": "200ms"},
            "data_latency": {"median": "100ms", "p99": "1s"},
            "tls_latency": "5ms",
            "tempfail_rcpt": 0.01,
        }},
        "egress_path": {"enable_tls": "Disabled", "connection_limit": 2, "max_ready": 20},
        "queue": {"retry_interval": "2min"},
    })


FIGURES = ("drain_time", "time_to_deliver_p50", "time_to_deliver_p95", "time_to_deliver_p99",
           "redelays", "delayed_once", "redelays_p50", "redelays_p95")


def figures(summary: dict[str, Any]) -> dict[str, float]:
    (path,) = summary["redelays"].values()
    out = {k: float(summary[k]) for k in FIGURES[:4]}
    out["redelays"] = float(path["redelays"])
    out["delayed_once"] = float(path["messages_delayed_at_least_once"])
    out["redelays_p50"] = float(path["redelays_per_delayed_message_p50"])
    out["redelays_p95"] = float(path["redelays_per_delayed_message_p95"])
    return out


@pytest.fixture(scope="module")
def runs() -> dict[bool, list[dict[str, float]]]:
    return {exact: [figures(run(blast(s), exact=exact, keep_records=False).summary)
                    for s in SEEDS] for exact in (False, True)}


@pytest.mark.parametrize("figure", FIGURES)
def test_lazy_and_exact_agree_over_seeds(runs: dict[bool, list[dict[str, float]]],
                                         figure: str) -> None:
    fast = [r[figure] for r in runs[False]]
    exact = [r[figure] for r in runs[True]]
    spread = max(statistics.stdev(fast), statistics.stdev(exact))
    diff = statistics.mean(fast) - statistics.mean(exact)
    se = math.sqrt(statistics.variance(fast) / len(fast) + statistics.variance(exact) / len(exact))
    detail = f"{figure}: lazy {statistics.mean(fast):.2f} exact {statistics.mean(exact):.2f} " \
             f"(between-seed spread {spread:.2f})"
    if spread == 0.0:
        assert diff == 0.0, detail
        return
    assert abs(diff) <= spread, detail
    assert abs(diff) / se < 4.0, detail  # Welch's t


def test_the_blast_really_redelays(runs: dict[bool, list[dict[str, float]]]) -> None:
    """The comparison means something only if both paths re-delay a lot."""
    for exact in (False, True):
        assert statistics.mean(r["redelays"] for r in runs[exact]) > 3 * MESSAGES


def test_lazy_run_counts_redelays_without_records() -> None:
    result = run(blast(3, 400), exact=False, records="all")
    s = result.summary
    assert s["delivered"] == 400 and s["still_queued"] == 0
    (path,) = s["redelays"].values()
    assert s["delayed"] == path["redelays"] > 400  # counted, no record each
    assert not [r for r in result.records if r["type"] == "Delayed"]
    assert s["deferrals"]["Delayed ReadyQueueWasFull"] == s["delayed"]
    assert path["peak_waiting_behind_full_ready_queue"] >= 300


def test_exact_run_writes_a_delayed_record_per_redelay() -> None:
    result = run(blast(3, 400), records="all", exact=True)
    delayed = [r for r in result.records if r["type"] == "Delayed"]
    assert len(delayed) == result.summary["delayed"] > 400


def test_lazy_runs_are_determined_by_the_seed() -> None:
    a = run(blast(5, 300), exact=False, keep_records=False).summary
    b = run(blast(5, 300), exact=False, keep_records=False).summary
    c = run(blast(6, 300), exact=False, keep_records=False).summary
    assert figures(a) == figures(b)
    assert figures(a) != figures(c)


# -- the backlog on its own ------------------------------------------------------


class _Msg:
    def __init__(self, i: int) -> None:
        self.id = str(i)


def _backlog(n: int, seed: int = 1, deadline: float = 1e9) -> tuple[Backlog, list[_Msg]]:
    bl = Backlog(np.random.default_rng(seed))
    rng = random.Random(seed)
    msgs = [_Msg(i) for i in range(n)]
    for m in msgs:
        bl.add(m, deadline, 0.25, rng)
    return bl, msgs


def test_redelay_rate_is_one_per_30_seconds() -> None:
    """Held behind a queue that never frees, a message is re-delayed once per
    30 s on average (the mean of U(0, 60)); rounding each draw up to the next
    second would make it one per 30.5 s, 1.6 % fewer, and fail this."""
    bl, _ = _backlog(20_000)
    made = 0
    for t in range(1, 1101):
        admitted, _, expired, again = bl.tick(float(t), 0)
        assert not admitted and not expired
        if t > 100:
            made += again
    per_message = made / 20_000
    assert per_message == pytest.approx(1000 / 30, rel=0.005)
    assert len(bl) == 20_000


def test_every_message_comes_out_once_with_its_count() -> None:
    bl, msgs = _backlog(5_000)
    seen: dict[str, int] = {}
    t = 0
    while len(bl):
        t += 1
        admitted, counts, expired, _ = bl.tick(float(t), 40)
        assert not expired
        for m, n in zip(admitted, counts, strict=True):
            assert m.id not in seen
            seen[m.id] = n
        assert bl.next_due() is None or bl.next_due() == t + 1 or not bl.cohorts
    assert sorted(seen) == sorted(m.id for m in msgs)
    assert min(seen.values()) >= 1
    # 40 a second out of 5,000: about a minute in the backlog on average, the first
    # re-delay 30 s of it, then one per 30 s
    assert statistics.mean(seen.values()) == pytest.approx(1 + (125 / 2 - 30) / 30, rel=0.1)


def test_expired_messages_leave_with_their_counts() -> None:
    bl, _msgs = _backlog(1_000, deadline=90.0)
    out: list[tuple[Any, int]] = []
    for t in range(1, 200):
        admitted, _, expired, _ = bl.tick(float(t), 0)
        assert not admitted
        out.extend(expired)
    assert len(out) == 1_000 and len(bl) == 0
    assert all(n >= 1 for _, n in out)


def test_remove_if_takes_matching_messages_anywhere() -> None:
    bl, _msgs = _backlog(2_000)
    for t in range(1, 30):
        bl.tick(float(t), 0)
    taken = bl.remove_if(lambda m: int(m.id) % 2 == 0)
    assert sorted(int(m.id) for m, _ in taken) == list(range(0, 2_000, 2))
    assert len(bl) == 1_000
    rest: list[Any] = []
    t = 30
    while len(bl):
        t += 1
        rest.extend(bl.tick(float(t), 100)[0])
    assert sorted(int(m.id) for m in rest) == list(range(1, 2_000, 2))


def test_remove_if_returns_each_message_with_its_redelays_so_far() -> None:
    """Every re-delay is counted once, wherever the message was held (the wheel
    of first re-delays or a cohort): the counts taken out add up to the first
    re-delays plus every later one the ticks reported."""
    bl, _msgs = _backlog(3_000, deadline=1e9)
    later = sum(bl.tick(float(t), 0)[3] for t in range(1, 45))
    assert later > 1_000  # most messages were re-delayed at least twice
    taken = bl.remove_if(lambda m: True)
    assert len(taken) == 3_000 and len(bl) == 0
    assert sum(n for _, n in taken) == 3_000 + later
    assert {n for _, n in taken} >= {1, 2, 3}
