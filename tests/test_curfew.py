"""engine.curfew (the windows, DST-safe) and engine.curfew_hold (events in,
effects out): mail a curfew covers waits in its scheduled queue until it ends.

The Delayed record's wording follows KumoMTA's suspended scheduled queue
(crates/kumod/src/queue/queue.rs: ``451 4.4.4 KumoMTA internal: scheduled
queue is suspended: <reason>``); the window's field names (tz, dow) follow
``msg:set_scheduling`` (crates/message/src/scheduling.rs).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from engine.config import make_egress_path
from engine.effects import Connect, SetTimer
from engine.engine import Engine
from engine.errors import ConfigError
from engine.policy import Policy
from engine.shaping_load import load_shaping
from tests.support.engine_harness import World, of, policy, prime, records, submit

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def one(toml: str) -> Any:
    [c] = load_shaping([("s.toml", toml)]).curfews
    return c


NIGHT_NY = '''
[[curfew]]
name = "night"
domain = "example.com"
tz = "America/New_York"
hours = "22:00-07:00"
'''


def test_a_night_keeps_its_wall_clock_hours_across_dst() -> None:
    c = one(NIGHT_NY)
    # an ordinary winter night: 22:00 EST to 07:00 EST (03:00Z to 12:00Z)
    assert c.status(utc("2026-01-15T04:00")) == (True, utc("2026-01-15T12:00"))
    assert c.status(utc("2026-01-15T12:00")) == (False, utc("2026-01-16T03:00"))
    # spring forward (2026-03-08): 22:00 EST to 07:00 EDT, eight hours
    assert c.status(utc("2026-03-08T05:00")) == (True, utc("2026-03-08T11:00"))
    # fall back (2026-11-01): 22:00 EDT to 07:00 EST, ten hours
    assert c.status(utc("2026-11-01T06:30")) == (True, utc("2026-11-01T12:00"))
    assert c.status(utc("2026-11-01T01:59")) == (False, utc("2026-11-01T02:00"))


def test_adjacent_days_run_into_one_hold() -> None:
    c = one('''
[[curfew]]
tenant = "quiet"
tz = "Europe/Paris"
hours = "00:00-24:00"
dow = "Sat,Sunday"
''')
    # Saturday 2026-01-03 noon in Paris: held until Monday 00:00 CET (Sunday 23:00Z)
    assert c.status(utc("2026-01-03T11:00")) == (True, utc("2026-01-04T23:00"))
    assert c.status(utc("2026-01-05T09:00")) == (False, utc("2026-01-09T23:00"))
    assert c.matches("any.org", "quiet", "") and not c.matches("any.org", "loud", "")


def test_several_spans_and_what_they_match() -> None:
    c = one('''
[[curfew]]
domain = ["Example.com", "example.net"]
campaign = "spring"
tz = "UTC"
hours = ["12:00-13:00", "23:00-01:00"]
''')
    assert c.matches("example.com", "t", "spring") and c.matches("EXAMPLE.NET", "", "spring")
    assert not c.matches("example.com", "t", "autumn")
    assert c.status(utc("2026-01-01T12:30")) == (True, utc("2026-01-01T13:00"))
    assert c.status(utc("2026-01-01T00:30")) == (True, utc("2026-01-01T01:00"))
    assert c.status(utc("2026-01-01T13:00")) == (False, utc("2026-01-01T23:00"))


@pytest.mark.parametrize(("body", "why"), [
    ('tz = "Mars/Olympus"\nhours = "1:00-2:00"', "tz: 'Mars/Olympus' is not a known IANA"),
    ('tz = "EST5"\nhours = "1:00-2:00"', "is not a known IANA time zone"),
    ('tz = "UTC"\nhours = "25:00-02:00"', "not a span of times 00:00 to 24:00"),
    ('tz = "UTC"\nhours = "night"', "is not a span such as"),
    ('tz = "UTC"\nhours = "08:00-08:00"', "is empty"),
    ('tz = "UTC"\nhours = "00:00-24:00"', "hold every hour of the week"),
    ('tz = "UTC"\nhours = "1:00-2:00"\ndow = "Funday"', "dow: 'Funday' is not a day"),
    ('tz = "UTC"\nhours = "1:00-2:00"\nwhen = 1', "unknown field 'when'"),
    ('hours = "1:00-2:00"', "missing field 'tz'"),
])
def test_bad_curfews_are_refused_naming_file_table_and_field(body: str, why: str) -> None:
    with pytest.raises(ConfigError, match=r"^s\.toml: \[\[curfew\]\] #1: ") as err:
        load_shaping([("s.toml", f"[[curfew]]\n{body}\n")])
    assert why in str(err.value) and "\n" not in str(err.value)


# -- in the engine -----------------------------------------------------------

NIGHT_UTC = '''
[[curfew]]
name = "night"
domain = "example.com"
tz = "UTC"
hours = "01:00-08:00"
'''


def engine(shaping: str, p: Policy | None = None) -> tuple[Engine, World]:
    eng = Engine(p or policy(), seed=1, epoch=EPOCH,
                 shaping=load_shaping([("s.toml", shaping)]))
    w = World(eng)
    prime(eng)
    prime(eng, "other.org")
    return eng, w


def test_a_message_due_in_the_curfew_waits_for_its_end_under_one_timer() -> None:
    eng, w = engine(NIGHT_UTC)
    w.now = 7200.0  # 02:00Z
    fx = w.feed(submit(1, at=7200.0))
    fx += w.feed(submit(2, at=7200.0))
    assert of(fx, Connect) == [] and records(fx, "Delivery") == []
    delayed = records(fx, "Delayed")
    assert [r["id"] for r in delayed] == ["m1", "m2"]
    r = delayed[0]
    assert r["response"] == {
        "code": 451, "enhanced_code": {"class": 4, "subject": 4, "detail": 4},
        "content": "KumoMTA internal: scheduled queue is suspended: curfew night "
                   "(01:00-08:00 UTC) until 2026-01-01T08:00:00Z",
        "command": None}
    assert r["num_attempts"] == 0 and r["site"] == "" and r["egress_pool"] is None
    # one promote timer at the end, nothing in between
    assert of(fx, SetTimer) == [SetTimer(timer=("promote", ""), at=8 * 3600.0)]
    assert eng.scheduled_count == 2
    fx = w.run(8 * 3600.0)
    assert sorted(r["id"] for r in records(fx, "Delivery")) == ["m1", "m2"]
    assert records(fx, "Delayed") == []
    assert all(r["num_attempts"] == 0 for r in records(fx, "Delivery"))


def test_other_domains_and_hours_pass() -> None:
    _eng, w = engine(NIGHT_UTC)
    w.now = 7200.0
    fx = w.feed(submit(1, at=7200.0, rcpts=("u@other.org",)))
    assert len(records(fx, "Delivery")) == 1
    w.now = 9 * 3600.0
    fx = w.feed(submit(2, at=9 * 3600.0))
    assert len(records(fx, "Delivery")) == 1 and records(fx, "Delayed") == []


def test_tenant_and_campaign_curfews() -> None:
    _eng, w = engine('''
[[curfew]]
tenant = "bulk"
campaign = "sale"
tz = "UTC"
hours = "00:00-06:00"
''')
    fx = w.feed(submit(1, tenant="bulk", campaign="sale"))
    fx += w.feed(submit(2, tenant="bulk", campaign="news"))
    fx += w.feed(submit(3, tenant="shop", campaign="sale"))
    assert [r["id"] for r in records(fx, "Delayed")] == ["m1"]
    assert sorted(r["id"] for r in records(fx, "Delivery")) == ["m2", "m3"]


def test_when_a_curfew_starts_the_ready_queues_give_its_mail_back() -> None:
    cfg = make_egress_path(enable_mta_sts=False, connection_limit=1)
    p = Policy()
    p.on("get_egress_path_config")(lambda d, s, site: cfg)
    eng, w = engine(NIGHT_UTC, p)
    w.auto_connect = False  # the connection never completes: the rest wait ready
    fx = w.feed(submit(1, at=0.0))
    fx += w.feed(submit(2, at=0.0))
    fx += w.feed(submit(3, at=0.0, rcpts=("u@other.org",)))
    assert SetTimer(timer=("curfew", "0"), at=3600.0) in fx
    # other.org shares example.com's MX: one path; m1 is held by the connection
    rq = eng.paths["unspecified->(mx1|mx2).example.com@smtp_client"]
    assert [m.id for m in rq.messages] == ["m2", "m3"]
    fx = w.fire(("curfew", "0"))
    [held] = records(fx, "Delayed")
    assert held["id"] == "m2" and "until 2026-01-01T08:00:00Z" in held["response"]["content"]
    assert [m.id for m in rq.messages] == ["m3"] and eng.scheduled_count == 1
    assert eng.timers[("promote", "")] == 8 * 3600.0


def test_a_timer_fired_a_hair_early_still_finds_the_curfew() -> None:
    """A driver's float sum may fire the timer an ulp before the start."""
    cfg = make_egress_path(enable_mta_sts=False, connection_limit=1)
    p = Policy()
    p.on("get_egress_path_config")(lambda d, s, site: cfg)
    eng, w = engine(NIGHT_UTC, p)
    w.auto_connect = False
    w.feed(submit(1))
    w.feed(submit(2))
    from engine.events import TimerFired
    w.timers.pop(("curfew", "0"))
    fx = eng.handle(TimerFired(at=3600.0 - 1e-7, timer=("curfew", "0")))
    assert [r["id"] for r in records(fx, "Delayed")] == ["m2"]


def test_a_replay_holds_the_same_messages() -> None:
    outs = []
    for _ in range(2):
        _eng, w = engine(NIGHT_UTC)
        fx = []
        for i in range(10):
            w.now = i * 3000.0
            fx += w.feed(submit(i, at=i * 3000.0))
        fx += w.run(2 * 86400.0)
        outs.append([(r["type"], r["id"], r["timestamp"]) for r in records(fx)])
    assert outs[0] == outs[1]
    held = [x for x in outs[0] if x[0] == "Delayed"]
    assert {x[1] for x in held} == {f"m{i}" for i in range(2, 10)}  # 01:40 .. 07:30


def test_in_the_engine_a_dst_night_ends_at_local_seven() -> None:
    """Spring forward in New York (2026-03-08): the night that began at 22:00 EST
    ends at 07:00 EDT, 11:00Z, an hour earlier in UTC than the night before."""
    eng, w = engine(NIGHT_NY)
    for n, day in enumerate(("2026-03-07", "2026-03-08")):
        at = utc(f"{day}T05:00") - EPOCH
        w.now = at
        [held] = records(w.feed(submit(n, at=at)), "Delayed")
        end = "12:00" if day == "2026-03-07" else "11:00"
        assert held["response"]["content"].endswith(f"until {day}T{end}:00Z")
        assert eng.timers[("promote", "")] == utc(f"{day}T{end}") - EPOCH
        fx = w.run(utc(f"{day}T{end}") - EPOCH)
        assert [r["id"] for r in records(fx, "Delivery")] == [f"m{n}"]


def test_held_messages_survive_a_snapshot() -> None:
    eng, w = engine(NIGHT_UTC)
    w.now = 7200.0
    w.feed(submit(1, at=7200.0))
    again = Engine.restore(eng.snapshot(), eng.policy)
    assert again.scheduled_count == 1 and again.curfew_state.curfews[0].tz.key == "UTC"
    w2 = World(again)
    w2.timers = dict(again.armed_timers())
    fx = w2.run(8 * 3600.0)
    assert [r["id"] for r in records(fx, "Delivery")] == ["m1"]


def test_the_reap_forgets_what_gone_queues_matched() -> None:
    from engine.lifecycle import reap_idle

    eng, w = engine(NIGHT_UTC)
    w.now = 9 * 3600.0
    w.feed(submit(1, at=9 * 3600.0, tenant="t1"))
    assert "t1@example.com" in eng.curfew_state.by_queue
    reap_idle(eng, 10 * 3600.0)
    assert "t1@example.com" not in eng.queues and eng.curfew_state.by_queue == {}
