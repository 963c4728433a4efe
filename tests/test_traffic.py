"""sim.traffic: streams become time-ordered MessageSubmitted events."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.events import MessageSubmitted
from sim import traffic as traffic_mod
from sim.scenario import Scenario
from sim.traffic import arrivals


def scenario(*streams: dict[str, Any]) -> Scenario:
    return Scenario.from_dict({
        "traffic": list(streams),
        "host_defaults": {},
    })


def test_bulk_stream_count_ids_time_and_fields() -> None:
    s = scenario({"domain": "example.com", "messages": 3, "at": "5m", "tenant": "t1",
                  "campaign": "c1", "sender": "news@sender.example", "size": "2KB"})
    msgs = list(arrivals(s, random.Random(1)))
    assert msgs == [
        MessageSubmitted(at=300.0, id=f"m0000000{i}", sender="news@sender.example",
                         recipients=(f"r{i}@example.com",), size=2000, tenant="t1",
                         campaign="c1")
        for i in (1, 2, 3)
    ]


def test_several_recipients_per_message() -> None:
    s = scenario({"domain": "example.com", "messages": 2, "recipients": 3})
    msgs = list(arrivals(s, random.Random(1)))
    assert msgs[1].recipients == ("r2@example.com", "r2.1@example.com", "r2.2@example.com")


def test_poisson_rate_within_bounds_and_inside_its_window() -> None:
    s = scenario({"domain": "example.com", "rate": "600/min", "duration": "1h", "start": "10m"})
    msgs = list(arrivals(s, random.Random(4)))
    expected = 10.0 * 3600
    assert abs(len(msgs) - expected) < 5 * math.sqrt(expected)
    assert msgs[0].at >= 600.0 and msgs[-1].at < 4200.0
    assert all(a.at <= b.at for a, b in itertools.pairwise(msgs))
    assert [m.id for m in msgs[:2]] == ["m00000001", "m00000002"]
    assert msgs[-1].id == f"m{len(msgs):08d}"


def test_poisson_longer_than_one_batch_keeps_its_rate() -> None:
    n = traffic_mod.BATCH * 3
    s = scenario({"domain": "example.com", "rate": 100.0, "duration": n / 100.0})
    msgs = list(arrivals(s, random.Random(2)))
    assert abs(len(msgs) - n) < 5 * math.sqrt(n)
    gaps = [b.at - a.at for a, b in itertools.pairwise(msgs)]
    assert min(gaps) >= 0.0
    assert sum(gaps) / len(gaps) == pytest.approx(0.01, rel=0.02)


def test_streams_merge_in_time_order_ties_by_stream_order() -> None:
    s = scenario(
        {"domain": "b.example", "messages": 2, "at": "10s"},
        {"domain": "a.example", "rate": 2.0, "duration": "30s"},
        {"domain": "c.example", "messages": 2, "at": "10s"},
    )
    msgs = list(arrivals(s, random.Random(1)))
    assert all(a.at <= b.at for a, b in itertools.pairwise(msgs))
    at10 = [m.domain for m in msgs if m.at == 10.0]
    assert at10 == ["b.example", "b.example", "c.example", "c.example"]
    assert [m.id for m in msgs] == [f"m{i:08d}" for i in range(1, len(msgs) + 1)]
    assert Counter(m.domain for m in msgs)["b.example"] == 2


def test_domain_weights() -> None:
    s = scenario({"domains": {"a.example": 3, "b.example": 1}, "messages": 40_000})
    counts = Counter(m.domain for m in arrivals(s, random.Random(3)))
    assert abs(counts["a.example"] - 30_000) < 5 * math.sqrt(40_000 * 0.75 * 0.25)
    assert counts["a.example"] + counts["b.example"] == 40_000


def test_size_distribution() -> None:
    s = scenario({"domain": "example.com", "messages": 20_001,
                  "size": {"median": "10KB", "p99": "100KB"}})
    sizes = sorted(m.size for m in arrivals(s, random.Random(3)))
    assert sizes[10_000] == pytest.approx(10_000, rel=0.05)
    assert sizes[int(20_001 * 0.99)] == pytest.approx(100_000, rel=0.15)
    assert all(isinstance(x, int) for x in sizes[:10])


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    s = scenario({"domains": ["a.example", "b.example"], "rate": 5.0, "duration": "10m",
                  "size": {"min": 100, "max": 1000}})
    one = list(arrivals(s, random.Random(9)))
    assert one == list(arrivals(s, random.Random(9)))
    assert one != list(arrivals(s, random.Random(10)))


def test_lazy_generation() -> None:
    s = scenario({"domain": "example.com", "messages": 10_000_000})
    it = arrivals(s, random.Random(1))
    first = next(it)
    assert first.id == "m00000001"  # a list of ten million would take far longer


def test_fast_constructor_builds_equal_events() -> None:
    from engine.makers import make_message_submitted

    fast = make_message_submitted(1.5, "m1", "a@b.example", ("r@x.example",), 10, "t", "c")
    slow = MessageSubmitted(at=1.5, id="m1", sender="a@b.example",
                            recipients=("r@x.example",), size=10, tenant="t", campaign="c")
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)


def test_stream_summary_properties() -> None:
    s = scenario({"domain": "x.example", "messages": 5},
                 {"domain": "y.example", "rate": "60/min", "duration": "10m"})
    bulk, poisson = s.traffic
    assert (bulk.kind, bulk.expected_messages) == ("bulk", 5.0)
    assert (poisson.kind, poisson.expected_messages) == ("poisson", 600.0)
    assert s.message_count is None


def test_bulk_stream_spread_over_a_duration_is_even() -> None:
    import random

    from sim.scenario import Scenario
    from sim.traffic import arrivals

    s = Scenario.from_dict({
        "traffic": [{"domain": "example.com", "messages": 100, "at": "10s", "over": "100s"}],
        "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 1}]}},
        "hosts": {"mx.example.com": {}},
    })
    times = [m.at for m in arrivals(s, random.Random(1))]
    assert len(times) == 100
    assert times[0] == 10.0 and times[-1] == 10.0 + 99.0
    assert all(abs((b - a) - 1.0) < 1e-9 for a, b in itertools.pairwise(times))


def test_over_is_only_for_bulk_streams() -> None:
    import pytest

    from sim.scenario import Scenario, ScenarioError

    with pytest.raises(ScenarioError, match=r"traffic\[0\]\.over"):
        Scenario.from_dict({
            "traffic": [{"domain": "example.com", "rate": "1/s", "duration": "1m", "over": "1m"}],
            "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 1}]}},
            "hosts": {"mx.example.com": {}},
        })


@pytest.mark.parametrize("number", [1, 9, 10, 12_345, 99_999_999, 100_000_000, 123_456_789_012])
def test_a_message_id_is_its_number_zero_padded_to_eight_digits(number: int) -> None:
    assert traffic_mod.message_id(number) == f"m{number:08d}"
    assert traffic_mod.message_id(number)[1:].lstrip("0") == str(number)


def test_the_scenario_values_pickle_by_their_fields() -> None:
    """Frozen values pickle through their constructors (`__reduce__`), as the
    compiled build needs; every field comes back (equality compares them all)."""
    import pickle

    from sim.distributions import Constant, LogNormal, Uniform
    from sim.host_replies import BLACKHOLE, ConnectResult
    from sim.host_replies import BUSY as busy

    scenario = Scenario.from_toml(Path(__file__).parent.parent / "scenarios" / "quickstart.toml")
    values = [scenario.traffic, Constant(2.0), LogNormal(0.02, 0.25), Uniform(0.1, 0.3),
              BLACKHOLE, ConnectResult("ok", 0.01, busy)]
    back = pickle.loads(pickle.dumps(values))
    assert back == values
    assert back[2].mu == values[2].mu and back[2].sigma == values[2].sigma
