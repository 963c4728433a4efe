"""engine.shaping_ramp: AdjustConfig lowers a value, then ramps it back, as events
in and effects out."""

from __future__ import annotations

from typing import Any

import pytest

from engine.effects import SetTimer
from engine.engine import Engine
from engine.errors import ConfigError
from engine.reply import Reply
from engine.shaping import Adjust
from engine.shaping_load import load_shaping
from engine.shaping_rules import in_force
from engine.throttle import parse_throttle
from tests.support.engine_harness import PATH, World, policy, prime, records, submit

PUSHBACK = Reply.make(451, "4.7.0", "[TS01] Messages from 192.0.2.7 temporarily deferred")
OK = Reply.make(250, "2.1.5", "ok")

RAMP = ('''
[["default".automation]]
regex = 'temporarily deferred'
duration = "1m"
''' 'action = {AdjustConfig = {name = "connection_limit", decrease_percent = 50, '
        'floor_amount = 2, ramp_step_percent = 25, ramp_up_interval = "5m"}}\n')


def _engine(shaping: str, **path: Any) -> tuple[Engine, World]:
    eng = Engine(policy(**path), seed=1, shaping=load_shaping([("s.toml", shaping)]))
    w = World(eng)
    prime(eng)
    return eng, w


def _ramp_events(fx: list[Any]) -> list[tuple[str, int]]:
    return [(r["event"], r["value"]) for r in records(fx, "Shaping") if "value" in r]


def test_the_value_drops_then_steps_back_every_interval_to_the_base() -> None:
    eng, w = _engine(RAMP, connection_limit=8)
    w.rcpt_reply = lambda r: PUSHBACK
    fx = w.feed(submit(1, at=0.0))
    assert _ramp_events(fx) == [("ramp_decreased", 4)]
    [down] = [r for r in records(fx, "Shaping") if r["event"] == "ramp_decreased"]
    assert down["name"] == "connection_limit" and down["previous"] == 8 and down["base"] == 8
    assert down["floor"] == 2 and down["site"] == PATH and down["next_step"] == 300
    assert "temporarily deferred" in down["response"]
    assert eng.paths[PATH].cfg.connection_limit == 4
    assert eng.metrics.totals["shaping_ramp_decreased"] == 1
    w.rcpt_reply = lambda r: OK
    steps = []
    for at, want in ((300.0, 5), (600.0, 6), (900.0, 7)):
        fx = w.run(at)
        assert SetTimer(timer=("shaping", 2), at=at + 300) in fx
        steps += _ramp_events(fx)
        assert eng.paths[PATH].cfg.connection_limit == want, at
    assert steps == [("ramp_increased", 5), ("ramp_increased", 6), ("ramp_increased", 7)]
    fx = w.run(1200.0)
    assert _ramp_events(fx) == [("ramp_restored", 8)]
    assert eng.paths[PATH].cfg.connection_limit == 8 and in_force(eng) == []
    assert eng.metrics.totals["shaping_ramp_increased"] == 3
    assert eng.metrics.totals["shaping_ramp_restored"] == 1


def test_a_burst_lowers_once_and_a_later_match_compounds_and_restarts_the_wait() -> None:
    eng, w = _engine(RAMP, connection_limit=8)
    w.rcpt_reply = lambda r: PUSHBACK
    fx = []
    for i, at in enumerate((0.0, 1.0, 2.0)):  # one burst: lowered once
        w.now = at
        fx += w.feed(submit(i, at=at))
    assert _ramp_events(fx) == [("ramp_decreased", 4)]
    assert eng.timers[("shaping", 2)] == 302.0  # the wait restarts at each match
    w.now = 302.0
    fx = w.feed(submit(9, at=302.0))  # a match as the step was due: lower again
    assert _ramp_events(fx) == [("ramp_decreased", 2)]
    w.now = 900.0
    fx = w.feed(submit(10, at=900.0))  # at the floor: stays there
    assert _ramp_events(fx) == []
    assert eng.paths[PATH].cfg.connection_limit == 2 and eng.timers[("shaping", 2)] == 1200.0


def test_a_throttle_keeps_its_period_and_an_amount_ramp() -> None:
    rule = RAMP.replace('name = "connection_limit", decrease_percent = 50, floor_amount = 2, '
                        'ramp_step_percent = 25',
                        'name = "max_message_rate", decrease_amount = 60, floor_percent = 10, '
                        'ramp_step_amount = 30')
    eng, w = _engine(rule, max_message_rate="100/min")
    w.rcpt_reply = lambda r: PUSHBACK
    w.feed(submit(1))
    assert eng.paths[PATH].cfg.max_message_rate == parse_throttle("40/min")
    w.rcpt_reply = lambda r: OK
    w.run(300.0)
    assert eng.paths[PATH].cfg.max_message_rate == parse_throttle("70/min")
    w.run(600.0)
    assert eng.paths[PATH].cfg.max_message_rate == parse_throttle("100/min")
    assert [r for r in in_force(eng) if "name" in r] == []


def test_an_unset_value_has_nothing_to_lower() -> None:
    rule = RAMP.replace('"connection_limit"', '"max_connection_rate"')
    eng, w = _engine(rule)
    w.rcpt_reply = lambda r: PUSHBACK
    fx = w.feed(submit(1))
    assert _ramp_events(fx) == [] and eng.paths[PATH].cfg.max_connection_rate is None


def test_in_force_shows_the_ramp_and_why() -> None:
    eng, w = _engine(RAMP, connection_limit=8)
    w.rcpt_reply = lambda r: PUSHBACK
    w.feed(submit(1))
    w.run(61.0)  # the firing lapses after its duration; the ramp goes on
    [ramp] = in_force(eng)
    assert ramp["rule"] == "default#0" and ramp["path"] == PATH and ramp["value"] == 4
    assert ramp["next_step"] == 300.0 and "temporarily deferred" in ramp["response"]
    assert ramp["action"] == {"AdjustConfig": {
        "name": "connection_limit", "decrease_percent": 50, "floor_amount": 2,
        "ramp_step_percent": 25, "ramp_up_interval": "5m"}}


def test_same_events_same_effects_and_a_snapshot_carries_the_ramp() -> None:
    runs = []
    for _ in range(2):
        eng, w = _engine(RAMP, connection_limit=8)
        w.rcpt_reply = lambda r: PUSHBACK
        fx = w.feed(submit(1))
        w.rcpt_reply = lambda r: OK
        fx += w.run(450.0)
        back = Engine.restore(eng.snapshot(), policy(connection_limit=8))
        assert back.paths[PATH].cfg.connection_limit == 5
        fx += World(back).feed(back_timer := _timer(back))
        assert back.paths[PATH].cfg.connection_limit == 6, back_timer
        runs.append(fx)
    assert runs[0] == runs[1]


def _timer(eng: Engine) -> Any:
    from engine.events import TimerFired
    return TimerFired(at=600.0, timer=("shaping", 2))


def test_adjust_domain_config_lowers_every_sources_path() -> None:
    rule = RAMP.replace("AdjustConfig", "AdjustDomainConfig")
    eng, w = _engine(rule, connection_limit=8)
    w.rcpt_reply = lambda r: PUSHBACK
    w.feed(submit(1))
    assert eng.paths[PATH].cfg.connection_limit == 4


@pytest.mark.parametrize("arg, why", [
    ('name = "connection_limit", decrease_percent = 50, ramp_step_percent = 10',
     "missing field 'ramp_up_interval'"),
    ('name = "max_ready", decrease_percent = 50, ramp_step_percent = 10, ramp_up_interval = "1m"',
     "name: 'max_ready' is not one of"),
    ('name = "connection_limit", decrease_percent = 50, decrease_amount = 2, '
     'ramp_step_percent = 10, ramp_up_interval = "1m"',
     "give one of decrease_percent or decrease_amount"),
    ('name = "connection_limit", decrease_percent = 150, ramp_step_percent = 10, '
     'ramp_up_interval = "1m"', "decrease_percent: 150 is not a percent"),
    ('name = "connection_limit", decrease_percent = 50, ramp_step_amount = 1.5, '
     'ramp_up_interval = "1m"', "ramp_step_amount: 1.5 is not a whole number"),
    ('name = "connection_limit", decrease_percent = 50, ramp_step_percent = 10, '
     'ramp_up_interval = "1m", step = 3', "unknown field 'step'"),
])
def test_a_bad_adjust_action_names_the_file_table_and_field(arg: str, why: str) -> None:
    text = ('[["default".automation]]\nregex = "x"\nduration = "1m"\n'
            f'action = {{AdjustConfig = {{{arg}}}}}\n')
    with pytest.raises(ConfigError, match=r"s\.toml: \[\"default\" action AdjustConfig\]: "
                       + why.replace("(", r"\(").replace(".", r"\.")):
        load_shaping([("s.toml", text)])


def test_adjust_arithmetic() -> None:
    a = Adjust(decrease=50, decrease_percent=True, step=25, step_percent=True, interval=60,
               floor=2)
    assert [a.lowered(v, 8) for v in (8, 4, 3, 2)] == [4, 2, 2, 2]
    assert [a.raised(v, 8) for v in (2, 4, 7)] == [3, 5, 8]
    pct = Adjust(decrease=10, decrease_percent=True, step=1, step_percent=False, interval=60,
                 floor=25, floor_percent=True)
    assert pct.floor_of(10) == 3 and pct.lowered(5, 10) == 4 and pct.lowered(3, 10) == 3
