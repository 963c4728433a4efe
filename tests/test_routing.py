"""Routing without the recipient domain's MX: make_queue_config's smart hosts
(``protocol = {smtp = {mx_list = [...]}}``) and domain literals (``x@[127.0.0.1]``).

Engine level: events in, effects out.  KumoMTA's code is the reference:
crates/kumod/src/ready_queue.rs (``compute_queue_name``: site ``mx_list:...``),
crates/kumod/src/smtp_dispatcher.rs (``SmtpDispatcher::init``: the list's
addresses in order, names resolved for A/AAAA), crates/mailexchanger/src/lib.rs
(``resolve_impl``: a domain literal is its address, no DNS).
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.effects import Connect, FetchMtaSts, Resolve, ResolveHosts
from engine.engine import Engine
from engine.events import DnsFailure, MxRecord, Resolved, ResolveFailed, Restarted
from sim.result import SimResult, run
from sim.scenario import Scenario
from sim.scenario_schema import ScenarioError
from tests.support.engine_harness import World, of, policy, records, submit


def smart(*hosts: Any, **queue: Any) -> dict[str, Any]:
    return {"protocol": {"smtp": {"mx_list": list(hosts)}}, **queue}


def connects(fx: list[Any]) -> list[tuple[str, str]]:
    return [(c.host, c.address) for c in of(fx, Connect)]


def test_an_address_literal_smart_host_needs_no_dns_and_names_the_site() -> None:
    eng = Engine(policy(queue=smart("[127.0.0.1]"), prohibited_hosts=[]), seed=1)
    w = World(eng)
    fx = w.feed(submit(1, rcpts=("someone@localhost",)))
    assert of(fx, Resolve) == [] and of(fx, ResolveHosts) == []
    assert connects(fx) == [("[127.0.0.1]", "127.0.0.1")]
    [rec] = records(fx, "Delivery")
    assert rec["site"] == "unspecified->mx_list:[127.0.0.1]@smtp_client"
    assert rec["peer_address"] == {"name": "[127.0.0.1]", "addr": "127.0.0.1"}


def test_loopback_smart_hosts_are_still_prohibited_by_default() -> None:
    """smtp_dispatcher.rs checks prohibited_hosts (default 127.0.0.0/8, ::1) on
    the mx_list's addresses too: a loopback sink needs ``prohibited_hosts = []``."""
    eng = Engine(policy(queue=smart("[127.0.0.1]")), seed=1)
    fx = World(eng).feed(submit(1))
    [rec] = records(fx, "Bounce")
    assert rec["response"]["enhanced_code"] == {"class": 5, "subject": 4, "detail": 4}


def test_queues_with_the_same_list_share_one_site() -> None:
    eng = Engine(policy(queue=smart("[192.0.2.7]"), suspended=True), seed=1)
    eng.handle(submit(1, rcpts=("a@one.test",)))
    eng.handle(submit(2, rcpts=("b@two.test",)))
    assert eng.ready_depths() == {"unspecified->mx_list:[192.0.2.7]@smtp_client": 2}


def test_hosts_are_tried_in_the_order_listed() -> None:
    """KumoMTA reverses the list into its LIFO plan, so the first entry is tried
    first; no shuffle (smtp_dispatcher.rs)."""
    hosts = ["[192.0.2.3]", {"name": "b.relay.test", "addr": "192.0.2.2"}, "[192.0.2.1]"]
    for seed in range(5):
        eng = Engine(policy(queue=smart(*hosts), connection_limit=1), seed=seed)
        w = World(eng, auto_connect=False)
        fx = w.feed(submit(1))
        [c] = of(fx, Connect)
        assert (c.host, c.address) == ("[192.0.2.3]", "192.0.2.3")
        ctx = eng.conns[c.conn]
        assert [a for _, a in ctx.plan] == ["192.0.2.3", "192.0.2.2", "192.0.2.1"]
        assert ctx.rq.site == "mx_list:[192.0.2.3],192.0.2.2,[192.0.2.1]"


def test_a_bare_name_is_looked_up_for_its_addresses_only() -> None:
    eng = Engine(policy(queue=smart("relay.test", "[192.0.2.9]")), seed=1)
    fx = eng.handle(submit(1))
    key = "mx_list:relay.test,[192.0.2.9]"
    assert of(fx, Resolve) == [] and of(fx, ResolveHosts) == [
        ResolveHosts(domain=key, hosts=("relay.test",))]
    answer = (MxRecord(preference=0, host="relay.test",
                       addresses=("192.0.2.5", "192.0.2.6")),)
    fx = eng.handle(Resolved(at=1.0, domain=key, mx=answer, ttl=60.0))
    [c] = of(fx, Connect)
    ctx = eng.conns[c.conn]
    assert list(ctx.plan) == [("relay.test", "192.0.2.5"), ("relay.test", "192.0.2.6"),
                              ("[192.0.2.9]", "192.0.2.9")]
    assert eng.domains[key].expires == 61.0


def test_a_failed_smart_host_lookup_is_transient() -> None:
    eng = Engine(policy(queue=smart("relay.test")), seed=1)
    eng.handle(submit(1))
    fx = eng.handle(ResolveFailed(at=1.0, domain="mx_list:relay.test",
                                  kind=DnsFailure.NXDOMAIN, detail="relay.test: NXDOMAIN"))
    [rec] = records(fx, "TransientFailure")
    assert (rec["response"]["code"], rec["response"]["enhanced_code"]["detail"]) == (451, 4)
    assert "address lookup for mx_list:relay.test failed" in rec["response"]["content"]


def test_restart_asks_the_smart_hosts_again_not_the_domain() -> None:
    eng = Engine(policy(queue=smart("relay.test")), seed=1)
    eng.handle(submit(1))
    fx = eng.handle(Restarted(at=5.0))
    assert of(fx, Resolve) == []
    assert of(fx, ResolveHosts) == [ResolveHosts(domain="mx_list:relay.test",
                                                 hosts=("relay.test",))]


def test_a_domain_literal_recipient_goes_to_its_address() -> None:
    """mailexchanger/src/lib.rs: a Literal is one host, site name the address."""
    eng = Engine(policy(prohibited_hosts=[]), seed=1)
    w = World(eng)
    fx = w.feed(submit(1, rcpts=("x@[127.0.0.1]",)))
    assert of(fx, Resolve) == []
    assert connects(fx) == [("127.0.0.1", "127.0.0.1")]
    [rec] = records(fx, "Delivery")
    assert rec["site"] == "unspecified->127.0.0.1@smtp_client"
    fx = w.feed(submit(2, rcpts=("y@[IPv6:::1]",)))
    assert connects(fx) == [("::1", "::1")]


def test_a_malformed_domain_literal_fails_as_a_lookup_does() -> None:
    eng = Engine(policy(), seed=1)
    fx = eng.handle(submit(1, rcpts=("x@[300.1.1.1]",)))
    assert of(fx, Resolve) == [Resolve(domain="[300.1.1.1]")]
    fx = eng.handle(ResolveFailed(at=1.0, domain="[300.1.1.1]", kind=DnsFailure.NXDOMAIN))
    [rec] = records(fx, "TransientFailure")
    assert rec["response"]["code"] == 451


def test_no_mta_sts_for_smart_hosts_or_literals() -> None:
    """KumoMTA applies MTA-STS inside MailExchanger::resolve (mailexchanger/src/lib.rs),
    which an mx_list or a domain literal never reaches."""
    eng = Engine(policy(queue=smart("[192.0.2.7]"), enable_mta_sts=True), seed=1)
    fx = World(eng, auto_connect=False).feed(submit(1))
    assert of(fx, FetchMtaSts) == [] and len(of(fx, Connect)) == 1
    eng = Engine(policy(enable_mta_sts=True), seed=1)
    fx = World(eng, auto_connect=False).feed(submit(1, rcpts=("x@[192.0.2.8]",)))
    assert of(fx, FetchMtaSts) == [] and len(of(fx, Connect)) == 1


# -- in simulation ------------------------------------------------------------------

def _smart_scenario(hosts: dict[str, Any], mx_list: list[Any]) -> Scenario:
    fast = {"connect_latency": "5ms", "command_latency": "2ms", "data_latency": "10ms"}
    return Scenario.from_dict({
        "name": "smart_host", "seed": 1, "horizon": "1h", "sample_interval": "1s",
        "traffic": [{"domains": {"example.com": 1, "example.net": 1}, "messages": 40,
                     "at": "0s"}],
        # neither domain resolves: every message must go by the smart host
        "domains": {"example.com": {"nxdomain": True}, "example.net": {"servfail": True}},
        "hosts": {name: {**fast, **spec} for name, spec in hosts.items()},
        "egress_path": {"enable_tls": "Disabled"},
        "queue": {"protocol": {"smtp": {"mx_list": mx_list}}},
    })


def test_sim_delivers_every_domain_through_the_smart_host() -> None:
    """The simulator answers `ResolveHosts` from its hosts table."""
    result = run(_smart_scenario({"relay.example.org": {}}, ["relay.example.org"]))
    delivered = [r for r in result.records if r["type"] == "Delivery"]
    assert len(delivered) == 40
    assert {r["site"] for r in delivered} == {"unspecified->mx_list:relay.example.org@smtp_client"}
    assert {r["peer_address"]["name"] for r in delivered} == {"relay.example.org"}
    assert not [r for r in result.records if r["type"] in ("Bounce", "TransientFailure")]


def test_sim_falls_to_the_second_smart_host_when_the_first_refuses() -> None:
    result = run_sim({"relay1.example.org": {"refuse_connections": 1},
                      "relay2.example.org": {}},
                     ["relay1.example.org", "relay2.example.org"])
    delivered = [r for r in result.records if r["type"] == "Delivery"]
    assert len(delivered) == 40
    assert {r["peer_address"]["name"] for r in delivered} == {"relay2.example.org"}


def run_sim(hosts: dict[str, Any], mx_list: list[Any]) -> SimResult:
    return run(_smart_scenario(hosts, mx_list))


def test_sim_reaches_a_smart_host_given_by_address() -> None:
    """``"[IP]"`` and ``{name, addr}`` entries reach the declared host at that address."""
    hosts = {"relay.example.org": {"address": "10.9.0.1"},
             "backup.example.org": {"address": "10.9.0.2"}}
    for entry, name in (("[10.9.0.1]", "[10.9.0.1]"),
                        ({"name": "smart.example.org", "addr": "10.9.0.2"},
                         "smart.example.org")):
        result = run_sim(hosts, [entry])
        delivered = [r for r in result.records if r["type"] == "Delivery"]
        assert len(delivered) == 40
        assert {r["peer_address"]["name"] for r in delivered} == {name}


def test_a_smart_host_the_scenario_lacks_is_a_one_line_error() -> None:
    with pytest.raises(ScenarioError, match=r"queue\.protocol\.smtp\.mx_list\[0\]: "
                                            r"'relay\.nowhere' is not a host of \[hosts\]"):
        _smart_scenario({"relay.example.org": {}}, ["relay.nowhere"])
