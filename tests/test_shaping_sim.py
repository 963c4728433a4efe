"""Shaping in the simulator: a rule fires on a provider's pushback text, holds
for its duration and lapses; the connections per path in the series show it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.result import run
from sim.scenario import Scenario
from sim.scenario_schema import ScenarioError

PATH = "unspecified->mx.push.test@smtp_client"
SCENARIO = '''
name = "pushback"
seed = 3
horizon = "3h"
sample_interval = "10s"
shaping = ["shaping.toml"]

[[traffic]]
domain = "push.test"
rate = "5/s"
duration = "1h"

[domains."push.test"]
mx = ["mx.push.test"]

[hosts."mx.push.test"]
max_connections = 50
tempfail_rcpt = { probability = 0.01, reply = "452 4.2.2 Mailbox full" }

[egress_path]
connection_limit = 8

# the provider pushes back for ten minutes
[[hosts."mx.push.test".outages]]
start = "10m"
end = "20m"
mode = "tempfail"
probability = 0.3
reply = "421 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred"
'''


def _write(tmp: Path, shaping: str, scenario: str = SCENARIO) -> Path:
    (tmp / "shaping.toml").write_text(shaping)
    (tmp / "s.toml").write_text(scenario)
    return tmp / "s.toml"


RULE = r'''
[["default".automation]]
regex = 'Messages from \d+\.\d+\.\d+\.\d+ temporarily deferred'
action = [{SetConfig={name="connection_limit", value=1}},
          {SetConfig={name="max_message_rate", value="1/s"}}]
duration = "20m"
'''


def _shaping_records(result):  # type: ignore[no-untyped-def]
    return [r for r in result.records if r["type"] == "Shaping"]


def test_the_rule_fires_holds_and_lapses(tmp_path: Path) -> None:
    sc = Scenario.from_toml(_write(tmp_path, RULE))
    result = run(sc)
    recs = _shaping_records(result)
    assert recs and recs[0]["event"] == "fired" and recs[0]["site"] == PATH
    assert recs[-1]["event"] == "lapsed"
    fired = recs[0]["timestamp"] - sc.start_epoch
    lapsed = recs[-1]["timestamp"] - sc.start_epoch
    assert lapsed >= fired + 20 * 60
    t = result.series["t"]
    conns = result.series[f"connections:{PATH}"]
    held = (t > fired + 1) & (t < lapsed - 1)
    assert conns[held].max() <= 1  # the override in force: one connection
    before = t < fired
    after = t > lapsed + 60
    assert conns[before].max() > 1 and conns[after].max() > 1
    assert result.summary["records"]["Shaping"] == len(recs)


def test_without_the_file_no_rule_fires(tmp_path: Path) -> None:
    text = SCENARIO.replace('shaping = ["shaping.toml"]\n', "")
    result = run(Scenario.from_toml(_write(tmp_path, RULE, text)))
    assert _shaping_records(result) == [] and "Shaping" not in result.summary["records"]
    assert np.asarray(result.series[f"connections:{PATH}"]).max() > 1


def test_threshold_in_the_simulator_needs_n_matches(tmp_path: Path) -> None:
    rule = RULE.replace('duration = "20m"', 'duration = "20m"\ntrigger = {Threshold = "500/min"}')
    assert _shaping_records(run(Scenario.from_toml(_write(tmp_path, rule)))) == []
    rule = RULE.replace('duration = "20m"', 'duration = "20m"\ntrigger = {Threshold = "3/min"}')
    recs = _shaping_records(run(Scenario.from_toml(_write(tmp_path, rule))))
    assert recs[0]["event"] == "fired"


def test_a_bad_shaping_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"shaping.*connection_limt"):
        Scenario.from_toml(_write(tmp_path, '["default"]\nconnection_limt = 2\n'))
    (tmp_path / "shaping.toml").unlink()
    with pytest.raises(ScenarioError, match="cannot read the shaping file"):
        Scenario.from_toml(tmp_path / "s.toml")
