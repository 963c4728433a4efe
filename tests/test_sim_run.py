"""The seed's behaviours, visible in simulation (issue 5, item 7).

Each test builds a small scenario as a dict, runs the real engine on the
SimPy driver, and checks a figure that the behaviour fixes exactly or bounds.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.result import SimResult, run
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent

FAST_HOST = {
    "connect_latency": "5ms",
    "command_latency": "2ms",
    "data_latency": "10ms",
    "tls_latency": "5ms",
}


def scenario(
    *,
    messages: int = 200,
    egress: dict[str, Any] | None = None,
    host: dict[str, Any] | None = None,
    hosts: int = 1,
    queue: dict[str, Any] | None = None,
    seed: int = 1,
    horizon: str = "2h",
) -> Scenario:
    names = [f"mx{i}.example.com" for i in range(hosts)]
    data: dict[str, Any] = {
        "name": "t",
        "seed": seed,
        "horizon": horizon,
        "sample_interval": "1s",
        "traffic": [{"domain": "example.com", "messages": messages, "at": "0s"}],
        "domains": {
            "example.com": {"mx": [{"host": n, "preference": 10} for n in names]},
        },
        "hosts": {n: {**FAST_HOST, **(host or {})} for n in names},
        "egress_path": {"enable_tls": "Disabled", **(egress or {})},
    }
    if queue:
        data["queue"] = queue
    return Scenario.from_dict(copy.deepcopy(data))


def records_of(result: SimResult, kind: str) -> list[dict[str, Any]]:
    return [r for r in result.records if r["type"] == kind]


def test_all_delivered_and_counted_once() -> None:
    result = run(scenario(messages=300))
    s = result.summary
    assert (s["submitted"], s["delivered"], s["bounced"], s["still_queued"]) == (300, 300, 0, 0)
    assert len(records_of(result, "Delivery")) == 300
    assert result.series["delivered_cumulative"][-1] == 300
    assert s["drain_time"] is not None and s["drain_time"] < 60


def test_max_ready_bounds_the_ready_queue_and_redelays_within_60s() -> None:
    # One slow connection, so the ready queue fills up from the bulk submission.
    result = run(scenario(
        messages=400, egress={"max_ready": 50, "connection_limit": 1},
        host={"data_latency": "50ms"},
    ), records="all", exact=True)
    assert max(result.summary["peak_ready_depth"].values()) <= 50
    ready = result.series["ready_depth"]
    assert ready.max() <= 50
    delayed = records_of(result, "Delayed")
    assert delayed, "a full ready queue must re-delay messages"
    assert all("ReadyQueueWasFull" in r["response"]["content"] for r in delayed)
    assert all(r["response"]["code"] == 400 and r["response"]["enhanced_code"] is None
               for r in delayed)
    assert all(r["num_attempts"] == 0 for r in delayed)  # no attempt counted
    # KumoMTA re-delays a message the full ready queue refused by a uniform
    # 0..60 s (force_into_delayed -> Message::delay_with_jitter(60) in
    # crates/kumod/src/queue/queue.rs and crates/message/src/message.rs).  The
    # record names the next due time; records carry whole seconds, so allow 1 s.
    waits = [_next_due(r) - r["timestamp"] for r in delayed]
    assert all(-1 <= w <= 61 for w in waits), (min(waits), max(waits))
    # Drawn across the window, not a fixed delay: both ends are reached.
    assert min(waits) <= 10 and max(waits) >= 50, (min(waits), max(waits))
    assert result.summary["still_queued"] == 0
    assert result.summary["delivered"] == 400


def _next_due(record: dict[str, Any]) -> int:
    """The unix second in a ReadyQueueWasFull record's '... Next due in <d> at <RFC 3339>'."""
    text = record["response"]["content"]
    stamp = text.rsplit(" at ", 1)[1].strip()
    return int(datetime.fromisoformat(stamp).astimezone(UTC).timestamp())


@pytest.mark.parametrize("limit", [1, 3, 8])
def test_open_connections_never_exceed_connection_limit(limit: int) -> None:
    result = run(scenario(messages=500, egress={"connection_limit": limit}, hosts=2))
    peaks = result.summary["peak_connections"]
    assert peaks and max(peaks.values()) == limit  # reached, never passed
    assert result.series["connections"].max() <= limit


def test_message_rate_throttle_drains_exactly_at_the_gcra_bound() -> None:
    # 600 messages at 10/s into a fast host: a fresh bucket lets 10 through at
    # once, then one every 0.1 s, so the last one starts at (600 - 10) * 0.1 s.
    result = run(scenario(messages=600, egress={"max_message_rate": "10/s"}))
    drain = result.summary["drain_time"]
    assert result.summary["delivered"] == 600
    assert 59.0 <= drain <= 60.0, drain
    times = sorted(r["timestamp"] for r in records_of(result, "Delivery"))
    # In any one-second window, at most 10 (plus the first burst) deliveries.
    counts = np.bincount(np.asarray(times) - times[0])
    assert counts[1:-1].max() <= 11


def test_consecutive_connection_failures_delay_the_whole_ready_queue() -> None:
    result = run(scenario(
        messages=50,
        egress={"consecutive_connection_failures_before_delay": 3, "connection_limit": 2},
        host={"refuse_connections": 1.0},
        queue={"retry_interval": "10min"},
        horizon="30min",
    ))
    transient = records_of(result, "TransientFailure")
    bulk = [r for r in transient
            if r["response"]["content"] == "No answer from any hosts listed in MX"]
    assert bulk, "past the threshold the whole ready queue gets 451 4.4.1"
    assert all(r["response"]["code"] == 451 for r in bulk)
    assert all(r["response"]["enhanced_code"] == {"class": 4, "subject": 4, "detail": 1}
               for r in bulk)
    assert result.summary["delivered"] == 0
    assert result.summary["still_queued"] == 50  # retried, not lost


@pytest.mark.parametrize("key", ["prohibited_hosts", "skip_hosts"])
def test_prohibited_and_skipped_hosts_fail_the_queue_with_550_5_4_4(key: str) -> None:
    s = scenario(messages=20, egress={key: ["192.0.2.0/24", "198.51.100.0/24"]})
    result = run(s)
    bounces = records_of(result, "Bounce")
    assert len(bounces) == 20
    assert {(b["response"]["code"], str(b["response"]["enhanced_code"])) for b in bounces} == {
        (550, str({"class": 5, "subject": 4, "detail": 4}))
    }
    assert result.summary["delivered"] == 0 and result.summary["still_queued"] == 0


def test_delivered_rate_never_beats_the_closed_form_bound() -> None:
    # Each message costs at least MAIL/RCPT/DATA batch + body: 2 ms + 10 ms.
    limit, rate, conn_rate, per_conn = 4, 50.0, 2.0, 10
    result = run(scenario(
        messages=1500, hosts=1,
        egress={"connection_limit": limit, "max_message_rate": "50/s",
                "max_connection_rate": "2/s", "max_deliveries_per_connection": per_conn},
    ))
    t_msg = 0.002 + 0.010
    bound = min(limit / t_msg, rate, conn_rate * per_conn)  # messages per second
    times = np.sort(np.asarray([r["timestamp"] for r in records_of(result, "Delivery")]))
    assert len(times) == 1500
    # Over any 10 s window, deliveries <= bound * 10 + the bursts the buckets allow.
    window = 10
    burst = 50 + 2 * per_conn
    for start in range(int(times[0]), int(times[-1]) - window + 1):
        n = np.count_nonzero((times >= start) & (times < start + window))
        assert n <= bound * window + burst, (start, n)
    span = result.summary["drain_time"]
    assert span >= (1500 - burst) / bound


def test_same_seed_same_records_different_seed_different() -> None:
    base = dict(messages=300, host={"tempfail_rcpt": 0.2}, hosts=2,
                queue={"retry_interval": "1min"})
    a = run(scenario(**base, seed=5))
    b = run(scenario(**base, seed=5))
    c = run(scenario(**base, seed=6))
    assert a.records == b.records
    assert a.summary == b.summary
    assert a.records != c.records


def test_series_are_aligned_and_consistent() -> None:
    result = run(scenario(messages=200, hosts=2, egress={"connection_limit": 2},
                          host={"data_latency": "50ms"}))
    s = result.series
    n = len(s["t"])
    assert n > 2 and all(len(v) == n for v in s.values())
    assert np.all(np.diff(s["t"]) > 0)
    assert s["deliveries"].sum() == s["delivered_cumulative"][-1] == 200
    per_path = sum(v for k, v in s.items() if k.startswith("connections:"))
    assert np.array_equal(per_path, s["connections"])


def test_records_frame_has_one_row_per_record_with_nested_fields_flattened() -> None:
    result = run(scenario(messages=20))
    frame = result.records_frame()
    assert len(frame) == len(result.records)
    assert list(frame["type"]) == [r["type"] for r in result.records]
    delivery = next(i for i, r in enumerate(result.records) if r["type"] == "Delivery")
    assert frame["peer_address.name"][delivery] == (
        result.records[delivery]["peer_address"]["name"])


def test_time_to_deliver_percentiles_are_ordered() -> None:
    result = run(scenario(messages=400, egress={"connection_limit": 2}))
    s = result.summary
    p50, p95, p99 = (s[f"time_to_deliver_{q}"] for q in ("p50", "p95", "p99"))
    assert 0 < p50 <= p95 <= p99 <= s["drain_time"]
    # Two connections drain 400 messages over many seconds: the spread is real.
    assert p50 < p95
    # A second computation from the Delivery records (whole seconds, so each
    # latency is off by under 1 s either way) agrees with the summary.
    lat = np.array([r["timestamp"] - r["created"] for r in records_of(result, "Delivery")],
                   dtype=float)
    assert len(lat) == 400
    for q, value in ((50, p50), (95, p95), (99, p99)):
        assert abs(float(np.percentile(lat, q)) - value) <= 1.0, (q, value)


def test_to_frame_has_one_column_per_series() -> None:
    result = run(scenario(messages=50))
    frame = result.to_frame()
    assert list(frame.index) == list(result.series["t"])
    series = {k for k in result.series if k != "t"}
    assert len(series) > 2
    assert set(frame.columns) == series and len(frame.columns) == len(series)
    for name in series:
        assert list(frame[name]) == list(result.series[name]), name


def test_a_quitting_connection_counts_until_it_is_closed() -> None:
    # After max_deliveries_per_connection the session QUITs; its replacement may
    # open only once the old socket is gone, so open sockets never pass the limit.
    result = run(scenario(
        messages=300, egress={"connection_limit": 2, "max_deliveries_per_connection": 5},
        host={"data_latency": "50ms"},
    ))
    assert result.summary["delivered"] == 300
    assert max(result.summary["peak_connections"].values()) == 2
    assert result.series["connections"].max() <= 2


def test_peak_ready_depth_is_exact_not_sampled() -> None:
    # Samples every 1 s miss a burst that fills and drains in between; the
    # summary's peak comes from the engine itself.
    result = run(scenario(messages=300, egress={"max_ready": 120, "connection_limit": 4}),
                 records="all", exact=True)
    peaks = result.summary["peak_ready_depth"]
    assert max(peaks.values()) == 120
    assert any("ReadyQueueWasFull" in r["response"]["content"]
               for r in records_of(result, "Delayed"))
    # The sampled series never saw the full queue: only the exact peak did.
    assert result.series["ready_depth"].max() < 120, result.series["ready_depth"].max()


def test_outage_windows_are_reported_for_plots(tmp_path: Any) -> None:
    result = run(scenario(
        messages=200, hosts=2, egress={"connection_limit": 2},
        host={"data_latency": "50ms",
              "outages": [{"start": "1s", "end": "3s", "mode": "tempfail"}]},
    ))
    assert result.windows == [(1.0, 3.0, "mx0.example.com, mx1.example.com tempfail")]
    written = result.write(tmp_path)
    assert (tmp_path / "plot.png") in written
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


# -- records at scale: counted always, written by choice (issue 12) -------------

SQUEEZE = {"messages": 400, "egress": {"max_ready": 50, "connection_limit": 1},
           "host": {"data_latency": "50ms"}}


def _nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_outcomes_are_the_default_and_delayed_records_are_counted_not_kept() -> None:
    outcomes = run(scenario(**SQUEEZE), exact=True)
    every = run(scenario(**SQUEEZE), records="all", exact=True)
    none = run(scenario(**SQUEEZE), records="none", exact=True)
    assert records_of(outcomes, "Delayed") == [] and none.records == []
    delayed = records_of(every, "Delayed")
    assert delayed
    assert outcomes.records == [r for r in every.records if r["type"] != "Delayed"]
    # the summary does not depend on what was written
    assert outcomes.summary == every.summary == none.summary
    assert outcomes.summary["records"]["Delayed"] == len(delayed)


def test_redelay_figures_per_path_match_the_delayed_records() -> None:
    every = run(scenario(**SQUEEZE), records="all", exact=True)
    per_message: dict[str, int] = {}
    for r in records_of(every, "Delayed"):
        per_message[r["id"]] = per_message.get(r["id"], 0) + 1
    [(path, figures)] = every.summary["redelays"].items()
    assert path == next(iter(every.summary["peak_ready_depth"]))
    counts = list(per_message.values())
    assert figures["messages_delayed_at_least_once"] == len(per_message)
    assert figures["redelays"] == sum(counts)
    assert figures["redelays_per_delayed_message_p50"] == _nearest_rank(counts, 0.50)
    assert figures["redelays_per_delayed_message_p95"] == _nearest_rank(counts, 0.95)
    assert figures["redelays_per_delayed_message_max"] == max(counts)
    assert figures["redelays_per_message_mean"] == round(sum(counts) / 400, 3)
    # at t=0 all but the first 50 (plus the one taken by the connection) bounced
    assert 300 <= figures["peak_waiting_behind_full_ready_queue"] <= 400 - 50


def test_a_path_that_redelays_is_named_with_the_max_ready_that_holds_it() -> None:
    slow = {**SQUEEZE, "host": {"data_latency": "400ms"}}  # a backlog of minutes
    squeezed = run(scenario(**slow))
    [advice] = squeezed.summary["advice"]
    path = next(iter(squeezed.summary["peak_ready_depth"]))
    assert advice["path"] == path and advice["redelays_per_message_mean"] > 1.0
    suggested = advice["max_ready_to_hold_it"]
    assert advice["try"] == f"--set egress_path.max_ready={suggested}"
    assert path in advice["text"] and f"{suggested:,}" in advice["text"]
    # trying it: no path re-delays at all, so nothing to say
    held = run(scenario(**{**slow, "egress": {**SQUEEZE["egress"], "max_ready": suggested}}))
    assert held.summary["advice"] == [] and held.summary["records"].get("Delayed", 0) == 0
    assert held.summary["delivered"] == 400


def test_records_choice_is_checked() -> None:
    with pytest.raises(ValueError, match="records must be one of outcomes, all, none"):
        run(scenario(messages=5), records="some")


@pytest.mark.parametrize("progress", [None, False])
def test_progress_off(progress: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(scenario(messages=20), progress=progress).summary["delivered"] == 20
    assert capsys.readouterr() == ("", "")


def test_progress_true_prints_lines_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(scenario(messages=20), progress=True).summary["delivered"] == 20
    err = capsys.readouterr().err
    assert err.startswith("simulated 0:00:00, finished 0/") and "messages/s" in err


def test_progress_callable_sees_simulated_time_and_counts() -> None:
    seen: list[tuple[float, int, int]] = []
    run(scenario(messages=30), progress=lambda *a: seen.append(a))
    assert seen and seen[0][0] == 0.0
    assert [t for t, _, _ in seen] == sorted(t for t, _, _ in seen)
    assert max(s for _, _, s in seen) == 30


def test_progress_of_another_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="progress must be True, False, None or a callable"):
        run(scenario(messages=5), progress="yes")  # type: ignore[arg-type]


def test_line_progress_prints_at_first_then_by_interval() -> None:
    import io

    from sim.result import LineProgress

    out = io.StringIO()
    line = LineProgress(out, interval=3600.0, label="x")
    line(0.0, 0, 10)
    line(5.0, 3, 10)  # within the interval: nothing
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("x: simulated 0:00:00")
    line.interval = 0.0
    line(3725.0, 7, 10)
    assert out.getvalue().splitlines()[1].startswith("x: simulated 1:02:05, finished 7/10, ")


def test_line_progress_prints_the_finished_state_of_a_short_run() -> None:
    """A run shorter than the interval still ends on a line saying where it
    ended (every message finished), and only once."""
    import io

    from sim.result import LineProgress

    out = io.StringIO()
    result = run(scenario(messages=20), progress=LineProgress(out, interval=3600.0))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("simulated 0:00:00, finished 0/20, ")
    assert lines[1].startswith(f"simulated 0:00:{int(result.summary['drain_time']):02d}, "
                               "finished 20/20, ")


def test_line_progress_ends_without_repeating_its_last_line() -> None:
    import io

    from sim.result import LineProgress

    out = io.StringIO()
    line = LineProgress(out, interval=0.0)
    line(0.0, 0, 10)
    line(7.0, 10, 10)
    line.end(7.0, 10, 10)  # the last line said it already
    assert out.getvalue().count("\n") == 2
    line.end(8.0, 10, 10)
    assert out.getvalue().splitlines()[-1].startswith("simulated 0:00:08, finished 10/10")


def test_redelays_counted_by_the_engine_land_on_the_path_of_the_outcome() -> None:
    """The hook for an engine that counts re-delays instead of logging each one:
    `Observer.finish(id, redelays=n)`, attributed to the path of the outcome."""
    from sim.observer import Redelays

    r = Redelays()
    for i, n in enumerate((0, 3, 3, 7)):
        rid = f"m{i}"
        r.outcome({"type": "TransientFailure", "id": rid, "site": "a->b"}, "TransientFailure")
        r.outcome({"type": "Delivery", "id": rid, "site": "a->b"}, "Delivery")
        r.finish(rid, n)
    [(path, f)] = r.summary().items()
    assert path == "a->b"
    assert (f["messages_delayed_at_least_once"], f["redelays"]) == (3, 13)
    assert f["redelays_per_message_mean"] == round(13 / 4, 3)
    assert (f["redelays_per_delayed_message_p50"], f["redelays_per_delayed_message_max"]) == (3, 7)


def test_redelays_merged_count_every_parts_messages() -> None:
    """`Redelays.merged` (N nodes' together): the histograms and unfinished
    messages added up, a path's peak waiting the largest part's; one part
    merged says what it says itself."""
    from sim.observer import Redelays

    full = {"content": "Context: x, ReadyQueueWasFull. Next due in 5s"}

    def part(delays: dict[str, int], finished: set[str]) -> Redelays:
        r = Redelays()
        for rid, n in delays.items():
            for _ in range(n):
                r.delayed({"type": "Delayed", "id": rid, "response": full}, "a->b")
        for rid in finished:
            r.outcome({"type": "Delivery", "id": rid, "site": "a->b"}, "Delivery")
            r.finish(rid)
        return r

    one = part({"m1": 2, "m2": 3}, {"m1"})  # m2 still waits
    two = part({"m3": 1, "m4": 6, "m5": 1}, {"m3", "m4", "m5"})
    assert Redelays.merged([one]).summary() == one.summary()
    [(path, f)] = Redelays.merged([one, two]).summary().items()
    assert path == "a->b"
    assert (f["messages_delayed_at_least_once"], f["redelays"]) == (5, 13)
    assert f["redelays_per_message_mean"] == round(13 / 5, 3)  # 4 delivered, 1 waiting
    assert (f["redelays_per_delayed_message_p50"], f["redelays_per_delayed_message_max"]) == (2, 6)
    assert f["peak_waiting_behind_full_ready_queue"] == 3 == max(
        r.summary()[path]["peak_waiting_behind_full_ready_queue"] for r in (one, two))


def test_records_estimate_from_the_scenario() -> None:
    from sim.result import LARGE_RECORDS, RECORD_BYTES, records_estimate

    small = scenario(messages=1_000)
    size, what = records_estimate(small, "outcomes") or (0, "")
    assert size == 1_000 * 2 * RECORD_BYTES and what.startswith("1,000 messages x 2.00 records")
    assert records_estimate(small, "none") is None
    assert "Delayed" in (records_estimate(small, "all") or (0, ""))[1]
    big = scenario(messages=1_200_000, host={"tempfail_rcpt": 0.02})
    assert (records_estimate(big, "outcomes") or (0, ""))[0] > LARGE_RECORDS


@pytest.mark.parametrize("bandwidth", [None, "1MB/s"])
def test_the_body_takes_the_message_size_over_the_host_bandwidth(bandwidth: str | None) -> None:
    """The driver gives the world each message's size where a host models a
    bandwidth: a 4 MB message at 1 MB/s is answered 4 s after the dot's latency."""
    host = {**FAST_HOST, **({"data_bandwidth": bandwidth} if bandwidth else {})}
    data = {
        "name": "t", "seed": 1, "horizon": "1h",
        "traffic": [{"domain": "example.com", "messages": 3, "at": "0s", "size": "4MB"}],
        "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 10}]}},
        "hosts": {"mx.example.com": host},
        "egress_path": {"enable_tls": "Disabled"},
    }
    result = run(Scenario.from_dict(data))
    assert result.summary["delivered"] == 3
    p50 = result.summary["time_to_deliver_p50"]
    if bandwidth is None:
        assert p50 < 1.0
    else:
        assert 4.0 < p50 < 5.0


def test_a_run_leaves_the_collector_as_it_found_it() -> None:
    """The run freezes its queued messages once the arrivals are in (`gc.freeze`)
    and unfreezes them at the end; a caller's own frozen objects, or a collector
    turned off, are left alone."""
    import gc

    blast = scenario(messages=300)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    seen: list[int] = []
    run(blast, progress=lambda *_: seen.append(gc.get_freeze_count()))
    assert max(seen) > 0  # frozen while the run drained
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.freeze()  # the caller's
    try:
        frozen = gc.get_freeze_count()
        seen.clear()
        run(blast, progress=lambda *_: seen.append(gc.get_freeze_count()))
        # frozen objects that die leave the count; none is added
        assert max(seen) <= frozen and gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        run(blast)
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_simulate_prints_the_summary_of_a_run_on_several_nodes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`egress simulate scenarios/four_nodes.toml` printed a KeyError: a run on
    several nodes had no time-to-deliver figures for the summary table."""
    from engine.cli import main

    out = tmp_path / "out"
    assert main(["simulate", str(ROOT / "scenarios" / "four_nodes.toml"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "time to deliver p50" in text and "peak connections" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["delivered"] == summary["submitted"] > 0
    assert 0 < summary["time_to_deliver_p50"] <= summary["time_to_deliver_p99"]
