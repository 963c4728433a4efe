"""Every file in scenarios/ loads, validates, says what it answers, and sets
up the situation its name promises."""

from __future__ import annotations

import random
from itertools import islice
from pathlib import Path

import pytest

from sim.scenario import Scenario
from sim.traffic import arrivals

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.toml"))
REQUIRED = {
    "quickstart", "bulk_campaign", "million", "provider_outage", "max_ready_squeeze",
    "throttle_warmup", "connection_failures",
}


def test_the_promised_scenarios_exist() -> None:
    assert {p.stem for p in FILES} >= REQUIRED


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_file_validates_and_starts_with_its_question(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    # Every file opens with a comment saying what it is for; the planner's
    # scenarios phrase it as the question they answer.
    assert first.startswith("# "), f"{path.name} must open with a comment saying what it is for"
    if path.stem in REQUIRED:
        assert first.startswith("# Question"), f"{path.name} must open with its question"
    s = Scenario.from_toml(path)
    assert s.name == path.stem
    assert s.traffic and s.hosts and s.domains
    assert s.policy().egress_path_config(next(iter(s.domains)), "unspecified", "x") is not None
    first_messages = list(islice(arrivals(s, random.Random(s.seed)), 3))
    assert [m.id for m in first_messages] == ["m00000001", "m00000002", "m00000003"]


def load(name: str) -> Scenario:
    return Scenario.from_toml(SCENARIOS / f"{name}.toml")


def test_quickstart_is_small() -> None:
    s = load("quickstart")
    expected = sum(t.expected_messages for t in s.traffic)
    assert 2000 <= expected <= 5000
    assert len(s.domains) == 3


def test_million_is_exactly_a_million_with_32_connections_and_2_percent_tempfail() -> None:
    s = load("million")
    assert s.message_count == 1_000_000
    assert s.egress_path is not None and s.egress_path.connection_limit == 32
    assert s.egress_path_domains == {}
    assert len(s.domains) >= 4
    assert {h.tempfail_rcpt for h in s.hosts.values()} == {0.02}


def test_bulk_campaign_is_large_and_multi_provider() -> None:
    s = load("bulk_campaign")
    assert 200_000 <= (s.message_count or 0) <= 1_000_000
    assert len(s.domains) >= 5
    assert any(h.max_connections for h in s.hosts.values())


def test_provider_outage_is_twenty_minutes_of_tempfail_at_one_provider() -> None:
    s = load("provider_outage")
    hit = {n: h.outages for n, h in s.hosts.items() if h.outages}
    assert set(hit) == {"mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net"}
    assert {(o.end - o.start, o.mode) for os in hit.values() for o in os} == {(1200.0, "tempfail")}


def test_max_ready_squeeze_caps_the_ready_queue_at_50() -> None:
    s = load("max_ready_squeeze")
    assert s.egress_path is not None and s.egress_path.max_ready == 50
    assert (s.message_count or 0) > 50 * 100


def test_throttle_warmup_is_rate_limited() -> None:
    s = load("throttle_warmup")
    rates = {d: c.max_message_rate for d, c in s.egress_path_domains.items()}
    assert {d: (r.limit, r.period) for d, r in rates.items() if r} == {
        "gmail.com": (1000, 3600.0), "yahoo.com": (500, 3600.0)}


def test_connection_failures_refuses_everywhere_with_threshold_3() -> None:
    s = load("connection_failures")
    assert s.egress_path is not None
    assert s.egress_path.consecutive_connection_failures_before_delay == 3
    assert all(
        [(o.start, o.mode) for o in h.outages] == [(0.0, "refuse")] for h in s.hosts.values()
    )
