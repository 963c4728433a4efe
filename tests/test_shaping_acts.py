"""engine.shaping_acts: the tenant and campaign suspensions, the bounces and backoff
mode, as events in and effects out."""

from __future__ import annotations

from typing import Any

from engine.effects import CancelTimer
from engine.engine import Engine
from engine.events import AdminCancel
from engine.reply import Reply
from engine.shaping_load import load_shaping
from engine.shaping_rules import in_force
from tests.support.engine_harness import PATH, World, policy, prime, records, submit

OK = Reply.make(250, "2.1.5", "ok")
PUSH = "push@example.com"  # the recipient the provider pushes back on


def _engine(action: str, reply: str = "451 4.7.1 go away", duration: str = "1h",
            **path: Any) -> tuple[Engine, World]:
    text = (f'[["default".automation]]\nregex = "go away"\nduration = "{duration}"\n'
            f'action = {action}\n')
    eng = Engine(policy(**path), seed=1, shaping=load_shaping([("s.toml", text)]))
    w = World(eng)
    code, enh, msg = reply.split(" ", 2)
    push = Reply.make(int(code), enh, msg)
    w.rcpt_reply = lambda r: push if r == PUSH else OK
    prime(eng)
    return eng, w


def _ids(fx: list[Any], kind: str) -> list[str]:
    return [r["id"] for r in records(fx, kind)]


def test_suspend_tenant_holds_the_tenants_mail_in_the_scheduled_queue_until_the_lapse() -> None:
    eng, w = _engine('"SuspendTenant"')
    fx = w.feed(submit(1, rcpts=(PUSH,), tenant="t1"))
    w.rcpt_reply = lambda r: OK  # the provider pushes back once
    [fired] = records(fx, "Shaping")
    assert fired["enforced"] is True and fired["admin"] == ["shaping-1-0"]
    rule = eng.admin_rules.rules["shaping-1-0"]
    assert (rule.kind, rule.domain, rule.tenant, rule.campaign) == ("suspend", "example.com",
                                                                    "t1", "")
    assert rule.reason == "automation rule: go away domain=example.com tenant=t1"
    assert rule.expires == 3600.0
    w.now = 10.0
    fx = w.feed(submit(2, at=10.0, tenant="t1"))
    assert _ids(fx, "Delayed") == ["m2"] and _ids(fx, "Delivery") == []
    assert "AdminSuspend shaping-1-0" in records(fx, "Delayed")[0]["response"]["content"]
    fx = w.feed(submit(3, at=10.0, tenant="t2"))  # another tenant goes on
    assert _ids(fx, "Delivery") == ["m3"]
    [shown] = in_force(eng)
    assert shown["admin"] == ["shaping-1-0"] and shown["response"] == "451 4.7.1 go away"
    fx = w.run(3600.0)
    assert [r["event"] for r in records(fx, "Shaping")] == ["lapsed"]
    assert "m2" in _ids(fx, "Delivery") and eng.admin_rules.rules == {}


def test_suspend_campaign_narrows_to_the_campaign() -> None:
    eng, w = _engine('"SuspendCampaign"')
    w.feed(submit(1, rcpts=(PUSH,), tenant="t1", campaign="c1"))
    assert eng.admin_rules.rules["shaping-1-0"].campaign == "c1"
    fx = w.feed(submit(2, tenant="t1", campaign="c1"))
    fx += w.feed(submit(3, tenant="t1", campaign="c2"))
    assert _ids(fx, "Delayed") == ["m2"] and _ids(fx, "Delivery") == ["m3"]


def test_a_tenant_action_on_a_queue_without_tenant_does_nothing() -> None:
    eng, w = _engine('["SuspendTenant", "BounceTenant"]')
    [fired] = records(w.feed(submit(1, rcpts=(PUSH,))), "Shaping")
    assert fired["enforced"] is False and eng.admin_rules.rules == {}


def test_bounce_bounces_queued_mail_the_trigger_and_new_mail_until_the_lapse() -> None:
    eng, w = _engine('"Bounce"', duration="10m")
    # m1 waits in the scheduled queue for its retry
    w.rcpt_reply = lambda r: Reply.make(451, "4.3.0", "later") if r == "wait@example.com" else (
        Reply.make(451, "4.7.1", "go away") if r == PUSH else OK)
    w.feed(submit(1, rcpts=("wait@example.com",), tenant="t1"))
    assert eng.scheduled_count == 1
    w.now = 5.0
    fx = w.feed(submit(2, at=5.0, rcpts=(PUSH,), tenant="t1"))
    assert sorted(_ids(fx, "AdminBounce")) == ["m1", "m2"]  # queued, and the trigger itself
    assert eng.admin_rules.rules["shaping-1-0"].tenant == "t1"  # the queue's tenant
    fx = w.feed(submit(3, at=5.0, tenant="t1"))
    fx += w.feed(submit(4, at=5.0, tenant="t2"))
    assert _ids(fx, "AdminBounce") == ["m3"] and _ids(fx, "Delivery") == ["m4"]
    assert eng.scheduled_count == 0
    w.run(605.0)
    assert eng.admin_rules.rules == {}
    w.now = 605.0
    assert _ids(w.feed(submit(5, at=605.0, tenant="t1")), "Delivery") == ["m5"]


def test_bounce_campaign_takes_the_tenant_and_campaign() -> None:
    eng, w = _engine('"BounceCampaign"')
    w.feed(submit(1, rcpts=(PUSH,), tenant="t1", campaign="c1"))
    rule = eng.admin_rules.rules["shaping-1-0"]
    assert (rule.kind, rule.tenant, rule.campaign) == ("bounce", "t1", "c1")
    fx = w.feed(submit(2, tenant="t1", campaign="c1")) + w.feed(submit(3, tenant="t1"))
    assert _ids(fx, "AdminBounce") == ["m2"] and _ids(fx, "Delivery") == ["m3"]


def test_a_repeat_firing_extends_the_entry_another_tenant_gets_its_own() -> None:
    eng, w = _engine('"SuspendTenant"')
    w.feed(submit(1, rcpts=(PUSH,), tenant="t1"))
    w.now = 100.0
    fx = w.feed(submit(2, at=100.0, rcpts=(PUSH,), tenant="t2"))
    assert [r["event"] for r in records(fx, "Shaping")] == ["extended"]
    rules = eng.admin_rules.rules
    assert sorted(rules) == ["shaping-1-0", "shaping-1-0-1"]
    assert [(r.tenant, r.expires) for r in rules.values()] == [("t1", 3700.0), ("t2", 3700.0)]
    w.rcpt_reply = lambda r: OK
    w.feed(AdminCancel(at=200.0, id="shaping-1-0"))  # the admin API may end one early
    w.now = 200.0
    fx = w.fire(("promote", ""))
    assert _ids(fx, "Delivery") == ["m1"] and list(rules) == ["shaping-1-0-1"]
    fx = w.run(3700.0)
    assert [r["event"] for r in records(fx, "Shaping")] == ["lapsed"]
    assert _ids(fx, "Delivery") == ["m2"] and rules == {}


BACKOFF = ('{Backoff = {config = {connection_limit = 1, max_message_rate = "10/min"}, '
           'deliveries = 3}}')


def test_backoff_mode_holds_until_n_deliveries_succeed() -> None:
    eng, w = _engine(BACKOFF, connection_limit=5)
    fx = w.feed(submit(1, rcpts=(PUSH,)))
    assert eng.paths[PATH].cfg.connection_limit == 1
    [shown] = in_force(eng)
    assert shown["deliveries_left"] == 3 and shown["overrides"]["connection_limit"] == 1
    assert records(fx, "Shaping")[0]["actions"] == [{"Backoff": {
        "config": {"connection_limit": 1, "max_message_rate": "10/m"}, "deliveries": 3}}]
    for i in (2, 3):
        w.feed(submit(i))
    assert eng.paths[PATH].cfg.connection_limit == 1 and in_force(eng)[0]["deliveries_left"] == 1
    fx = w.feed(submit(4))
    [lapsed] = records(fx, "Shaping")
    assert lapsed["event"] == "lapsed" and lapsed["reason"] == "deliveries"
    assert CancelTimer(timer=("shaping", 1)) in fx
    assert eng.paths[PATH].cfg.connection_limit == 5 and in_force(eng) == []
    assert eng.automation.backoffs == {}


def test_backoff_a_new_match_restarts_the_count_and_the_duration_ends_it() -> None:
    eng, w = _engine(BACKOFF, duration="10m", connection_limit=5)
    w.feed(submit(1, rcpts=(PUSH,)))
    w.feed(submit(2))
    w.feed(submit(3, rcpts=(PUSH,)))  # in backoff mode: the count starts again
    assert in_force(eng)[0]["deliveries_left"] == 3
    w.feed(submit(4))
    fx = w.run(600.0)
    [lapsed] = records(fx, "Shaping")
    assert lapsed["reason"] == "duration" and eng.paths[PATH].cfg.connection_limit == 5


def test_backoff_without_deliveries_lasts_its_duration() -> None:
    eng, w = _engine('{Backoff = {config = {connection_limit = 2}}}', duration="5m")
    w.feed(submit(1, rcpts=(PUSH,)))
    for i in range(2, 8):
        w.feed(submit(i))
    assert eng.paths[PATH].cfg.connection_limit == 2 and "deliveries_left" not in in_force(eng)[0]
    w.run(300.0)
    assert eng.paths[PATH].cfg.connection_limit == 32


def test_a_snapshot_keeps_the_entries_and_the_same_events_give_the_same_effects() -> None:
    runs = []
    for _ in range(2):
        eng, w = _engine('["SuspendTenant", "Bounce"]')
        fx = w.feed(submit(1, rcpts=(PUSH,), tenant="t1"))
        w.rcpt_reply = lambda r: OK
        fx += w.feed(submit(2, tenant="t1"))
        back = Engine.restore(eng.snapshot(), policy())
        assert sorted(back.admin_rules.rules) == ["shaping-1-0", "shaping-1-1"]
        assert [e["admin"] for e in in_force(back)] == [["shaping-1-0", "shaping-1-1"]]
        bw = World(back)
        bw.timers = dict(w.timers)
        fx += bw.run(3600.0)
        assert back.admin_rules.rules == {} and in_force(back) == []
        runs.append(fx)
    assert runs[0] == runs[1]
    assert _ids(runs[0], "AdminBounce") == ["m1", "m2"]  # the trigger, then m2 on promotion
