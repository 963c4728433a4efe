"""sim.nodes: N engines sharing their limits through one modelled store."""

from __future__ import annotations

from pathlib import Path

import pytest

import sim
from sim.scenario import Scenario, ScenarioError

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def test_four_nodes_share_the_connection_limit_and_the_rate() -> None:
    scenario = Scenario.from_toml(SCENARIOS / "four_nodes.toml")
    result = sim.run(scenario)
    s = result.summary
    assert s["delivered"] == 4000 and s["still_queued"] == 0
    assert len(s["nodes"]) == 4
    assert sum(n["delivered"] for n in s["nodes"]) == 4000
    assert all(0.15 < n["share"] < 0.35 for n in s["nodes"])
    [(_, peak)] = s["shared_peak_connections"].items()
    assert peak <= 16  # what the provider sees: the shared limit, not 4 x 16
    # 100/s shared: 4000 messages take about (4000 - 100) / 100 s, not a quarter of it
    assert s["drain_time"] >= 38.0
    # and the provider never refused a connection for too many (its max is 16)
    assert not any("too many" in str(k).lower() for k in s["records"])


def test_one_node_under_the_same_limits_takes_as_long() -> None:
    one = sim.run(Scenario.from_toml(SCENARIOS / "four_nodes.toml", ["nodes=1"]))
    assert one.summary["delivered"] == 4000
    assert "nodes" not in one.summary
    assert one.summary["drain_time"] >= 38.0  # the same 100/s: one node alone


def test_nodes_must_be_positive() -> None:
    with pytest.raises(ScenarioError, match="nodes"):
        Scenario.from_toml(SCENARIOS / "four_nodes.toml", ["nodes=0"])


def test_the_same_four_nodes_with_local_limits_overrun_the_provider() -> None:
    # the control: each node keeps its own 16 and 100/s; the provider (max 16
    # connections) refuses the surplus and the newsletter takes far longer
    local = sim.run(Scenario.from_toml(SCENARIOS / "four_nodes.toml", [
        'egress_path.connection_limit="local:16"', 'egress_path.max_message_rate="local:100/s"']))
    s = local.summary
    assert s["shared_peak_connections"] == {}
    assert max(max(n["peak_connections"].values()) for n in s["nodes"]) == 16
    assert s["transient_failures"] > 0


def test_a_sink_gets_every_nodes_records() -> None:
    """`egress simulate --out` streams records to a sink and keeps none: with
    ``nodes = N`` the sink gets every node's records, the ones a run that
    keeps them holds."""
    scenario = Scenario.from_toml(SCENARIOS / "four_nodes.toml")
    kept = sim.run(scenario)
    sunk: list[dict] = []
    streamed = sim.run(scenario, keep_records=False, record_sink=sunk.append)
    assert not streamed.records and kept.records
    assert sorted(map(repr, sunk)) == sorted(map(repr, kept.records))
    assert sum(r["type"] == "Reception" for r in sunk) == kept.summary["recipients"]
