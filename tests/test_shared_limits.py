"""engine.shared_limits: shared limits asked for with effects, answered with events."""

from __future__ import annotations

from typing import Any

import pytest

from engine.effects import AcquireLease, CheckThrottle, Connect, Effect, ExtendLease, ReleaseLease
from engine.engine import Engine
from engine.errors import ConfigError, ProtocolError
from engine.events import LimitAnswered, Resume, Suspend
from engine.shared_limits import SharedLimitsConfig, configure
from sim.shared_store import StoreModel
from tests.support.engine_harness import PATH, World, of, policy, prime, records, submit


class SharedWorld(World):
    """A `World` whose shared-limit effects are answered by one `StoreModel`."""

    def __init__(self, eng: Engine, store: StoreModel, **kw: Any) -> None:
        super().__init__(eng, **kw)
        self.store = store

    def _answer(self, e: Effect) -> None:
        answer = self.store.answer(e, self.now)
        if answer is not None:
            self.queue.append(answer)
        else:
            super()._answer(e)


def timers(eng: Engine) -> dict[Any, float]:
    """Armed timers but the expiry sweep's."""
    return {k: v for k, v in eng.armed_timers().items() if k[0] != "maint"}


def shared_engine(store: StoreModel | None = None, node: str = "a", nodes: int = 2,
                  on_unavailable: str = "stop", auto: bool = True, **path: Any
                  ) -> tuple[Engine, World]:
    eng = Engine(policy(**path), seed=1)
    configure(eng, SharedLimitsConfig(node=node, nodes=nodes, on_unavailable=on_unavailable))
    prime(eng)
    w: World = SharedWorld(eng, store) if store is not None and auto else World(eng)
    return eng, w


def test_a_connection_asks_for_a_lease_and_opens_only_when_granted() -> None:
    eng, w = shared_engine(connection_limit=4)
    fx = w.feed(submit(0))
    [ask] = of(fx, AcquireLease)
    assert not of(fx, Connect)
    assert ask.key == f"egress:conn:{PATH}" and ask.limit == 4 and ask.lease == "a:1"
    assert not timers(eng)  # waiting for the answer: no timer, no polling
    fx = w.feed(LimitAnswered(at=0.1, request=ask.request))
    assert len(of(fx, Connect)) == 1


def test_a_refused_lease_is_asked_again_no_later_than_lease_poll() -> None:
    eng, w = shared_engine(connection_limit=4)
    ask = of(w.feed(submit(0)), AcquireLease)[0]
    fx = w.feed(LimitAnswered(at=1.0, request=ask.request, wait=30.0))
    assert not of(fx, Connect)
    assert timers(eng) == {("shared", PATH): 1.5}
    assert len(of(w.fire(("shared", PATH)), AcquireLease)) == 1


def test_an_answer_to_nothing_asked_is_a_protocol_error() -> None:
    eng, _ = shared_engine(connection_limit=4)
    with pytest.raises(ProtocolError, match="answers nothing asked"):
        eng.handle(LimitAnswered(at=0.0, request=99))


def test_local_limits_ask_nothing() -> None:
    store = StoreModel()
    _, w = shared_engine(store, connection_limit="local:2", max_message_rate="local:10/s")
    fx = w.feed(submit(0))
    assert not of(fx, AcquireLease) and not of(fx, CheckThrottle)
    assert len(records(fx, "Delivery")) == 1


def test_a_message_extends_its_lease_and_checks_the_throttle_in_one_event() -> None:
    eng, w = shared_engine(connection_limit=4, max_message_rate="10/s")
    ask = of(w.feed(submit(0)), AcquireLease)[0]
    fx = w.feed(LimitAnswered(at=0.0, request=ask.request))
    # Connected, banner, EHLO answered by the world; the message then asks
    extend, check = of(fx, ExtendLease), of(fx, CheckThrottle)
    assert [e.lease for e in extend] == ["a:1"] and len(check) == 1
    assert check[0].key == f"egress:rate:msg:{PATH}:10/s" and check[0].limit == 10
    assert not records(fx, "Delivery")
    fx = w.feed(LimitAnswered(at=0.0, request=check[0].request, wait=0.25))
    assert timers(eng)[("msgrate", 1)] == 0.25
    fx = w.fire(("msgrate", 1))
    check2 = of(fx, CheckThrottle)
    fx = w.feed(LimitAnswered(at=0.25, request=check2[0].request))
    assert len(records(fx, "Delivery")) == 1


def test_two_engines_sharing_a_store_never_hold_more_than_the_limit() -> None:
    store = StoreModel()
    a, wa = shared_engine(store, node="a", connection_limit=4)
    b, wb = shared_engine(store, node="b", connection_limit=4)
    for i in range(40):
        wa.feed(submit(f"a{i}"))
        wb.feed(submit(f"b{i}"))
    assert store.peak[f"egress:conn:{PATH}"] <= 4
    assert a.connection_counts()[PATH] + b.connection_counts().get(PATH, 0) <= 4
    for _ in range(200):  # let idle sessions quit and the other engine take over
        wa.run(wa.now + 1.0)
        wb.now = wa.now
        wb.run(wb.now)
        if a.queued_count == 0 and b.queued_count == 0:
            break
    assert len(records(wa.effects, "Delivery")) == 40
    assert len(records(wb.effects, "Delivery")) == 40
    assert store.peak[f"egress:conn:{PATH}"] <= 4
    wa.run(wa.now + 3600.0)  # idle sessions quit: every lease goes back
    wb.run(wb.now + 3600.0)
    released = of(wa.effects + wb.effects, ReleaseLease)
    assert len(released) == len(of(wa.effects + wb.effects, Connect))


def test_a_shared_message_rate_holds_across_two_engines() -> None:
    store = StoreModel()
    a, wa = shared_engine(store, node="a", max_message_rate="10/s")
    b, wb = shared_engine(store, node="b", max_message_rate="10/s")
    for i in range(30):
        wa.feed(submit(f"a{i}"))
        wb.feed(submit(f"b{i}"))
    while a.queued_count or b.queued_count:
        wa.run(wa.now + 0.05)
        wb.now = wa.now
        wb.run(wb.now)
    times = sorted(r["timestamp"] for r in records(wa.effects + wb.effects, "Delivery"))
    assert len(times) == 60
    # GCRA bound: a burst of 10, then one every 0.1 s, so fewer than 10 + 10 (s + 1)
    # before s + 1 (records carry whole seconds); alone, each would send 10 + 10 t
    for s in range(times[-1] + 1):
        assert sum(1 for t in times if t <= s) <= 10 + 10 * (s + 1)
    assert times[-1] >= 4  # 60 at 10/s after a burst of 10: five seconds


def test_store_unavailable_stop_opens_nothing_until_it_answers_again() -> None:
    store = StoreModel()
    store.down = True
    eng, w = shared_engine(store, connection_limit=4)
    fx = w.feed(submit(0))
    assert not of(fx, Connect)
    [rec] = records(fx, "SharedLimits")
    assert rec["mode"] == "stopped" and rec["reason"] == "store unavailable"
    assert eng.shared.mode == "stopped"
    counters = eng.counters
    assert counters['shared_limits_mode{mode="stopped"}'] == 1
    assert counters['shared_limits_mode{mode="shared"}'] == 0
    assert counters["total_shared_limit_errors"] == 1
    assert timers(eng) == {("shared", PATH): 1.0}
    assert not of(w.fire(("shared", PATH)), Connect)  # still down: asked again, refused
    store.down = False
    fx = w.fire(("shared", PATH))
    assert [r["mode"] for r in records(fx, "SharedLimits")] == ["shared"]
    assert len(records(fx, "Delivery")) == 1


def test_store_unavailable_local_falls_back_to_one_nth_of_the_limit() -> None:
    store = StoreModel()
    store.down = True
    eng, w = shared_engine(store, nodes=2, on_unavailable="local", connection_limit=4)
    w.auto_connect = False
    for i in range(20):
        w.feed(submit(i))
    assert records(w.effects, "SharedLimits")[0]["mode"] == "local"
    assert eng.connection_counts() == {PATH: 2}  # 4 shared by 2 nodes


def test_even_share_caps_each_node_at_its_part_of_the_limit() -> None:
    store = StoreModel()
    eng = Engine(policy(connection_limit=5), seed=1)
    configure(eng, SharedLimitsConfig(node="a", nodes=2, share="even"))
    prime(eng)
    w = SharedWorld(eng, store, auto_connect=False)
    w.feed(Suspend(at=0.0, path=PATH))
    for i in range(60):
        w.feed(submit(i))
    w.feed(Resume(at=0.0, path=PATH))  # the ramp for 60 waiting would be all 5
    assert eng.connection_counts() == {PATH: 3}  # ceil(5 / 2)
    assert len(store.leases[f"egress:conn:{PATH}"]) == 3


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="on_unavailable"):
        SharedLimitsConfig(on_unavailable="panic")
    with pytest.raises(ConfigError, match="nodes"):
        SharedLimitsConfig(nodes=0)
    with pytest.raises(ConfigError, match="share"):
        SharedLimitsConfig(share="greedy")


def test_a_message_extends_its_lease_without_a_shared_throttle() -> None:
    """Each message extends its connection's lease even when no shared throttle
    is asked with it: else a connection busy past lease_ttl loses its lease
    and the other nodes open more than the limit."""
    _, w = shared_engine(connection_limit=4)
    ask = of(w.feed(submit(0)), AcquireLease)[0]
    fx = w.feed(LimitAnswered(at=0.0, request=ask.request))
    assert [e.lease for e in of(fx, ExtendLease)] == ["a:1"] and not of(fx, CheckThrottle)
    assert len(records(fx, "Delivery")) == 1
    fx = w.feed(submit(1, at=30.0))  # the next message on the same connection
    assert [e.lease for e in of(fx, ExtendLease)] == ["a:1"]
    assert len(records(fx, "Delivery")) == 1


def test_nodes_sharing_a_connection_limit_hold_it_past_the_lease_ttl() -> None:
    """Two simulated nodes, a shared connection_limit of 2, no shared throttle,
    connections busy for minutes: the host never sees more than 2 at once."""
    from sim.result import run
    from sim.scenario import Scenario

    scenario = Scenario.from_dict({
        "name": "lease", "seed": 3, "nodes": 2, "horizon": "2h",
        "traffic": [{"name": "t", "domains": {"slow.example": 1}, "messages": 400,
                     "at": "0s"}],
        "domains": {"slow.example": {"mx": [{"host": "mx.slow.example", "preference": 10}]}},
        "hosts": {"mx.slow.example": {"data_latency": {"median": "1s", "p99": "2s"}}},
        "egress_path": {"connection_limit": 2},
        "queue": {"retry_interval": "10min"},
    })
    res = run(scenario, keep_records=False)
    assert res.summary["delivered"] == 400
    assert res.summary["drain_time"] > 120  # well past the 60 s lease_ttl
    assert max(res.summary["peak_connections"].values()) == 2
