"""Warm-up caps, selection rates and curfews in simulation: scenarios/ip_warmup.toml
over three days, and KumoMTA's source_selection_rate on a two-source pool
(crates/kumod/src/egress_source.rs; crates/integration-tests/src/test/
source_selection_rate_pool.rs is the same question at 2/day)."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import sim
from sim.scenario import Scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
NY = ZoneInfo("America/New_York")
# ip_warmup/shaping.toml's schedule for ip-new: (day 1, 2, 3) per provider
DAILY = {"gmail.com": (100, 200, 400), "example.org": (100, 200, 400),
         "yahoo.com": (50, 100, 200)}
HOURLY = {"gmail.com": (20, 40, 80), "example.org": (20, 40, 80), "yahoo.com": (10, 20, 40)}


@pytest.fixture(scope="module")
def warmup() -> Any:
    return sim.run(Scenario.from_toml(SCENARIOS / "ip_warmup.toml"), records="all")


def deliveries(result: Any) -> list[tuple[dt.datetime, str, str]]:
    return [(dt.datetime.fromtimestamp(r["timestamp"], dt.UTC), r["egress_source"],
             r["recipient"].split("@")[1])
            for r in result.records if r["type"] == "Delivery"]


def test_every_message_goes_and_the_warm_source_takes_the_overflow(warmup: Any) -> None:
    s = warmup.summary
    assert s["delivered"] == s["submitted"] > 8000 and s["transient_failures"] == 0
    by_source = Counter(src for _, src, _ in deliveries(warmup))
    # ip-new takes its caps (all of them on days 1 and 2), ip-warm everything else
    assert sum(v[0] + v[1] for v in DAILY.values()) < by_source["ip-new"] \
        <= sum(sum(v) for v in DAILY.values())
    assert by_source["ip-warm"] == s["delivered"] - by_source["ip-new"]


def test_the_new_source_never_passes_its_daily_or_hourly_caps(warmup: Any) -> None:
    """Caps count selections; a message selected just before midnight may be
    delivered just after, so the bound is checked cumulatively: by the end of
    each day (hour) ip-new has delivered at most the caps so far."""
    new = sorted((t, dom) for t, src, dom in deliveries(warmup) if src == "ip-new")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for dom, caps in DAILY.items():
        for day in range(3):
            end = start + dt.timedelta(days=day + 1)
            sent = sum(1 for t, d in new if d == dom and t < end)
            assert sent <= sum(caps[: day + 1]), (dom, day)
            # the cap binds where half the day's traffic (the round robin's share)
            # is above it: days 1 and 2 everywhere, day 3 but for example.org
            if day < 2 or dom != "example.org":
                assert sent >= sum(caps[: day + 1]) - 2, (dom, day)
    for dom, caps in HOURLY.items():
        total = 0
        for hour in range(72):
            total += caps[hour // 24]
            end = start + dt.timedelta(hours=hour + 1)
            assert sum(1 for t, d in new if d == dom and t < end) <= total, (dom, hour)


def test_the_curfew_holds_yahoo_mail_through_the_new_york_night(warmup: Any) -> None:
    night = [t for t, _, dom in deliveries(warmup)
             if dom == "yahoo.com" and _in_night(t.astimezone(NY))]
    assert night == []
    held = [r for r in warmup.records if r["type"] == "Delayed"]
    assert held and all("scheduled queue is suspended: curfew yahoo-night (22:00-06:00 "
                        "America/New_York) until" in r["response"]["content"] for r in held)
    assert {r["recipient"].split("@")[1] for r in held} == {"yahoo.com"}
    # released at 06:00 New York (11:00Z in January): the night's mail goes at once
    morning = [t for t, _, dom in deliveries(warmup)
               if dom == "yahoo.com" and t.astimezone(NY).time() < dt.time(6, 10)
               and t.astimezone(NY).hour == 6]
    assert len(morning) >= 0.8 * len(held) / 3


def _in_night(local: dt.datetime) -> bool:
    # a transaction already under way at 22:00 finishes: a few seconds' grace
    return local.time() >= dt.time(22, 0, 5) or local.time() < dt.time(6, 0)


def test_source_selection_rate_sends_the_rest_through_the_pool(tmp_path: Path) -> None:
    (tmp_path / "policy.py").write_text(textwrap.dedent('''
        from engine import (Policy, make_egress_path, make_egress_pool,
                            make_queue_config)
        policy = Policy()

        @policy.on("get_egress_pool")
        def pool(name):
            return make_egress_pool(name, entries=[{"name": "a", "weight": 1},
                                                   {"name": "b", "weight": 1}])

        @policy.on("get_queue_config")
        def queue(domain, tenant, campaign, routing_domain):
            return make_queue_config(egress_pool="warming")

        @policy.on("get_egress_path_config")
        def path(domain, source, site):
            if source == "a":
                return make_egress_path(source_selection_rate="30/h,max_burst=1",
                                        enable_mta_sts=False)
            return make_egress_path(enable_mta_sts=False)
    '''))
    scenario = Scenario.from_dict({
        "name": "selection", "seed": 3, "horizon": "4h", "policy": "policy.py",
        "traffic": [{"domain": "example.org", "rate": "240/h", "duration": "2h"}],
        "domains": {"example.org": {"mx": ["mx.example.org"]}},
        "hosts": {"mx.example.org": {}},
    }, base_dir=tmp_path)
    result = sim.run(scenario)
    by_source = Counter(r["egress_source"] for r in result.records if r["type"] == "Delivery")
    assert result.summary["delivered"] == result.summary["submitted"]
    # 30/h with a burst of 1 over two hours: one at once, then one every 2 min
    assert 55 <= by_source["a"] <= 61
    assert by_source["b"] == result.summary["delivered"] - by_source["a"]
    assert result.summary["transient_failures"] == 0
