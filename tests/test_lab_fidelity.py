"""The simulator tells the truth: scenarios/lab_small.toml run both ways agrees.

One run each way (about 21 s of wall time for the lab, a fraction of a second
for the simulator), then the figures issue 8 asks to agree:

- drain time within 5 % (it is set by the throttled path: 420 messages
  behind 20/s with a burst of 20, so about 20 s either way);
- peak connections per path equal (the engine decides them; both
  realisations feed it the same queue depths);
- the throttle-limited rate within 2 % (the time the throttled path takes
  for 320 deliveries of its steady state, four whole periods of its sawtooth);
- tempfail counts within the statistical spread of their probability (the
  two runs draw independently: each is checked against its expectation and
  their difference against the spread of a difference);
- and, exactly, the lab servers' own counters against the engine's records.

And a latency-limited path (2 connections, 600 messages, about 8 s), where
each message's time is its two round trips: the lab's servers keep the
scenario's latencies (lab.timing.Pacer: mean error well under a millisecond
where plain asyncio sleeps were ~1 ms late each), and the simulator, given the
client's own time per round trip the lab measured (``[client]
round_trip_overhead``), agrees on the drain time within 4 % (it was +9..12 %
with plain sleeps and no client overhead).
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import sim
from lab.compare import Run, compare
from lab.run import run_in_lab
from sim.scenario import Scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "lab_small.toml"
THROTTLED = "unspecified->mx.throttled.test@smtp_client"
FLAKY = "unspecified->(mx1|mx2).flaky.test@smtp_client"


def latency_scenario(overhead_ms: float = 0.0) -> Scenario:
    """2 connections, constant 5 ms batch + 20 ms body: 25 ms per message each."""
    return Scenario.from_dict({
        "name": "latency", "seed": 3, "horizon": "60s", "sample_interval": "0.5s",
        "traffic": [{"domain": "lat.test", "messages": 600, "at": "0s", "size": "2KB"}],
        "domains": {"lat.test": {"mx": [{"host": "mx.lat.test", "preference": 10}]}},
        "hosts": {"mx.lat.test": {"connect_latency": "5ms", "command_latency": "5ms",
                                  "data_latency": "20ms", "tls_latency": "5ms"}},
        "egress_path": {"connection_limit": 2},
        "client": {"round_trip_overhead": f"{overhead_ms:.4f}ms"},
    })


@pytest.fixture(scope="module")
def latency_runs() -> tuple[Any, Any, Any]:
    """The lab, the simulator as written, the simulator with the measured overhead."""
    lab_run = asyncio.run(run_in_lab(latency_scenario(), keep_records=False))
    turnaround = lab_run.summary["lab"]["timing"]["client_turnaround"]["mean_ms"]
    return lab_run, sim.run(latency_scenario()), sim.run(latency_scenario(turnaround))


def test_latency_limited_sim_as_written_is_two_round_trips_per_message(
    latency_runs: tuple[Any, Any, Any],
) -> None:
    _, plain, _ = latency_runs
    # 300 messages per connection x 25 ms, plus connect, EHLO, STARTTLS, EHLO.
    assert plain.summary["drain_time"] == pytest.approx(300 * 0.025 + 0.025, abs=0.02)


def test_lab_servers_keep_the_scenario_latencies(latency_runs: tuple[Any, Any, Any]) -> None:
    lab_run, _, _ = latency_runs
    timing = lab_run.summary["lab"]["timing"]
    assert timing["server"]["compensate"] is True
    assert timing["server"]["sleeps"] >= 2 * 600
    # Paced sleeps end on their deadline on average: within 0.3 ms on a quiet
    # machine; on a loaded one, where every timer wakes later, at most half the
    # lateness the same run measured (which plain sleeps would have as error).
    server = timing["server"]
    assert abs(server["error_ms"]) < max(0.3, server["wake_lag_ms"] / 2), timing
    turn = timing["client_turnaround"]
    assert turn["count"] >= 600  # at least every 354 -> body
    # The client's own time per round trip is a cost below the scenario's 25 ms
    # round trips (5 ms + 20 ms), not of their order.
    assert 0 < turn["median_ms"] <= turn["mean_ms"] * 3 and turn["mean_ms"] < 25, turn


def test_latency_limited_drain_time_within_4_percent_with_the_client_overhead(
    latency_runs: tuple[Any, Any, Any],
) -> None:
    lab_run, plain, calibrated = latency_runs
    assert lab_run.summary["delivered"] == 600
    a, b = calibrated.summary["drain_time"], lab_run.summary["drain_time"]
    p = plain.summary["drain_time"]
    # The lab is never faster than the world it realises, and the client's
    # measured overhead moves the simulator towards it, on any machine.
    assert b >= p * 0.995, (p, b)
    assert a >= p and abs(b - a) <= abs(b - p), (a, b, p)
    # 4 % is the agreement on a quiet machine (BENCHMARKS.md, Fidelity), where
    # the server's paced sleeps miss their deadlines by under 0.3 ms.  On a
    # loaded machine the server side is slowed too, which the client overhead
    # does not include; the bound then widens by the timer noise this run
    # measured beyond that quiet level, per sleep (2 per message, 300 messages
    # per connection).  Under 2 CPU hogs it was about 6 ms a sleep.
    noise = max(lab_run.summary["lab"]["timing"]["server"]["abs_error_ms"] - 0.3, 0.0) / 1e3
    allowed = 0.04 * a + 2 * 300 * noise
    assert abs(b - a) <= allowed, (a, b, p, allowed)


@pytest.fixture(scope="module")
def runs() -> tuple[Any, Any]:
    scenario = Scenario.from_toml(SCENARIO)
    return sim.run(scenario), asyncio.run(run_in_lab(scenario))


def test_both_runs_finish_every_message(runs: tuple[Any, Any]) -> None:
    for r in runs:
        s = r.summary
        assert s["submitted"] == 820
        assert s["still_queued"] == 0
        assert s["delivered"] + s["bounced"] == 820


def test_drain_times_within_5_percent(runs: tuple[Any, Any]) -> None:
    sim_run, lab_run = runs
    a, b = sim_run.summary["drain_time"], lab_run.summary["drain_time"]
    assert 19.0 < a < 21.5  # the throttle: 20 at once, then 400 at 20/s
    assert abs(b - a) / a <= 0.05, (a, b)


def test_peak_connections_equal(runs: tuple[Any, Any]) -> None:
    sim_run, lab_run = runs
    assert sim_run.summary["peak_connections"] == {FLAKY: 4, THROTTLED: 2}
    assert lab_run.summary["peak_connections"] == sim_run.summary["peak_connections"]
    # The servers saw exactly the connections the engine opened.
    hosts = lab_run.summary["lab"]["hosts"]
    assert hosts["mx.throttled.test"]["peak_connections"] == 2
    assert hosts["mx1.flaky.test"]["peak_connections"] == 4


def _steady_rate(records: list[dict[str, Any]], site: str) -> float:
    """Deliveries per second of `site` across four whole throttle periods.

    KumoMTA's throttle answers in whole seconds (crates/throttle/src/throttle.rs
    rounds retry_after up), so a 20/s path delivers in a sawtooth: 80 messages
    every 4 s (three seconds of ~26, then a gap).  The rate is 320 deliveries
    (four periods) over the time they took (``event_time``), averaged over the
    80 starting points of one period past the first burst, so neither the phase
    nor where a message falls inside its burst moves it."""
    times = sorted(datetime.fromisoformat(r["event_time"]).timestamp() for r in records
                   if r["type"] == "Delivery" and r["site"] == site)
    spans = [times[k + 320] - times[k] for k in range(20, 100)]
    return 320 * len(spans) / sum(spans)


def test_throttle_limited_rate_within_2_percent(runs: tuple[Any, Any]) -> None:
    sim_run, lab_run = runs
    a = _steady_rate(sim_run.records, THROTTLED)
    b = _steady_rate(lab_run.records, THROTTLED)
    assert abs(a - 20.0) / 20.0 <= 0.02, a
    # 2 %, plus one message at each end of the 10 s window: records carry whole
    # seconds, and on a loaded machine a delivery at a window's edge may be
    # logged a moment late, into the next second.
    assert abs(b - a) <= 0.02 * a + 2 / 10.0, (a, b)


def test_tempfail_counts_within_the_statistical_spread(runs: tuple[Any, Any]) -> None:
    # 400 messages, one recipient each, to a host that defers a RCPT with p = 0.05
    # and rejects it with 0.01, every retry drawing afresh: the deferrals per
    # message are geometric, mean p / (1 - p), variance p / (1 - p)^2.
    p, n = 0.05, 400
    mean = n * p / (1 - p)
    sd = math.sqrt(n * p / (1 - p) ** 2)
    sim_run, lab_run = runs
    a = sim_run.summary["transient_failures"]
    b = lab_run.summary["transient_failures"]
    assert abs(a - mean) <= 4 * sd, (a, mean, sd)
    assert abs(b - mean) <= 4 * sd, (b, mean, sd)
    assert abs(a - b) <= 4 * math.sqrt(2) * sd, (a, b)


def test_lab_counters_agree_with_the_engine_records(runs: tuple[Any, Any]) -> None:
    _, lab_run = runs
    s = lab_run.summary
    hosts = s["lab"]["hosts"]
    assert sum(h["accepted"] for h in hosts.values()) == s["delivered"]
    assert sum(h["deferred"] for h in hosts.values()) == s["transient_failures"]
    assert sum(h["rejected"] for h in hosts.values()) == s["bounced"]
    assert hosts["mx2.flaky.test"]["connections"] == 0


def test_compare_rows_from_the_two_runs(runs: tuple[Any, Any], tmp_path: Path) -> None:
    sim_run, lab_run = runs
    sim_run.write(tmp_path / "sim", plot=False)
    lab_run.write(tmp_path / "lab", plot=False)
    c = compare(Run.load(tmp_path / "sim"), Run.load(tmp_path / "lab"))
    drain = c.row("drain time")
    assert drain.sim == sim_run.summary["drain_time"]
    assert drain.lab == pytest.approx(lab_run.summary["drain_time"])
    assert drain.rel_diff is not None and abs(drain.rel_diff) <= 0.05
    assert c.row(f"peak connections {THROTTLED}").rel_diff == 0.0
    assert c.row("peak connections (all paths)").sim == 6.0
    assert "drain time" in c.table() and "lab vs sim" in c.table()
    c.plot(tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 10_000
