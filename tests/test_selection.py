"""engine.selection: KumoMTA's source_selection_rate and egress's warm-up caps,
as events in, effects out.

KumoMTA's behaviour followed here: crates/kumod/src/egress_source.rs
(``select_and_insert``, ``get_source_selection_throttle_delay``),
crates/kumod/src/queue/queue.rs (``insert_ready_impl``: the TransientFailure
when no source is eligible), crates/kumo-api-types/src/egress_path.rs (the
keys), crates/kumo-api-types/src/shaping.rs (``provider_source_selection_rate``),
and the integration tests crates/integration-tests/src/test/
source_selection_rate.rs and source_selection_rate_pool.rs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from engine.config import make_egress_path
from engine.engine import Engine
from engine.errors import ConfigError
from engine.events import MxRecord
from engine.policy import Policy
from engine.queue_config import make_egress_pool, make_queue_config
from engine.shaping_load import load_shaping
from engine.throttle import Throttle
from tests.support.engine_harness import World, prime, records, submit

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
OTHER_MX = (MxRecord(preference=10, host="mx.other.org", addresses=("192.0.2.9",)),)


def pool_policy(sources: tuple[str, ...] = ("warming_a", "warming_b"),
                per_source: dict[str, dict[str, Any]] | None = None, **path: Any) -> Policy:
    """A policy whose queues use pool "warming" of `sources` (weight 1 each)."""
    path.setdefault("enable_mta_sts", False)
    p = Policy()

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        return make_egress_path(**{**path, **(per_source or {}).get(source, {})})

    @p.on("get_queue_config")
    def _queue(domain: str, tenant: str, campaign: str, routing: str) -> Any:
        return make_queue_config(egress_pool="warming")

    @p.on("get_egress_pool")
    def _pool(name: str) -> Any:
        return make_egress_pool(name, entries=[{"name": s, "weight": 1} for s in sources])

    return p


def delivered_by(effects: list[Any]) -> Counter[str]:
    return Counter(r["egress_source"] for r in records(effects, "Delivery"))


def engine(p: Policy, shaping: str | None = None) -> tuple[Engine, World]:
    sh = None if shaping is None else load_shaping([("s.toml", shaping)])
    eng = Engine(p, seed=1, epoch=EPOCH, shaping=sh)
    w = World(eng)
    prime(eng)
    return eng, w


# -- KumoMTA's source_selection_rate ---------------------------------------


def test_one_source_at_2_per_day_sends_2_and_the_rest_fail_transiently() -> None:
    """source_selection_rate.rs: 10 messages, 2/day, one source: 2 Deliveries and
    8 TransientFailures with KumoMTA's text, site "", no source, the pool named."""
    p = Policy()
    cfg = make_egress_path(enable_mta_sts=False, source_selection_rate="2/day")
    p.on("get_egress_path_config")(lambda d, s, site: cfg)
    eng, w = engine(p)
    fx = []
    for i in range(10):
        fx += w.feed(submit(i))
    assert len(records(fx, "Delivery")) == 2
    fails = records(fx, "TransientFailure")
    assert len(fails) == 8
    for r in fails:
        assert r["response"]["content"] == (
            "KumoMTA internal: no sources for example.com pool=`unspecified` "
            "are eligible for selection at this time")
        assert r["response"]["code"] == 451
        assert r["response"]["enhanced_code"] == {"class": 4, "subject": 4, "detail": 4}
        assert r["site"] == "" and r["egress_source"] is None
        assert r["egress_pool"] == "unspecified" and r["num_attempts"] == 0
    # then the retry schedule, the attempt counted on requeue (as KumoMTA's Yes)
    assert all(eng.sched._items[i].attempts == 1 for i in range(8))


def test_a_rate_spent_on_one_source_sends_the_rest_through_the_other() -> None:
    """source_selection_rate_pool.rs: warming_a at 2/day (an additional rate, as
    its source.lua sets it), warming_b free: 2 and 8, no failure."""
    p = pool_policy(per_source={"warming_a": {"additional_source_selection_rates": {
        "KUMOD_SOURCE_SELECTION_RATE_WARMING_A": "2/day"}}})
    _eng, w = engine(p)
    fx = []
    for i in range(10):
        fx += w.feed(submit(i))
    assert delivered_by(fx) == {"warming_a": 2, "warming_b": 8}
    assert records(fx, "TransientFailure") == []


def test_rates_are_checked_smallest_first_and_a_refusal_stops_there() -> None:
    """The 1/h rate refuses the second pick before the 100/h one is asked, so
    the larger has counted one pick, not three."""
    p = Policy()
    cfg = make_egress_path(enable_mta_sts=False, source_selection_rate="100/h",
                           additional_source_selection_rates={"small": "1/h"})
    p.on("get_egress_path_config")(lambda d, s, site: cfg)
    eng, w = engine(p)
    for i in range(3):
        w.feed(submit(i))
    big = next(n for n in eng.gates.throttles if n.startswith("kumomta."))
    assert big == ("kumomta.source_selection_rate."
                   "unspecified->(mx1|mx2).example.com@smtp_client.unspecified")
    assert eng.gates.throttles[big].tat == 36.0  # one use of 100/h
    assert eng.gates.throttles["small"].tat == 3600.0


def test_an_additional_rate_name_is_one_budget_across_sites() -> None:
    p = Policy()
    cfg = make_egress_path(enable_mta_sts=False,
                           additional_source_selection_rates={"overall": "3/day"})
    p.on("get_egress_path_config")(lambda d, s, site: cfg)
    eng, w = engine(p)
    prime(eng, "other.org", OTHER_MX)
    fx = []
    for i in range(4):
        fx += w.feed(submit(f"a{i}"))
        fx += w.feed(submit(f"b{i}", rcpts=("u@other.org",)))
    assert len(records(fx, "Delivery")) == 3
    assert len(records(fx, "TransientFailure")) == 5


def test_a_full_ready_queue_is_skipped_before_its_rate_is_asked() -> None:
    """KumoMTA takes a reservation in the ready queue before it asks the
    throttle: a full source spends nothing and the other takes the message."""
    p = pool_policy(max_ready=1, source_selection_rate="100/day")
    eng, w = engine(p)
    w.auto_connect = False  # connections never open: the ready queues fill
    for i in range(6):
        w.feed(submit(i))
    depths = eng.ready_depths()
    assert sorted(depths.values()) == [1, 1]
    spent = {n: round(s.tat / 864) for n, s in eng.gates.throttles.items()}
    # each source's rate counted exactly the messages it took (held + waiting)
    assert sorted(spent.values()) == [2, 2]


def test_provider_source_selection_rate_becomes_a_shared_named_rate() -> None:
    """shaping.rs test_provider: the provider's source table sets
    ``shaping-provider-<name>-<source>-selection-rate``; other sources get none."""
    sh = load_shaping([("s.toml", '''
[provider."Office 365"]
match = [{DomainSuffix = "outlook.com"}]
[provider."Office 365".sources."new-source"]
provider_source_selection_rate = "500/d,max_burst=1"
''')])
    cfg = sh.overlay(make_egress_path(), "outlook.com", "new-source", "site")
    assert dict(cfg.additional_source_selection_rates) == {
        "shaping-provider-Office 365-new-source-selection-rate": Throttle(500, 86400.0, 1)}
    assert cfg.source_selection_rate is None
    other = sh.overlay(make_egress_path(), "outlook.com", "invalid.source", "site")
    assert dict(other.additional_source_selection_rates) == {}


# -- warm-up caps ------------------------------------------------------------

WARMUP = '''
[warmup."ip-new"]
start = 2026-01-01
daily = { 1 = 3, 2 = 5, 4 = "unlimited" }
'''


def new_and_warm() -> Policy:
    return pool_policy(("ip-new", "ip-warm"))


def test_a_daily_cap_sends_the_overflow_through_the_warm_source() -> None:
    eng, w = engine(new_and_warm(), WARMUP)
    fx = []
    for i in range(20):
        fx += w.feed(submit(i, at=float(i)))
    assert delivered_by(fx) == {"ip-new": 3, "ip-warm": 17}
    assert eng.gates.count("ip-new", "(mx1|mx2).example.com", "daily") == 3
    # day 2 (the next UTC midnight): a fresh count, the day's cap 5
    fx = []
    for i in range(20):
        w.now = DAY + i
        fx += w.feed(submit(f"d2-{i}", at=DAY + i))
    assert delivered_by(fx) == {"ip-new": 5, "ip-warm": 15}
    # day 3 keeps day 2's cap; day 4 is unlimited: the round robin's half
    fx = []
    for i in range(10):
        w.now = 3 * DAY + i
        fx += w.feed(submit(f"d4-{i}", at=3 * DAY + i))
    assert delivered_by(fx) == {"ip-new": 5, "ip-warm": 5}


def test_before_its_start_a_source_takes_nothing() -> None:
    _eng, w = engine(new_and_warm(), WARMUP.replace("2026-01-01", "2026-01-02"))
    fx = []
    for i in range(4):
        fx += w.feed(submit(i))
    assert delivered_by(fx) == {"ip-warm": 4}


def test_hourly_caps_per_provider_and_the_zone_sets_the_day() -> None:
    shaping = '''
[provider."Example"]
match = [{DomainSuffix = "example.com"}]

[warmup."ip-new"]
start = 2026-01-01
tz = "America/New_York"
hourly = { 1 = 2 }
daily = { 1 = 100 }
[warmup."ip-new".providers."Example"]
hourly = { 1 = 1 }
'''
    eng, w = engine(new_and_warm(), shaping)
    prime(eng, "other.org", OTHER_MX)
    # 2026-01-01T00:00Z is Dec 31 in New York: day 0, nothing for ip-new
    fx = []
    for i in range(4):
        fx += w.feed(submit(f"x{i}"))
    assert delivered_by(fx) == {"ip-warm": 4}
    t = 5 * 3600.0  # 00:00 in New York: day 1
    fx = []
    for i in range(6):
        w.now = t + i
        fx += w.feed(submit(f"e{i}", at=t + i))
    for i in range(6):
        w.now = t + 10 + i
        fx += w.feed(submit(f"o{i}", at=t + 10 + i, rcpts=("u@other.org",)))
    by_site = Counter((r["egress_source"], r["recipient"].split("@")[1])
                      for r in records(fx, "Delivery"))
    assert by_site[("ip-new", "example.com")] == 1  # the provider's hourly cap
    assert by_site[("ip-new", "other.org")] == 2  # the source's, for a site
    assert eng.gates.count("ip-new", "Example", "hourly") == 1
    w.now = t + 3600
    fx = w.feed(submit("next-hour", at=t + 3600))
    assert delivered_by(fx) == {"ip-new": 1}


def test_a_pool_of_capped_sources_fails_transiently_as_kumomta_does() -> None:
    _eng, w = engine(pool_policy(("ip-new",)), WARMUP)
    fx = []
    for i in range(5):
        fx += w.feed(submit(i))
    assert len(records(fx, "Delivery")) == 3
    assert [r["response"]["content"] for r in records(fx, "TransientFailure")] == [
        "KumoMTA internal: no sources for example.com pool=`warming` are eligible for "
        "selection at this time"] * 2


def test_the_counts_are_in_the_snapshot() -> None:
    eng, w = engine(new_and_warm(), WARMUP)
    for i in range(6):
        w.feed(submit(i))
    assert eng.gates.count("ip-new", "(mx1|mx2).example.com", "daily") == 3
    again = Engine.restore(eng.snapshot(), eng.policy)
    assert again.gates.count("ip-new", "(mx1|mx2).example.com", "daily") == 3
    w2 = World(again)
    fx = []
    for i in range(4):
        fx += w2.feed(submit(f"r{i}", at=10.0))
    # (the restored engine's idle connections belong to the first world: the
    # new one answers only those it opens, so not every message is delivered)
    assert delivered_by(fx)["ip-new"] == 0 and delivered_by(fx)["ip-warm"] >= 2
    assert again.gates.count("ip-new", "(mx1|mx2).example.com", "daily") == 3


def test_a_replay_makes_the_same_choices() -> None:
    runs = []
    for _ in range(2):
        _eng, w = engine(new_and_warm(), WARMUP)
        fx = []
        for i in range(12):
            w.now = i * 7000.0
            fx += w.feed(submit(i, at=i * 7000.0))
        runs.append([(r["id"], r["egress_source"]) for r in records(fx, "Delivery")])
    assert runs[0] == runs[1]


def test_random_arrivals_over_three_days_never_pass_the_caps() -> None:
    """Deliveries here happen at the instant of selection, so each UTC day's
    deliveries through ip-new are its selections: at most the day's cap, and
    the cap is reached whenever the day brought enough mail."""
    import random

    rng = random.Random(5)
    times = sorted(rng.uniform(0, 3 * DAY) for _ in range(600))
    _eng, w = engine(new_and_warm(), WARMUP)
    fx = []
    for i, t in enumerate(times):
        w.now = t
        fx += w.feed(submit(i, at=t))
    per_day: Counter[tuple[int, str]] = Counter()
    for r in records(fx, "Delivery"):
        per_day[((r["timestamp"] - int(EPOCH)) // int(DAY), r["egress_source"])] += 1
    assert [per_day[(d, "ip-new")] for d in range(3)] == [3, 5, 5]
    assert sum(per_day.values()) == 600


@pytest.mark.parametrize(("body", "why"), [
    ("daily = { 1 = 5 }", "missing field 'start'"),
    ("start = 2026-01-01\nweekly = { 1 = 5 }", "unknown field 'weekly'"),
    ("start = 2026-01-01", "no schedule; give daily or hourly"),
    ("start = 2026-01-01\ndaily = { 0 = 5 }", "daily: day '0' is not a day number"),
    ("start = 2026-01-01\ndaily = { 1 = -5 }", "daily: day 1: -5 is not a cap"),
    ("start = 2026-01-01\ndaily = { 1 = \"lots\" }", "'lots' is not a cap"),
    ("start = 2026-01-01T10:00:00\ndaily = { 1 = 5 }", "start: "),
    ("start = \"soon\"\ndaily = { 1 = 5 }", "start: 'soon' is not a date"),
    ("start = 2026-01-01\ntz = \"PST\"\ndaily = { 1 = 5 }", "tz: 'PST' is not a known IANA"),
    ("start = 2026-01-01\ndaily = { 1 = 5 }\nproviders.g.monthly = { 1 = 1 }",
     "providers.\"g\": unknown field 'monthly'"),
])
def test_bad_warmup_tables_are_refused_naming_file_table_and_field(body: str, why: str) -> None:
    with pytest.raises(ConfigError, match=r'^s\.toml: \[warmup\."ip-new"\]') as err:
        load_shaping([("s.toml", f'[warmup."ip-new"]\n{body}\n')])
    assert why in str(err.value) and "\n" not in str(err.value)


def test_a_full_warm_source_does_not_overflow_past_the_new_ones_cap() -> None:
    """The warm source is picked and full: the other sources are tried, and a
    capped one is asked first (flow._source_with_room), so the cap holds."""
    p = pool_policy(("ip-new", "ip-warm"), max_ready=5, connection_limit=1,
                    per_source={"ip-warm": {"max_ready": 1}})
    eng, w = engine(p, WARMUP)
    w.auto_connect = False
    fx = []
    for i in range(12):
        fx += w.feed(submit(i))
    taken = {rq.source_name: len(rq.messages) + sum(1 for c in rq.conns.values() if c.msg)
             for rq in eng.paths.values()}
    # every message ip-new took was counted against its cap
    assert taken["ip-new"] == eng.gates.count("ip-new", "(mx1|mx2).example.com", "daily") <= 3
    assert len(records(fx, "Delayed")) == 12 - sum(taken.values())
