"""engine.lookups: a raising policy hook affects only what it configures."""

from __future__ import annotations

from typing import Any

import pytest

from engine.config import make_egress_path
from engine.effects import Log
from engine.engine import Engine
from engine.errors import PolicyError
from engine.events import DnsFailure, MxRecord, Resolved, ResolveFailed, TimerFired
from engine.policy import Policy
from engine.queue_config import make_queue_config
from tests.support.engine_harness import submit

MX_A = (MxRecord(preference=10, host="mx.a.test", addresses=("192.0.2.1",)),)
MX_B = (MxRecord(preference=10, host="mx.b.test", addresses=("192.0.2.2",)),)
A, B = "unspecified->mx.a.test@smtp_client", "unspecified->mx.b.test@smtp_client"


class Hook:
    """get_egress_path_config that raises on its `fail_on`-th call once armed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.armed = False
        self.fail_on = 2

    def __call__(self, domain: str, source: str, site: str) -> Any:
        if self.armed:
            self.calls.append((domain, source, site))
            if len(self.calls) == self.fail_on:
                raise RuntimeError(f"no config for {domain}")
        return make_egress_path(enable_mta_sts=False, suspended=True)


def engine_with(hook: Hook) -> Engine:
    p = Policy()
    p.on("get_egress_path_config")(hook)
    return Engine(p, seed=4)


def records_of(effects: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e.record for e in effects if isinstance(e, Log) and e.record["type"] == kind]


def test_hook_raising_for_the_second_domain_of_a_promotion_fails_only_its_messages() -> None:
    hook = Hook()
    eng = engine_with(hook)
    eng.handle(submit(1, rcpts=("x@a.test",)))
    eng.handle(submit(2, rcpts=("y@b.test",)))
    eng.handle(ResolveFailed(at=0.0, domain="a.test", kind=DnsFailure.SERVFAIL))
    eng.handle(ResolveFailed(at=0.0, domain="b.test", kind=DnsFailure.SERVFAIL))
    eng.handle(Resolved(at=1.0, domain="a.test", mx=MX_A, ttl=1e9))  # a refresh of the cache
    eng.handle(Resolved(at=1.0, domain="b.test", mx=MX_B, ttl=1e9))
    due = max(eng.sched.due_of(m) or 0.0 for m in eng.sched)  # both retries due
    hook.armed = True
    out = eng.handle(TimerFired(at=due, timer=("promote", "")))
    assert sorted(c[0] for c in hook.calls) == ["a.test", "b.test"]  # raised on the 2nd
    ok, bad = (c[0] for c in hook.calls)
    assert eng.ready_depths() == {f"unspecified->mx.{ok}@smtp_client": 1}  # the other domain flows
    [failed] = records_of(out, "TransientFailure")
    assert failed["queue"] == bad and failed["response"]["code"] == 451
    assert "get_egress_path_config" in failed["response"]["content"]
    assert f"RuntimeError: no config for {bad}" in failed["response"]["content"]
    assert eng.counters["total_hook_failures"] == 1
    assert eng.scheduled_count == 1 and not eng.hook_failed  # retried on its schedule
    # the retry asks the hook again; once it answers, the message is promoted
    hook.fail_on = 0
    retry = min(eng.sched.due_of(m) or 0.0 for m in eng.sched)
    eng.handle(TimerFired(at=retry, timer=("promote", "")))
    assert eng.ready_depths() == {A: 1, B: 1}
    assert eng.scheduled_count == 0


def test_hook_raising_during_a_config_refresh_keeps_that_paths_config() -> None:
    hook = Hook()
    eng = engine_with(hook)
    for i, dom, mx in ((1, "a.test", MX_A), (2, "b.test", MX_B)):
        eng.handle(submit(i, rcpts=(f"x@{dom}",)))
        eng.handle(Resolved(at=0.0, domain=dom, mx=mx, ttl=1e9))
    assert eng.ready_depths() == {A: 1, B: 1}
    hook.armed = True
    b = eng.paths[B]
    old = b.cfg
    eng.handle(submit(3, at=61.0, rcpts=("z@a.test",)))  # both configs are due a refresh
    assert eng.queued_count == 3  # the submission was not refused
    assert eng.ready_depths() == {A: 2, B: 1}
    assert b.cfg is old and b.cfg_at == 61.0  # kept; asked again at the next refresh
    assert eng.counters["total_hook_failures"] == 1
    hook.calls.clear()
    eng.handle(submit(4, at=62.0, rcpts=("w@a.test",)))
    assert hook.calls == []  # not re-asked on every event


def test_hook_raising_for_a_new_path_when_resolved_gives_a_transient_failure() -> None:
    hook = Hook()
    hook.armed, hook.fail_on = True, 1
    eng = engine_with(hook)
    eng.handle(submit(1, rcpts=("x@a.test",)))
    out = eng.handle(Resolved(at=0.0, domain="a.test", mx=MX_A, ttl=1e9))
    [failed] = records_of(out, "TransientFailure")
    assert "hook 'get_egress_path_config'" in failed["response"]["content"]
    assert eng.ready_depths() == {} and eng.scheduled_count == 1 and eng.queued_count == 1
    hook.fail_on = 0
    retry = min(eng.sched.due_of(m) or 0.0 for m in eng.sched)
    eng.handle(TimerFired(at=retry, timer=("promote", "")))
    assert eng.ready_depths() == {A: 1}


def test_queue_config_raising_refuses_only_that_submission() -> None:
    p = Policy()

    @p.on("get_queue_config")
    def queue(domain: str, tenant: str, campaign: str, routing_domain: str) -> Any:
        if domain == "bad.test":
            raise ValueError("no queue for you")
        return make_queue_config()

    eng = Engine(p, seed=4)
    eng.handle(submit(1, rcpts=("x@a.test",)))
    before = eng.snapshot()
    with pytest.raises(PolicyError, match=r"^hook 'get_queue_config' .*no queue for you"):
        eng.handle(submit(2, rcpts=("x@bad.test",)))
    assert eng.snapshot() == before
    eng.handle(submit(3, rcpts=("y@a.test",)))
    assert eng.queued_count == 2


def test_a_refused_event_undoes_the_config_refresh_it_triggered() -> None:
    from engine.errors import ProtocolError

    hook = Hook()
    hook.fail_on = 0
    eng = engine_with(hook)
    eng.handle(submit(1, rcpts=("x@a.test",)))
    eng.handle(Resolved(at=0.0, domain="a.test", mx=MX_A, ttl=1e9))
    hook.armed = True
    before = eng.snapshot()
    with pytest.raises(ProtocolError):
        eng.handle(TimerFired(at=100.0, timer=("idle", 99)))
    assert len(hook.calls) == 1  # the refresh was asked for, then undone
    assert eng.snapshot() == before


def _counting(calls: list[float], **keys: Any) -> Engine:
    p = Policy()

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        calls.append(domain)  # type: ignore[arg-type]
        return make_egress_path(enable_mta_sts=False, suspended=True, **keys)

    return Engine(p, seed=4)


def test_refresh_interval_is_the_paths_own() -> None:
    # KumoMTA re-asks get_egress_path_config once refresh_interval has passed
    # (crates/kumod/src/ready_queue.rs perform_config_refresh_if_due, Ttl;
    # crates/kumo-api-types/src/egress_path.rs default_refresh_interval 60 s)
    calls: list[float] = []
    eng = _counting(calls, refresh_interval="10s")
    eng.handle(submit(1, rcpts=("x@a.test",)))
    eng.handle(Resolved(at=0.0, domain="a.test", mx=MX_A, ttl=1e9))
    assert len(calls) == 1 and eng.refresh_at == 10.0
    eng.handle(submit(2, at=9.0, rcpts=("y@a.test",)))
    assert len(calls) == 1
    eng.handle(submit(3, at=10.5, rcpts=("z@a.test",)))
    assert len(calls) == 2 and eng.refresh_at == 20.5


def test_refresh_strategy_epoch_asks_again_only_at_a_policy_reload() -> None:
    # Epoch: re-asked when the configuration epoch changes, never by time
    # (crates/kumod/src/ready_queue.rs, ConfigRefreshStrategy::Epoch)
    from engine.events import PolicyReloaded
    calls: list[float] = []
    eng = _counting(calls, refresh_strategy="Epoch")
    eng.handle(submit(1, rcpts=("x@a.test",)))
    eng.handle(Resolved(at=0.0, domain="a.test", mx=MX_A, ttl=1e9))
    eng.handle(submit(2, at=3600.0, rcpts=("y@a.test",)))
    assert len(calls) == 1 and eng.refresh_at == float("inf")
    eng.handle(PolicyReloaded(at=3601.0))
    assert len(calls) == 2
