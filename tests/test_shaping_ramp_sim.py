"""Ramp-up in the simulator: the provider pushes back, AdjustConfig halves the
connection limit, and once the pushback stops the limit steps back up every
ramp interval; the connections per path in the series follow the steps."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from sim.result import run
from sim.scenario import Scenario

PATH = "unspecified->mx.push.test@smtp_client"
SCENARIO = '''
name = "ramp"
seed = 3
horizon = "2h"
sample_interval = "5s"
shaping = ["shaping.toml"]

[[traffic]]
domain = "push.test"
rate = "6/s"
duration = "1h"

[domains."push.test"]
mx = ["mx.push.test"]

[hosts."mx.push.test"]
max_connections = 50
data_latency = "1s"

[egress_path]
connection_limit = 8

[[hosts."mx.push.test".outages]]
start = "10m"
end = "15m"
mode = "tempfail"
probability = 0.3
reply = "451 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred"
'''

RAMP = '''
[["default".automation]]
regex = 'temporarily deferred'
duration = "10m"

# the action as a sub-table of the rule (the same as an inline table)
["default".automation.action.AdjustConfig]
name = "connection_limit"
decrease_percent = 50
floor_amount = 2
ramp_step_amount = 1
ramp_up_interval = "5m"
'''


def test_ramp_steps_land_on_schedule_and_the_connections_follow(tmp_path: Path) -> None:
    (tmp_path / "shaping.toml").write_text(RAMP)
    (tmp_path / "s.toml").write_text(SCENARIO)
    sc = Scenario.from_toml(tmp_path / "s.toml")
    result = run(sc)
    t0 = sc.start_epoch
    ramp = [r for r in result.records if r["type"] == "Shaping" and "value" in r]
    events = [(r["event"], r["value"]) for r in ramp]
    # halved (compounding at most once per interval while the pushback lasts), then +1 a step
    downs = [v for e, v in events if e == "ramp_decreased"]
    assert downs[0] == 4 and downs == sorted(downs, reverse=True) and downs[-1] >= 2
    ups = [(r["timestamp"] - t0, r["value"]) for r in ramp if r["event"] != "ramp_decreased"]
    assert [v for _, v in ups] == list(range(downs[-1] + 1, 9))
    assert ramp[-1]["event"] == "ramp_restored" and ramp[-1]["value"] == 8
    # the first step comes one interval after the last pushback, then one every interval
    pushed = [r["timestamp"] - t0 for r in result.records if r["type"] == "TransientFailure"
              and "temporarily deferred" in (r["response"]["content"] or "")]
    assert abs(ups[0][0] - (max(pushed) + 300)) <= 1
    assert all(b - a == 300 for (a, _), (b, _) in itertools.pairwise(ups))
    # the connections per path: none opens above the value in force (those open at a
    # decrease run on, as KumoMTA's dispatchers do, until they close), and each step
    # up is taken: the connections rise to it
    t = result.series["t"]
    conns = np.asarray(result.series[f"connections:{PATH}"])
    first_down = ramp[0]["timestamp"] - t0
    limits = [(first_down, downs[-1]), *ups]
    bounds = [*limits[1:], (float(t[-1]), 8)]
    for (start, value), (end, _) in zip(limits, bounds, strict=True):
        seen = conns[(t > start + 1) & (t < end - 1)]
        over = np.nonzero(seen > value)[0]
        settled = seen[over[-1] + 1:] if len(over) else seen
        assert (np.diff(seen[:len(seen) - len(settled)]) <= 0).all(), (start, value)
        if start != first_down:
            assert seen.max() == value, (start, value, seen.max())
    assert conns[t < first_down].max() > downs[0]
