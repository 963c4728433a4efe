"""engine.mxplan: the connection plan (KumoMTA's address shuffle, prohibited_hosts,
skip_hosts), seen through the engine where the engine applies it."""

from __future__ import annotations

import random

import pytest

from engine.effects import Connect
from engine.engine import Engine
from engine.events import MxRecord
from engine.mxplan import order_addresses
from tests.support.engine_harness import World, of, policy, records, submit


@pytest.mark.parametrize("addr", ["127.0.0.1", "10.1.2.3"])
def test_prohibited_host_bounces_whole_ready_queue(addr: str) -> None:
    mx = (MxRecord(preference=10, host="mx1.example.com", addresses=("192.0.2.1", addr)),)
    eng = Engine(policy(prohibited_hosts=["127.0.0.0/8", "10.0.0.0/8"]), seed=1)
    w = World(eng, mx=mx, auto_connect=False)
    fx = w.feed(submit(1))
    [rec] = records(fx, "Bounce")
    assert rec["response"]["code"] == 550
    assert rec["response"]["enhanced_code"] == {"class": 5, "subject": 4, "detail": 4}
    assert addr in rec["response"]["content"] and of(fx, Connect) == []



def test_skip_hosts_removes_addresses_and_all_skipped_fails() -> None:
    eng = Engine(policy(skip_hosts=["192.0.2.1"]), seed=1)
    w = World(eng, auto_connect=False)
    fx = w.feed(submit(1))
    assert [c.address for c in of(fx, Connect)] == ["192.0.2.2"]
    eng2 = Engine(policy(skip_hosts=["192.0.2.0/24"]), seed=1)
    fx = World(eng2, auto_connect=False).feed(submit(1))
    [rec] = records(fx, "Bounce")
    assert rec["response"]["code"] == 550 and "skip_hosts" in rec["response"]["content"]



def test_equal_preference_hosts_are_shuffled_deterministically() -> None:
    mx = tuple(MxRecord(preference=10, host=f"mx{i}.example.com", addresses=(f"192.0.2.{i}",))
               for i in range(1, 6))
    firsts = []
    for seed in range(8):
        eng = Engine(policy(), seed=seed)
        fx = World(eng, mx=mx, auto_connect=False).feed(submit(1))
        firsts.append(of(fx, Connect)[0].address)
        again = World(Engine(policy(), seed=seed), mx=mx, auto_connect=False).feed(submit(1))
        assert of(again, Connect)[0].address == firsts[-1]
    assert len(set(firsts)) > 1



def test_equal_preference_addresses_are_shuffled_together_across_hosts() -> None:
    # KumoMTA shuffles the addresses of a preference level, not whole hosts: the
    # addresses of two equal hosts interleave in the plan
    mx = (MxRecord(preference=10, host="a.example.com", addresses=("192.0.2.1", "192.0.2.2")),
          MxRecord(preference=10, host="b.example.com", addresses=("192.0.2.3", "192.0.2.4")),
          MxRecord(preference=5, host="p.example.com", addresses=("192.0.2.9",)))
    plans = {tuple(order_addresses(mx, random.Random(seed))) for seed in range(40)}
    assert all(p[0] == ("p.example.com", "192.0.2.9") for p in plans)
    hosts_order = {tuple(h for h, _ in p[1:]) for p in plans}
    # host-wise shuffling could only give aabb or bbaa; addresses interleave here
    assert ("a.example.com", "b.example.com", "a.example.com", "b.example.com") in hosts_order
    assert all(sorted(p[1:]) == [("a.example.com", "192.0.2.1"), ("a.example.com", "192.0.2.2"),
                                 ("b.example.com", "192.0.2.3"), ("b.example.com", "192.0.2.4")]
               for p in plans)
    again = tuple(order_addresses(mx, random.Random(7)))
    assert again == tuple(order_addresses(mx, random.Random(7)))
