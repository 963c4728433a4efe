"""sim.nodes: N engines sharing their limits through one modelled store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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
    [(path, peak)] = s["shared_peak_connections"].items()
    assert peak <= 16  # what the provider sees: the shared limit, not 4 x 16
    assert s["peak_connections"] == {path: peak}  # open at once on all the nodes: the same
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


def _blast(nodes: int = 2, messages: int = 120) -> Scenario:
    """A small blast at t=0 on `nodes` nodes, whose ready queue (max_ready 10,
    one connection per node) fills: re-delays on every node."""
    return Scenario.from_dict({
        "name": "blast", "seed": 3, "horizon": "1h", "sample_interval": "1s", "nodes": nodes,
        "traffic": [{"domain": "example.com", "messages": messages, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 10}]}},
        "hosts": {"mx.example.com": {"connect_latency": "5ms", "command_latency": "2ms",
                                     "data_latency": "10ms"}},
        "egress_path": {"enable_tls": "Disabled", "max_ready": 10, "connection_limit": 2},
    })


@pytest.mark.parametrize("nodes", [1, 2])
def test_progress_adds_up_the_nodes_once_per_sample(nodes: int) -> None:
    """A run on N nodes tells `progress` what a run on one does: one call per
    sample interval (not one per node), every node's finished and submitted
    added up, and the final figures once the run ends."""
    seen: list[tuple[float, int, int]] = []
    result = sim.run(_blast(nodes), progress=lambda *a: seen.append(a))
    s = result.summary
    assert s["submitted"] == 120 and s["delivered"] == 120
    times = [t for t, _, _ in seen]
    assert times[0] == 0.0 and times == sorted(set(times))  # one call per instant
    assert times[-1] == s["drain_time"] and all(t == int(t) for t in times[:-1])
    assert {sub for _, _, sub in seen} == {120}
    assert seen[-1][1] == 120 and any(0 < fin < 120 for _, fin, _ in seen)
    assert [fin for _, fin, _ in seen] == sorted(fin for _, fin, _ in seen)


def test_progress_true_prints_the_nodes_together(capsys: pytest.CaptureFixture[str]) -> None:
    sim.run(_blast(2), progress=True)
    err = capsys.readouterr().err
    assert err.startswith("simulated 0:00:00, finished 0/120,")  # not a node's 0/60
    # a run of well under 10 s still ends on its finished state
    assert ", finished 120/120, " in err.splitlines()[-1]


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The drivers (`sim.nodes.NodeDriver`, one per node) of each run, in order."""
    import sim.nodes

    runs: list[list[Any]] = []
    real = sim.nodes.run_nodes

    def spy(*args: Any, **kwargs: Any) -> Any:
        drivers, store = real(*args, **kwargs)
        runs.append(drivers)
        return drivers, store

    monkeypatch.setattr(sim.nodes, "run_nodes", spy)
    return runs


def test_the_nodes_take_the_path_run_chose(made: list[list[Any]]) -> None:
    """Lazy re-delays by default (counted, no record each), the exact per-message
    path with ``exact=True`` or ``records="all"``: on every node, as on one."""
    lazy = sim.run(_blast())
    assert all(d.engine.lazy_redelays and d.engine.lazy_redelayed > 0 for d in made[-1])
    # counted as delayed, every node's, though no Delayed record was made
    assert lazy.summary["delayed"] == sum(d.engine.lazy_redelayed for d in made[-1]) > 0
    assert lazy.summary["deferrals"]["Delayed ReadyQueueWasFull"] == lazy.summary["delayed"]
    for kwargs in ({"exact": True}, {"records": "all"}):
        exact = sim.run(_blast(), **kwargs)  # type: ignore[arg-type]
        assert not any(d.engine.lazy_redelays or d.engine.lazy_redelayed for d in made[-1])
        delayed = exact.summary["records"]["Delayed"]
        assert delayed > 0 and exact.summary["delivered"] == 120
        full = [r for r in exact.records if r["type"] == "Delayed"
                and "ReadyQueueWasFull" in r["response"]["content"]]
        assert len(full) == (delayed if kwargs.get("records") == "all" else 0)
    # exact=False with every record asked for: lazy, so no Delayed record to write
    lazy_all = sim.run(_blast(), records="all", exact=False)
    assert all(d.engine.lazy_redelays for d in made[-1])
    assert not any(r["type"] == "Delayed" for r in lazy_all.records)


@pytest.mark.parametrize("records", ["outcomes", "all", "none"])
def test_the_nodes_keep_the_records_asked_for(records: str) -> None:
    """`records=` on N nodes: what is kept is what a single node keeps of its
    kinds; every record is counted either way."""
    result = sim.run(_blast(), records=records, exact=True)
    kept = {r["type"] for r in result.records}
    assert result.summary["records"]["Delayed"] > 0
    assert kept == {"outcomes": {"Reception", "Delivery"},
                    "all": {"Reception", "Delivery", "Delayed"}, "none": set()}[records]


def test_run_takes_no_parameter_the_nodes_would_drop() -> None:
    """Every parameter of `sim.run` is honoured on ``nodes = N`` (the tests
    above): a new one must be taken there too, or refused, before it is listed."""
    import inspect

    assert list(inspect.signature(sim.run).parameters) == [
        "scenario", "progress", "records", "keep_records", "record_sink", "exact"]


def _slow_blast(nodes: int = 2, max_ready: int = 5) -> Scenario:
    """200 messages at t=0 on `nodes` nodes, a second a message on one
    connection per node, `max_ready` each: re-delayed more than once per
    message on average, so the summary says what is wrong."""
    return Scenario.from_dict({
        "name": "slow_blast", "seed": 5, "horizon": "1h", "sample_interval": "1s",
        "nodes": nodes, "traffic": [{"domain": "example.com", "messages": 200, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 10}]}},
        "hosts": {"mx.example.com": {"connect_latency": "5ms", "command_latency": "2ms",
                                     "data_latency": "1s"}},
        "egress_path": {"enable_tls": "Disabled", "max_ready": max_ready,
                        "connection_limit": 2},
    })


@pytest.mark.parametrize("exact", [False, True])
def test_the_nodes_summary_says_what_is_wrong(exact: bool, made: list[list[Any]]) -> None:
    """Issue 12, items 2 and 3, on N nodes: re-delays per path over every node's
    messages, and the advice naming the path, its peak and the max_ready (per
    node: each has its own ready queue) with the line to try it."""
    s = sim.run(_slow_blast(), exact=exact).summary
    drivers = made[-1]
    [(path, r)] = s["redelays"].items()
    own = [d.observer.redelays.summary()[path] for d in drivers]
    # every node's re-delays and re-delayed messages, added up
    assert r["redelays"] == sum(o["redelays"] for o in own) == s["delayed"] > 0
    if not exact:
        assert r["redelays"] == sum(d.engine.lazy_redelayed for d in drivers)
    assert r["messages_delayed_at_least_once"] == sum(
        o["messages_delayed_at_least_once"] for o in own)
    assert r["redelays_per_message_mean"] == round(r["redelays"] / s["delivered"], 3) > 1.0
    assert r["redelays_per_delayed_message_max"] == max(
        o["redelays_per_delayed_message_max"] for o in own)
    for q in ("p50", "p95"):
        key = f"redelays_per_delayed_message_{q}"
        assert min(o[key] for o in own) <= r[key] <= max(o[key] for o in own)
    # peaks are one node's: the most any node held, not the nodes' sum
    peaks = [o["peak_waiting_behind_full_ready_queue"] for o in own]
    assert r["peak_waiting_behind_full_ready_queue"] == max(peaks) < sum(peaks)
    assert s["peak_ready_depth"] == {path: 5} == {
        path: max(d.engine.ready_peaks()[path] for d in drivers)}
    assert all(n["peak_ready_depth"] == {path: 5} for n in s["nodes"])
    [advice] = s["advice"]
    held = advice["max_ready_to_hold_it"]
    assert advice["path"] == path and held >= max(peaks) + 5
    assert advice["try"] == f"--set egress_path.max_ready={held}"
    assert "waited at once behind its full ready queue on one node (peak ready depth 5; " \
        "each of the 2 nodes has its own ready queue)" in advice["text"]
    # and it would have: at that max_ready no message meets a full ready queue
    held_run = sim.run(_slow_blast(max_ready=held), exact=exact).summary
    assert held_run["delayed"] == 0 and held_run["redelays"] == {} and not held_run["advice"]


def test_the_nodes_series_add_up_every_node(made: list[list[Any]]) -> None:
    """`series` is the nodes' together, with a single run's columns: counts at
    the last sample are every node's, not node 0's share."""
    result = sim.run(_blast(2))
    series, s = result.series, result.summary
    drivers = made[-1]
    own = [d.observer.series() for d in drivers]
    assert list(series) == list(sim.run(_blast(1)).series)  # a single run's columns, in order
    assert list(series["t"]) == sorted(set().union(*(o["t"] for o in own)))
    assert series["delivered_cumulative"][-1] == s["delivered"] == 120
    assert series["deliveries"].sum() == 120 and (series["deliveries"] >= 0).all()
    assert series["delivered_cumulative"][-1] == sum(o["delivered_cumulative"][-1] for o in own)
    # at a time every node sampled, each column is the nodes' values added up
    both = np.intersect1d(own[0]["t"], own[1]["t"])
    assert len(both) > 2
    for name in ("scheduled_depth", "ready_depth", "connections", "delivered_cumulative"):
        at = [np.searchsorted(o["t"], both) for o in own]
        expect = sum(o[name][i] for o, i in zip(own, at, strict=True))
        assert (series[name][np.searchsorted(series["t"], both)] == expect).all(), name
    assert result.to_frame()["delivered_cumulative"].iloc[-1] == 120


def test_the_nodes_peak_connections_are_open_at_once_on_every_node() -> None:
    """`peak_connections` is what the host sees of the nodes together (each
    node's own stays in ``nodes``): with a local limit of 2 on each node, 4."""
    local = _slow_blast(max_ready=50).with_overrides(['egress_path.connection_limit="local:2"'])
    s = sim.run(local).summary
    [(path, peak)] = s["peak_connections"].items()
    assert [n["peak_connections"] for n in s["nodes"]] == [{path: 2}, {path: 2}]
    assert peak == 4


def test_the_nodes_ready_peak_is_shown_as_one_nodes() -> None:
    """The series adds the nodes' ready queues up; the peak in the summary is
    one node's: the plot's legend and the simulate table say so."""
    import io

    from rich.console import Console

    from sim.commands import print_summary
    from sim.plot import plot_run

    result = sim.run(_slow_blast())
    fig = plot_run(result)
    ax_q = fig.axes[0]
    texts = [t.get_text() for t in ax_q.get_legend().get_texts()]
    ready = [text for text in texts if text.startswith("ready")]
    assert ready and all(text.endswith("on one node)") for text in ready)
    out = io.StringIO()
    print_summary(Console(file=out, width=200), result)
    assert "peak ready depth (one node)" in out.getvalue()
    single = sim.run(_slow_blast(nodes=1))
    out = io.StringIO()
    print_summary(Console(file=out, width=200), single)
    assert "peak ready depth (one node)" not in out.getvalue()
    assert "peak ready depth" in out.getvalue()


def test_a_node_done_early_samples_to_the_runs_end(made: list[list[Any]]) -> None:
    """One message on two nodes: node 1 has nothing and is done at once, node 0
    runs on.  Node 1 still samples every interval to the end of the run (a node
    done early may hold connections open; the nodes' series adds it up), not
    only at 0 and at the end."""
    scenario = Scenario.from_dict({
        "name": "one", "seed": 1, "horizon": "1h", "sample_interval": "1s", "nodes": 2,
        "traffic": [{"domain": "example.com", "messages": 1, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 10}]}},
        "hosts": {"mx.example.com": {"data_latency": "5s"}},
        "egress_path": {"enable_tls": "Disabled"},
    })
    result = sim.run(scenario)
    drivers = made[-1]
    end = result.summary["drain_time"]
    assert end > 5
    for d in drivers:
        t = d.observer.series()["t"]
        assert t[-1] == pytest.approx(end)
        assert len(t) >= int(end)  # one a second to the end, idle node or not
