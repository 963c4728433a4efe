"""`sim.sweep`: combinations, aggregation, and running on a Dask cluster."""

from __future__ import annotations

import pytest

from sim.scenario import Scenario
from sim.sweep import Vary, aggregate, combinations, sweep

SCENARIO = {
    "name": "sweep-test",
    "seed": 2,
    "horizon": "1h",
    "traffic": [{"domain": "example.com", "messages": 200, "at": "0s"}],
    "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 10}]}},
    "hosts": {"mx.example.com": {"connect_latency": "5ms", "command_latency": "2ms",
                                 "data_latency": "40ms", "tempfail_rcpt": 0.05}},
    "egress_path": {"enable_tls": "Disabled"},
    "queue": {"retry_interval": "1min"},
}


def test_vary_parses_quoted_values_with_commas() -> None:
    v = Vary.parse('egress_path.max_message_rate="1,000/hr","10/s"')
    assert v.key == "egress_path.max_message_rate"
    assert v.values == ('"1,000/hr"', '"10/s"')
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        Vary.parse("connection_limit")


def test_combinations_are_the_cartesian_product_in_order() -> None:
    combos = combinations([Vary("a", ("1", "2")), Vary("b", ("x", "y"))])
    assert combos == [("a=1", "b=x"), ("a=1", "b=y"), ("a=2", "b=x"), ("a=2", "b=y")]


def test_aggregate_reports_spread_and_missing() -> None:
    rows = [{"drain_time": 10.0}, {"drain_time": 14.0}, {"drain_time": None}]
    out = aggregate(rows)
    assert out["runs"] == 3
    assert out["drain_time_mean"] == 12.0 and out["drain_time_std"] == 2.0
    assert (out["drain_time_min"], out["drain_time_max"], out["drain_time_missing"]) == (
        10.0, 14.0, 1)


def test_seeds_differ_and_results_match_a_direct_run() -> None:
    from sim.result import run

    base = Scenario.from_dict(SCENARIO)
    table = sweep(base, [Vary("egress_path.connection_limit", ("2",))], seeds=3, workers=1)
    (row,) = table
    assert row["runs"] == 3
    direct = [run(base.with_overrides(["egress_path.connection_limit=2", f"seed={s}"]),
                  keep_records=False).summary["transient_failures"] for s in (2, 3, 4)]
    assert row["transient_failures_mean"] == pytest.approx(sum(direct) / 3)
    assert row["transient_failures_max"] == max(direct)
    assert len(set(direct)) > 1  # different seeds, different worlds


def test_sweep_on_a_dask_cluster_matches_local_workers() -> None:
    distributed = pytest.importorskip("distributed")
    base = Scenario.from_dict(SCENARIO)
    varies = [Vary("egress_path.connection_limit", ("1", "4"))]
    local = sweep(base, varies, seeds=2, workers=1)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        remote = sweep(base, varies, seeds=2, scheduler=cluster.scheduler_address)
    assert remote == local


def test_a_sweep_over_max_ready_shows_the_redelays_go() -> None:
    base = Scenario.from_dict({
        "name": "squeeze", "seed": 1, "horizon": "2h", "sample_interval": "5s",
        "traffic": [{"domain": "example.com", "messages": 300, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 10}]}},
        "hosts": {"mx.example.com": {"data_latency": "400ms", "command_latency": "2ms",
                                     "connect_latency": "2ms"}},
        "egress_path": {"connection_limit": 1, "enable_tls": "Disabled"},
    })
    rows = sweep(base, [Vary.parse("egress_path.max_ready=20,400")], workers=1)
    squeezed, held = (r["max_redelays_per_message_mean"] for r in rows)
    assert squeezed > 1.0 and held == 0.0
