"""engine.shaping_rules: automation rules as events in, effects out."""

from __future__ import annotations

from typing import Any

from engine.effects import Connect, SetTimer
from engine.engine import Engine
from engine.events import PolicyReloaded, TimerFired
from engine.reply import Reply
from engine.shaping_load import load_shaping
from engine.shaping_rules import describe, in_force
from engine.throttle import parse_throttle
from tests.support.engine_harness import PATH, World, of, policy, prime, records, submit

PUSHBACK = Reply.make(451, "4.7.0", "[TS01] Messages from 192.0.2.7 temporarily deferred")
OK = Reply.make(250, "2.1.5", "ok")


def _engine(shaping: str, **path: Any) -> tuple[Engine, World]:
    eng = Engine(policy(**path), seed=1, shaping=load_shaping([("s.toml", shaping)]))
    w = World(eng)
    prime(eng)
    return eng, w


SET_CONFIG = '''
[["default".automation]]
regex = 'Messages from \\d+\\.\\d+\\.\\d+\\.\\d+ temporarily deferred'
action = [{SetConfig={name="max_message_rate", value="1/minute"}},
          {SetConfig={name="connection_limit", value=1}}]
duration = "90m"
'''


def test_set_config_fires_at_once_and_lapses_after_its_duration() -> None:
    eng, w = _engine(SET_CONFIG, connection_limit=5)
    w.rcpt_reply = lambda r: PUSHBACK
    w.now = 10.0
    fx = w.feed(submit(1, at=10.0))
    [fired] = records(fx, "Shaping")
    assert fired["event"] == "fired" and fired["rule"] == "default#0"
    assert fired["site"] == PATH and fired["enforced"] is True
    assert fired["actions"] == [{"SetConfig": {"name": "max_message_rate", "value": "1/m"}},
                                {"SetConfig": {"name": "connection_limit", "value": 1}}]
    assert SetTimer(timer=("shaping", 1), at=10.0 + 5400) in fx
    cfg = eng.paths[PATH].cfg
    assert cfg.connection_limit == 1 and cfg.max_message_rate == parse_throttle("1/min")
    assert eng.metrics.totals["shaping_rule_fired"] == 1
    [shown] = in_force(eng)
    assert shown["rule"] == "default#0" and shown["path"] == PATH and shown["until"] == 5410.0
    assert shown["overrides"] == {"max_message_rate": "1/m", "connection_limit": 1}
    w.rcpt_reply = lambda r: OK
    fx = w.run(5410.0)
    [lapsed] = records(fx, "Shaping")
    assert lapsed["event"] == "lapsed" and lapsed["id"] == fired["id"]
    cfg = eng.paths[PATH].cfg
    assert cfg.connection_limit == 5 and cfg.max_message_rate is None
    assert eng.metrics.totals["shaping_rule_lapsed"] == 1 and in_force(eng) == []


def test_a_repeat_firing_extends_it() -> None:
    eng, w = _engine(SET_CONFIG)
    w.rcpt_reply = lambda r: PUSHBACK
    w.feed(submit(1, at=0.0))
    w.now = 100.0
    fx = w.feed(submit(2, at=100.0))
    assert [r["event"] for r in records(fx, "Shaping")] == ["extended"]
    assert SetTimer(timer=("shaping", 1), at=100.0 + 5400) in fx
    assert eng.timers[("shaping", 1)] == 5500.0


def test_non_matching_responses_do_nothing() -> None:
    eng, w = _engine(SET_CONFIG, connection_limit=5)
    fx = w.feed(submit(1))
    assert records(fx, "Shaping") == [] and eng.paths[PATH].cfg.connection_limit == 5


THRESHOLD = '''
[["example.com".automation]]
regex = "RL0000"
action = {SetConfig={name="max_connection_rate", value="10000/h"}}
trigger = {Threshold="3/min"}
duration = "2 hours"
'''


def test_threshold_needs_n_matches_within_its_window() -> None:
    eng, w = _engine(THRESHOLD)
    w.rcpt_reply = lambda r: Reply.make(451, None, "RL000001 slow down")
    fired = []
    for i, at in enumerate((0.0, 30.0, 70.0, 80.0)):  # 0 has left the window at 70
        w.now = at
        fired += records(w.feed(submit(i, at=at)), "Shaping")
        if i < 3:
            assert fired == [], at
    assert [r["event"] for r in fired] == ["fired"]
    assert eng.paths[PATH].cfg.max_connection_rate == parse_throttle("10000/h")


SUSPEND = '''
[["example.com".automation]]
regex = "\\\\[TS?S04\\\\]"
action = "Suspend"
duration = "2 hours"
'''


def test_suspend_holds_the_ready_queue_until_the_lapse() -> None:
    eng, w = _engine(SUSPEND)
    w.rcpt_reply = lambda r: Reply.make(451, "4.7.0", "[TSS04] deferred")
    fx = w.feed(submit(1, at=0.0))
    assert [r["event"] for r in records(fx, "Shaping")] == ["fired"]
    w.rcpt_reply = lambda r: OK
    w.now = 10.0
    fx = w.feed(submit(2, at=10.0))
    assert of(fx, Connect) == [] and eng.ready_depths() == {PATH: 1}
    fx = w.run(7200.0)
    assert "lapsed" in [r["event"] for r in records(fx, "Shaping")]
    assert records(fx, "Delivery") != [] and eng.ready_depths().get(PATH, 0) == 0


DOMAIN_CONFIG = '''
[["default".automation]]
regex = "busy"
action = [{SetDomainConfig={name="connection_limit", value=2}}, "SuspendTenant"]
duration = "1m"
'''


def test_set_domain_config_and_a_tenant_action_on_a_queue_without_tenant() -> None:
    eng, w = _engine(DOMAIN_CONFIG, connection_limit=9)
    w.rcpt_reply = lambda r: Reply.make(451, None, "Server busy")
    [rec] = records(w.feed(submit(1)), "Shaping")
    assert rec["enforced"] is False  # SuspendTenant: the message's queue has no tenant
    assert eng.paths[PATH].cfg.connection_limit == 2
    w.run(61.0)
    assert eng.paths[PATH].cfg.connection_limit == 9


def test_internal_responses_are_skipped_unless_match_internal() -> None:
    for flag, want in (("false", 0), ("true", 1)):
        _eng, w = _engine(SET_CONFIG.replace("duration", f"match_internal = {flag}\nduration"))
        w.rcpt_reply = lambda r: Reply.make(
            451, None, "KumoMTA internal: Messages from 1.2.3.4 temporarily deferred")
        assert len(records(w.feed(submit(1)), "Shaping")) == want


def test_same_events_same_effects() -> None:
    runs = []
    for _ in range(2):
        _eng, w = _engine(THRESHOLD)
        w.rcpt_reply = lambda r: Reply.make(451, None, "RL000001")
        fx = []
        for i in range(5):
            w.now = float(i)
            fx += w.feed(submit(i, at=float(i)))
        fx += w.run(8000.0)
        runs.append(fx)
    assert runs[0] == runs[1]


def test_a_snapshot_keeps_the_rules_in_force_and_the_policys_shaping_replaces_the_files() -> None:
    eng, w = _engine(SET_CONFIG, connection_limit=5)
    w.rcpt_reply = lambda r: PUSHBACK
    w.feed(submit(1))
    pol = policy(connection_limit=5)
    back = Engine.restore(eng.snapshot(), pol)
    assert back.paths[PATH].cfg.connection_limit == 1 and ("shaping", 1) in back.timers
    assert back.shaping is not None  # the snapshot's, the policy carrying none
    pol.shaping = load_shaping([("other.toml", '["default"]\nmax_ready = 7\n')])
    again = Engine.restore(eng.snapshot(), pol)
    assert again.shaping is pol.shaping and again.automation.rules == {}
    fx = again.handle(TimerFired(at=5400.0, timer=("shaping", 1)))
    assert [r["event"] for r in records(fx, "Shaping")] == ["lapsed"]
    assert again.paths[PATH].cfg.connection_limit == 5


def test_the_policy_can_carry_the_shaping() -> None:
    pol = policy(connection_limit=5)
    pol.shaping = load_shaping([("s.toml", '["default"]\nconnection_limit = 3\n')])
    eng = Engine(pol, seed=1)
    World(eng).feed(submit(1))
    assert eng.paths[PATH].cfg.connection_limit == 3


def test_a_policy_reload_keeps_the_overrides_and_takes_the_new_files() -> None:
    eng, w = _engine(SET_CONFIG, connection_limit=5)
    w.rcpt_reply = lambda r: PUSHBACK
    w.feed(submit(1))
    new = policy(connection_limit=6)
    new.shaping = load_shaping([("s.toml", SET_CONFIG + '\n["default"]\nmax_ready = 7\n')])
    eng.policy = new
    w.feed(PolicyReloaded(at=10.0))
    cfg = eng.paths[PATH].cfg
    assert cfg.connection_limit == 1 and cfg.max_ready == 7 and eng.shaping is new.shaping
    w.rcpt_reply = lambda r: OK
    w.run(5400.0)
    assert eng.paths[PATH].cfg.connection_limit == 6  # the new policy's, once lapsed


def test_describe_says_what_acts_until_when_and_why() -> None:
    eng, w = _engine(SET_CONFIG, connection_limit=5)
    w.rcpt_reply = lambda r: PUSHBACK
    w.feed(submit(1))
    [entry] = in_force(eng, source="unspecified",
                       site=PATH.split("->")[1].removesuffix("@smtp_client"))
    assert describe(entry) == (
        f"default#0 on {PATH}: SetConfig max_message_rate=1/m; SetConfig connection_limit=1 "
        "until 1970-01-01 01:30:00Z (matched: 451 4.7.0 [TS01] Messages from 192.0.2.7 "
        "temporarily deferred)")
    assert in_force(eng, site="elsewhere") == [] and in_force(eng, source="other") == []


PROVIDER = '''
[provider."ex"]
match = [{MXSuffix = ".example.com"}]
connection_limit = 3
'''


def test_a_provider_matched_by_mx_shapes_the_first_config_of_a_path() -> None:
    """The first messages of a domain wait for its MX; the path they then create
    is asked with the answer's hosts, so a provider matched by MXSuffix applies
    at once (before, only from the config's first refresh, 60 s later)."""
    from engine.events import Resolved
    from tests.support.engine_harness import MX

    eng = Engine(policy(connection_limit=10), seed=1,
                 shaping=load_shaping([("s.toml", PROVIDER)]))
    eng.handle(submit(1))  # parked: example.com's MX is being asked
    assert PATH not in eng.paths
    eng.handle(Resolved(at=0.5, domain="example.com", mx=MX, ttl=300.0))
    cfg = eng.paths[PATH].cfg
    assert (cfg.connection_limit, cfg.provider_name) == (3, "ex")
