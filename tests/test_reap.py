"""engine.lifecycle.reap_idle: idle paths, queues and domains are dropped.

One message to each of several domains is delivered by the scripted world;
after the connections' idle_timeout and one sweep, nothing of them is left:
no ready queue, scheduled queue, domain entry, site name, timer or per-path
metric.  A later message to the same domain makes it all again.
"""

from __future__ import annotations

import sys

from engine.effects import Effect, Resolve
from engine.engine import Engine
from engine.events import MxRecord, Resolved, TimerFired
from engine.lifecycle import compact
from tests.support.engine_harness import World, policy, submit

DOMAINS = [f"d{i}.test" for i in range(5)]


def _engine(**path: object) -> tuple[Engine, World]:
    eng = Engine(policy(idle_timeout="5s", **path), seed=1)
    eng.reap_after = 60.0
    w = World(eng)
    for i, dom in enumerate(DOMAINS):
        w.feed(submit(i, at=0.0, rcpts=(f"u@{dom}",)))
    return eng, w


def test_idle_state_is_gone_within_a_sweep_after_idle_timeout() -> None:
    eng, w = _engine()
    w.run(1.0)
    assert eng.queued_count == 0 and len(eng.paths) >= 1 and eng.conns  # idle sessions
    assert any(k[0] == "maint" for k in eng.timers)
    assert any('path="' in k for k in eng.counters)
    w.run(5.0 + 60.0)  # idle_timeout, then one sweep
    assert eng.paths == {} and eng.queues == {} and eng.domains == {}
    assert eng.site_names == {} and eng.path_names == {} and eng.conns == {}
    assert eng.timers == {}  # nothing left to sweep: the sweep is not re-armed
    assert not any('path="' in k for k in eng.counters)
    assert eng.counters["total_messages_delivered"] == len(DOMAINS)  # totals stay
    # a later message makes it all again and is delivered
    w.feed(submit(99, at=w.now, rcpts=("v@d0.test",)))
    w.run(w.now + 1.0)
    assert eng.counters["total_messages_delivered"] == len(DOMAINS) + 1


def test_a_path_whose_throttle_still_holds_is_kept_until_it_does_not() -> None:
    eng, w = _engine(max_message_rate="20/h")  # 5 messages: the TAT is 15 min ahead
    w.run(5.0 + 60.0)
    assert eng.queued_count == 0 and len(eng.paths) >= 1  # the throttle still holds
    assert ("reap", "") in eng.timers  # swept again while a path is left
    w.run(3600.0 + 120.0)
    assert eng.paths == {} and eng.domains == {} and eng.timers == {}


def test_without_reap_after_nothing_is_swept() -> None:
    eng = Engine(policy(idle_timeout="5s"), seed=1)
    w = World(eng)
    w.feed(submit(1, at=0.0, rcpts=("u@d0.test",)))
    w.run(1000.0)
    assert eng.paths and not any(k[0] == "reap" for k in eng.timers)


def test_a_sweep_not_armed_is_accepted_for_replay() -> None:
    eng, w = _engine()
    w.run(5.0 + 60.0)
    eng.handle(TimerFired(at=w.now + 1.0, timer=("reap", "")))  # no ProtocolError


def _mentions(obj: object, needles: tuple[str, ...], where: str, seen: set[int],
              found: list[str]) -> None:
    """Every place under `obj` (the engine's state) where a string names one of
    `needles`: containers, slotted and plain objects, walked once each."""
    if isinstance(obj, str):
        if any(n in obj for n in needles):
            found.append(f"{where} = {obj!r}")
        return
    if isinstance(obj, int | float | bytes | bool | type(None)) or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        for k, v in list(obj.items()):
            _mentions(k, needles, f"{where}[key]", seen, found)
            _mentions(v, needles, f"{where}[{k!r}]", seen, found)
    elif isinstance(obj, list | tuple | set | frozenset) or type(obj).__name__ == "deque":
        for i, v in enumerate(list(obj)):  # type: ignore[call-overload]
            _mentions(v, needles, f"{where}[{i}]", seen, found)
    elif type(obj).__module__.startswith("engine"):
        names = list(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            names += [s for s in getattr(cls, "__slots__", ()) if isinstance(s, str)]
        for name in names:
            if hasattr(obj, name):
                _mentions(getattr(obj, name), needles, f"{where}.{name}", seen, found)


def test_nothing_of_a_reaped_domain_is_left_anywhere_in_the_engine() -> None:
    """Issue 13.6: after the sweep no per-domain dict, table, cache or counter of
    the engine still holds a domain's name (its queue, site or path name), so
    memory returns to what it was before those domains were seen."""
    eng, w = _engine()
    w.run(1.0)
    policy_obj = eng.policy
    found: list[str] = []
    _mentions(eng, tuple(DOMAINS), "eng", {id(policy_obj)}, found)
    assert found  # the walk sees the per-domain state while it is there
    w.run(5.0 + 60.0)
    found = []
    _mentions(eng, tuple(DOMAINS), "eng", {id(policy_obj)}, found)
    assert found == []


class _OwnMx(World):
    """Each domain its own MX host, so each has its own site and path."""

    def _answer(self, e: Effect) -> None:
        if isinstance(e, Resolve):
            mx = (MxRecord(preference=10, host=f"mx.{e.domain}", addresses=("192.0.2.1",)),)
            self.queue.append(Resolved(at=self.now, domain=e.domain, mx=mx, ttl=1e9))
        else:
            super()._answer(e)


def test_the_tables_shrink_back_after_many_domains_are_reaped() -> None:
    """Issue 13.6, memory: a dict or set keeps its largest table after its
    entries are deleted (CPython resizes only on insertion), so the engine's
    per-domain tables are rebuilt by the sweep.  After one message to each of
    300 domains, delivered and reaped, each table is as small as an empty one
    (not a 300-entry table of empty slots)."""
    many = [f"m{i}.test" for i in range(300)]
    eng = Engine(policy(idle_timeout="5s"), seed=1)
    eng.reap_after = 60.0
    w = _OwnMx(eng)
    for i, dom in enumerate(many):
        w.feed(submit(i, at=0.0, rcpts=(f"u@{dom}",)))
    w.run(1.0)
    tables = {"paths": eng.paths, "path_names": eng.path_names, "queues": eng.queues,
              "domains": eng.domains, "site_names": eng.site_names, "timers": eng.timers,
              "by_path": eng.metrics.by_path, "ids": eng.ids}
    grown = {name: sys.getsizeof(t) for name, t in tables.items()}
    assert grown["paths"] > 4 * sys.getsizeof({})  # they did grow with the domains
    w.run(5.0 + 60.0)
    for name, table in tables.items():
        assert len(table) == 0, name
        empty = sys.getsizeof(set() if isinstance(table, set) else {})
        assert sys.getsizeof(table) == empty, f"eng.{name} keeps {sys.getsizeof(table)} bytes"
    assert eng.paths is tables["paths"]  # rebuilt in place: whoever holds it sees it


def test_compact_keeps_the_entries_and_their_order() -> None:
    kept = {f"k{i}": i for i in range(1000)}
    for i in range(1000):
        if i % 47:
            del kept[f"k{i}"]
    before = list(kept.items())
    big = sys.getsizeof(kept)
    compact(kept)
    assert list(kept.items()) == before and sys.getsizeof(kept) < big / 4
    s = set(range(10_000))
    for i in range(9990):
        s.discard(i)
    compact(s)
    assert s == set(range(9990, 10_000)) and sys.getsizeof(s) == sys.getsizeof(set(range(10)))
    small = {"a": 1}
    compact(small)  # nothing to gain: left alone
    assert small == {"a": 1}
