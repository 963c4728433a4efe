"""Scenario `[client]` (`round_trip_overhead`, `connect_overhead`): read, validated, added
per phase (per connection attempt) by the world."""

from __future__ import annotations

import random
from typing import Any

import pytest

import sim
from engine.effects import SmtpCommand, Verb
from sim import ScenarioError
from sim.scenario import Scenario
from sim.scenario_world import ClientSpec
from sim.world import World

MX = "mx.example.com"


def scenario(client: Any = None, host: dict[str, Any] | None = None, **top: Any) -> Scenario:
    d: dict[str, Any] = {
        "name": "t",
        "traffic": [{"domain": "example.com", "messages": 100, "size": "1KB"}],
        "domains": {"example.com": {"mx": [{"host": MX, "preference": 10}]}},
        "hosts": {MX: {"connect_latency": "5ms", "command_latency": "4ms",
                       "data_latency": "20ms", "tls_latency": "3ms", **(host or {})}},
        "egress_path": {"connection_limit": 1},
        **top,
    }
    if client is not None:
        d["client"] = client
    return Scenario.from_dict(d, source="x.toml")


BATCH = (SmtpCommand(verb=Verb.MAIL, arg="a@b.example"),
         SmtpCommand(verb=Verb.RCPT, arg="r@example.com"), SmtpCommand(verb=Verb.DATA))


def test_absent_client_table_means_no_overhead() -> None:
    s = scenario()
    assert s.client == ClientSpec(round_trip_overhead=0.0, connect_overhead=0.0)
    w = World(s, random.Random(1))
    assert w.overhead == 0.0
    assert w.connect_overhead == 0.0
    assert w.connect(MX, "", 0.0).delay == pytest.approx(0.005)
    assert w.body(MX, 0, 0.0)[0] == pytest.approx(0.020)


def test_overhead_is_added_once_per_phase() -> None:
    w = World(scenario({"round_trip_overhead": "0.5ms"}), random.Random(1))
    assert w.overhead == pytest.approx(0.0005)
    assert w.connect(MX, "", 0.0).delay == pytest.approx(0.0055)
    assert w.ehlo(MX, 0.0)[0] == pytest.approx(0.0045)
    assert [d for d, _ in w.reply_batch(MX, BATCH, 0.0)] == pytest.approx([0.0045] * 3)
    assert w.body(MX, 1000, 0.0)[0] == pytest.approx(0.0205)
    assert w.starttls(MX, 0.0)[0] == pytest.approx(0.003)  # the handshake: not a command


def test_a_host_that_does_not_pipeline_pays_it_per_command() -> None:
    w = World(scenario({"round_trip_overhead": "1ms"}, {"pipelining": False}), random.Random(1))
    assert [d for d, _ in w.reply_batch(MX, BATCH, 0.0)] == pytest.approx(
        [0.005, 0.010, 0.015])


def test_simulated_drain_time_grows_by_two_round_trips_per_message() -> None:
    # One connection, constant latencies: each message is one batch and one body.
    base = sim.run(scenario()).summary["drain_time"]
    slower = sim.run(scenario({"round_trip_overhead": "1ms"})).summary["drain_time"]
    # 100 messages x 2 round trips x 1 ms, plus the connection's own four: connect,
    # EHLO, STARTTLS, EHLO again.
    assert slower - base == pytest.approx(100 * 2 * 0.001 + 4 * 0.001, abs=1e-6)


@pytest.mark.parametrize(("client", "expected"), [
    ({"round_trip_overhead": "-1ms"}, "x.toml: client.round_trip_overhead: expected a duration"),
    ({"round_trip_overhead": "fast"}, "x.toml: client.round_trip_overhead: expected a duration"),
    ({"round_trip_overhead": 2}, "x.toml: client.round_trip_overhead: expected a duration of at "
                                 "most 1s (the client's own time per round trip, such as "
                                 '"0.5ms"), got 2'),
    ({"overhead": "1ms"}, "x.toml: client.overhead: unknown field; expected one of: "
                          "connect_overhead, round_trip_overhead"),
    ({"connect_overhead": "-1ms"}, "x.toml: client.connect_overhead: expected a duration"),
    ({"connect_overhead": "soon"}, "x.toml: client.connect_overhead: expected a duration"),
    ({"connect_overhead": "2s"}, "x.toml: client.connect_overhead: expected a duration of at "
                                 "most 1s (the client's own cost of opening a connection, such "
                                 "as \"1ms\"), got '2s'"),
    ("0.5ms", "x.toml: client: expected a table, got '0.5ms'"),
])
def test_wrong_client_fields_are_named(client: Any, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario(client)
    assert str(info.value).startswith(expected), str(info.value)


def test_override_sets_it() -> None:
    s = scenario().with_overrides(['client.round_trip_overhead="0.25ms"'])
    assert s.client == ClientSpec(round_trip_overhead=0.00025)


def test_connect_overhead_is_read_and_overridden() -> None:
    s = scenario({"connect_overhead": "1.5ms", "round_trip_overhead": "0.25ms"})
    assert s.client == ClientSpec(round_trip_overhead=0.00025, connect_overhead=0.0015)
    t = scenario().with_overrides(['client.connect_overhead="0.8ms"'])
    assert t.client == ClientSpec(round_trip_overhead=0.0, connect_overhead=0.0008)


def test_connect_overhead_is_paid_once_per_connection_attempt() -> None:
    w = World(scenario({"connect_overhead": "1ms", "round_trip_overhead": "0.5ms"}),
              random.Random(1))
    # connect latency 5 ms + the banner's round trip 0.5 ms + opening it 1 ms
    assert w.connect(MX, "", 0.0).delay == pytest.approx(0.0065)
    # nothing else moves: EHLO, a batch and the body pay the round trip only
    assert w.ehlo(MX, 0.0)[0] == pytest.approx(0.0045)
    assert [d for d, _ in w.reply_batch(MX, BATCH, 0.0)] == pytest.approx([0.0045] * 3)
    assert w.body(MX, 1000, 0.0)[0] == pytest.approx(0.0205)


def test_a_refused_connection_pays_the_connect_overhead_too() -> None:
    s = scenario({"connect_overhead": "2ms", "round_trip_overhead": "0.5ms"},
                 {"refuse_connections": 1.0})
    r = World(s, random.Random(1)).connect(MX, "", 0.0)
    assert (r.kind, r.delay) == ("refused", pytest.approx(0.007))  # no banner: no round trip


def test_simulated_drain_time_grows_by_the_overhead_per_connection() -> None:
    # One connection for 100 messages: the connect overhead is paid once.
    base = sim.run(scenario()).summary["drain_time"]
    slower = sim.run(scenario({"connect_overhead": "3ms"})).summary["drain_time"]
    assert slower - base == pytest.approx(0.003, abs=1e-6)
