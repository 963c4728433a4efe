"""engine.dispatch: connections, the ramp, throttles, host plans, TLS policy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.effects import Close, Connect, FetchMtaSts, ResolveTlsa, SetTimer, TlsMode
from engine.engine import Engine
from engine.events import (
    MtaStsPolicy,
    MtaStsResolved,
    Response,
    Resume,
    Suspend,
    TlsaRecord,
    TlsaResolved,
)
from engine.reply import Reply
from tests.support.engine_harness import (
    MX,
    PATH,
    World,
    of,
    policy,
    prime,
    records,
    resolved_engine,
    submit,
)


@pytest.mark.parametrize(("q", "ideal"), [(1, 1), (10, 7), (32, 17), (64, 25), (128, 31),
                                          (256, 32)])
def test_ramp_takes_q_as_the_ready_depth_before_connections_take_messages(
        q: int, ideal: int) -> None:
    # q messages wait in a suspended ready queue; on Resume the engine opens the
    # target for depth q at once (KumoMTA's maintainer: ideal - current)
    eng, w = resolved_engine(connection_limit=32, max_ready=1024)
    w.feed(Suspend(at=0.0, path=PATH))
    for i in range(q):
        w.feed(submit(i))
    fx = w.feed(Resume(at=1.0, path=PATH))
    assert len(of(fx, Connect)) == ideal
    assert eng.connection_counts() == {PATH: ideal} and eng.ready_depths() == {PATH: q - ideal}


def test_ramp_counts_waiting_messages_not_those_held_by_connections() -> None:
    # one at a time: each new connection takes its message out of the ready queue,
    # so 10 arrivals open 5 connections (depth 1,1,2,2,3,3,4,5,5,6 -> targets
    # 1,1,2,2,3,3,3,4,4,5), not ideal(32, 10) = 7
    eng, w = resolved_engine(connection_limit=32)
    for i in range(10):
        w.feed(submit(i))
    assert len(of(w.effects, Connect)) == 5
    assert eng.connection_counts() == {PATH: 5} and eng.ready_depths() == {PATH: 5}


def test_connection_limit_caps_connections() -> None:
    eng, w = resolved_engine(connection_limit=2)
    for i in range(50):
        w.feed(submit(i))
    assert eng.connection_counts() == {PATH: 2}


def test_sessions_are_reused_then_quit_after_max_deliveries_and_replaced() -> None:
    eng = Engine(policy(connection_limit=1, max_deliveries_per_connection=2), seed=1)
    w = World(eng)
    prime(eng)
    w.auto_connect = False
    fx = []
    for i in range(3):
        fx += w.feed(submit(i))
    w.auto_connect = True
    # conn 1 is still connecting with m0; let it run
    from engine.events import Connected
    fx = w.feed(Connected(at=0.0, conn=1))
    fx += w.feed(Response(at=0.0, conn=1, reply=Reply.make(220, None, "hi")))
    assert [r["id"] for r in records(fx, "Delivery")] == ["m0", "m1", "m2"]
    assert [c.conn for c in of(fx, Connect)] == [2]  # replacement opened at once
    assert [r["peer_address"]["addr"] for r in records(fx, "Delivery")] == ["192.0.2.1"] * 3


def test_idle_timeout_quits() -> None:
    eng = Engine(policy(idle_timeout=30), seed=1)
    w = World(eng)
    fx = w.feed(submit(1))
    assert SetTimer(timer=("idle", 1), at=30.0) in fx
    fx = w.fire(("idle", 1))
    assert of(fx, Close) == [Close(conn=1)] and eng.connection_counts() == {PATH: 0}


def test_message_rate_short_wait_in_place_long_wait_pushes_back() -> None:
    eng = Engine(policy(max_message_rate="1/min", idle_timeout=120), seed=1)
    w = World(eng)
    w.feed(submit(1))
    fx = w.feed(submit(2))
    assert SetTimer(timer=("msgrate", 1), at=60.0) in fx
    fx = w.fire(("msgrate", 1))
    assert [r["id"] for r in records(fx, "Delivery")] == ["m2"]
    eng2 = Engine(policy(max_message_rate="1/hr", idle_timeout=60), seed=1)
    w2 = World(eng2)
    w2.feed(submit(1))
    fx = w2.feed(submit(2, at=1.0))
    [rec] = records(fx, "Delayed")
    assert rec["num_attempts"] == 0 and "ready queue throttled" in rec["response"]["content"]
    assert rec["response"]["content"].startswith("451 4.4.1 ")
    assert eng2.counters["delayed_due_to_message_rate_throttle"] == 1
    assert SetTimer(timer=("promote", ""), at=3600.0) in fx


def test_connection_rate_short_wait_arms_ready_timer() -> None:
    _eng, w = resolved_engine(max_connection_rate="1/s", connection_limit=32)
    for i in range(3):
        w.feed(submit(i))
    assert len(of(w.effects, Connect)) == 1
    assert ("ready", PATH) in w.timers
    fx = w.fire(("ready", PATH))
    assert len(of(fx, Connect)) == 1


def test_mta_sts_enforce_requires_tls_and_filters_hosts() -> None:
    eng = Engine(policy(enable_mta_sts=True), seed=1)
    w = World(eng, auto_connect=False, auto_dns=False)
    prime(eng)
    fx = w.feed(submit(1))
    assert of(fx, FetchMtaSts) == [FetchMtaSts(domain="example.com")] and of(fx, Connect) == []
    w.feed(submit(2))
    assert len(of(w.effects, FetchMtaSts)) == 1
    fx = w.feed(MtaStsResolved(at=1.0, domain="example.com",
                               policy=MtaStsPolicy(mode="enforce", mx=("mx2.example.com",))))
    conns = of(fx, Connect)
    assert {c.host for c in conns} == {"mx2.example.com"}
    assert eng.conns[conns[0].conn].session.tls == "Required"


def test_dane_secure_tlsa_overrides_to_required_dane() -> None:
    eng = Engine(policy(enable_dane=True), seed=1)
    # DANE applies only to a host whose MX and address answers were DNSSEC-secure
    w = World(eng, auto_connect=False, mx=tuple(replace(r, secure=True) for r in MX))
    fx = w.feed(submit(1))
    assert of(fx, ResolveTlsa) == [ResolveTlsa(host="mx1.example.com", port=25)]
    rec = TlsaRecord(usage=3, selector=1, mtype=1, data=b"\x01" * 32)
    fx = w.feed(TlsaResolved(at=1.0, host="mx1.example.com", port=25, records=(rec,),
                             secure=True))
    [c] = of(fx, Connect)
    s = eng.conns[c.conn].session
    assert s.tls == "Required" and s.tls_settings.mode is TlsMode.DANE
    assert s.tls_settings.tlsa == (rec,)


def test_insecure_modes_map_to_insecure_tls_settings() -> None:
    eng, w = resolved_engine(enable_tls="OpportunisticInsecure")
    fx = w.feed(submit(1))
    s = eng.conns[of(fx, Connect)[0].conn].session
    assert s.tls_settings.mode is TlsMode.INSECURE and s.tls_settings.server_name == (
        "mx1.example.com")


def test_connection_rate_long_wait_pushes_back_and_counts_it() -> None:
    # a wait of at least idle_timeout: the whole ready queue goes back to scheduled
    # by exactly the wait, no attempt counted, one Delayed record each, and the
    # connection-rate counter (not the message-rate one) goes up
    eng, w = resolved_engine(max_connection_rate="1/hr", connection_limit=32, idle_timeout=60)
    w.feed(Suspend(at=0.0, path=PATH))
    for i in (1, 2, 3):
        w.feed(submit(i))
    fx = w.feed(Resume(at=0.0, path=PATH))  # ideal(32, 3) = 3; the rate allows one
    assert [c.conn for c in of(fx, Connect)] == [1]
    recs = records(fx, "Delayed")
    assert [(r["id"], r["num_attempts"]) for r in recs] == [("m2", 0), ("m3", 0)]
    assert recs[0]["response"]["content"] == (
        f"451 4.4.1 {PATH} ready queue throttled by max_connection_rate; next due at "
        "1970-01-01T01:00:00Z")
    assert SetTimer(timer=("promote", ""), at=3600.0) in fx
    c = eng.counters
    assert (c["delayed_due_to_connection_rate_throttle"],
            c["delayed_due_to_message_rate_throttle"]) == (2, 0)
    assert eng.ready_depths() == {PATH: 0} and eng.scheduled_count == 2


