"""engine.lookups: a raising policy hook leaves the engine exactly as it was."""

from __future__ import annotations

from typing import Any

import pytest

from engine.config import make_egress_path
from engine.engine import Engine
from engine.errors import PolicyError
from engine.events import DnsFailure, MxRecord, Resolved, ResolveFailed, TimerFired
from engine.policy import Policy
from tests.support.engine_harness import submit

MX_A = (MxRecord(preference=10, host="mx.a.test", addresses=("192.0.2.1",)),)
MX_B = (MxRecord(preference=10, host="mx.b.test", addresses=("192.0.2.2",)),)


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


def test_hook_raising_on_the_second_domain_of_a_promotion_changes_nothing() -> None:
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
    before = eng.snapshot()
    with pytest.raises(PolicyError, match=r"^hook 'get_egress_path_config' \("):
        eng.handle(TimerFired(at=due, timer=("promote", "")))
    assert sorted(c[0] for c in hook.calls) == ["a.test", "b.test"]  # raised on the 2nd
    assert eng.snapshot() == before
    assert eng.ready_depths() == {} and eng.scheduled_count == 2
    # the same event succeeds once the hook does: nothing was left half-done
    hook.fail_on = 0
    eng.handle(TimerFired(at=due, timer=("promote", "")))
    assert eng.ready_depths() == {"unspecified->mx.a.test": 1, "unspecified->mx.b.test": 1}
    assert eng.scheduled_count == 0


def test_hook_raising_during_a_config_refresh_changes_nothing() -> None:
    hook = Hook()
    eng = engine_with(hook)
    for i, dom, mx in ((1, "a.test", MX_A), (2, "b.test", MX_B)):
        eng.handle(submit(i, rcpts=(f"x@{dom}",)))
        eng.handle(Resolved(at=0.0, domain=dom, mx=mx, ttl=1e9))
    assert eng.ready_depths() == {"unspecified->mx.a.test": 1, "unspecified->mx.b.test": 1}
    hook.armed = True
    before = eng.snapshot()
    with pytest.raises(PolicyError, match=r"^hook 'get_egress_path_config' \(.*no config for "
                                          r"b\.test"):
        eng.handle(submit(3, at=61.0, rcpts=("z@a.test",)))  # both configs are due a refresh
    assert eng.snapshot() == before and eng.queued_count == 2


def test_hook_raising_for_a_new_path_at_submission_changes_nothing() -> None:
    hook = Hook()
    hook.armed, hook.fail_on = True, 1
    eng = engine_with(hook)
    eng.handle(submit(1, rcpts=("x@a.test",)))
    before = eng.snapshot()
    with pytest.raises(PolicyError, match=r"^hook 'get_egress_path_config' \("):
        eng.handle(Resolved(at=0.0, domain="a.test", mx=MX_A, ttl=1e9))
    assert eng.snapshot() == before
    hook.fail_on = 0
    eng.handle(Resolved(at=0.0, domain="a.test", mx=MX_A, ttl=1e9))
    assert eng.ready_depths() == {"unspecified->mx.a.test": 1}


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
