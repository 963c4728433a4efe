"""The lab's servers behave as the scenario's host table says; its DNS answers the scenario.

Every test talks to real servers over loopback (127.0.0.x) with a raw
asyncio client, so what is checked is what a delivering engine would see on
the wire: replies, their timing, resets, refusals and TLS.
"""

from __future__ import annotations

import time
from typing import Any

import dnslib
import pytest

from engine.events import DnsFailure, Resolved, ResolveFailed
from engine.live.dns import LiveResolver
from engine.reply import Reply
from lab.dns import LabZone
from lab.smtp_wire import wire
from lab.timing import MAX_LAG
from lab.world import Lab, lab_addresses
from sim.host_behaviour import ehlo_reply
from sim.scenario import Scenario
from tests.support.lab_kit import Client, greet, scenario, with_lab
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)


# -- wire and addresses -----------------------------------------------------------


def test_wire_writes_multiline_replies_with_enhanced_codes() -> None:
    assert wire(Reply.make(450, "4.2.1", "busy\nlater")) == b"450-4.2.1 busy\r\n450 4.2.1 later\r\n"
    assert wire(Reply(code=250, text="mx\nPIPELINING")) == b"250-mx\r\n250 PIPELINING\r\n"


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("starttls", [True, False])
@pytest.mark.parametrize("auth", [True, False])
def test_ehlo_capabilities_are_the_simulated_worlds(
    pipelining: bool, starttls: bool, auth: bool,
) -> None:
    # The lab's servers answer with sim.host_behaviour, as sim.world does, so
    # they advertise the same EHLO reply; pinned here to the exact lines.
    import lab.servers
    import sim.host_behaviour

    assert lab.servers.HostBehaviour is sim.host_behaviour.HostBehaviour
    assert ehlo_reply is sim.host_behaviour.ehlo_reply
    spec = scenario({"pipelining": pipelining, "starttls": starttls,
                     "auth": auth}).hosts["mx.lab.test"]
    assert "STARTTLS" not in ehlo_reply(spec, tls=True).text.split("\n")
    lines = ehlo_reply(spec, tls=False).text.split("\n")
    assert lines == ["mx.lab.test", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES",
                     *(["PIPELINING"] if pipelining else []),
                     *(["STARTTLS"] if starttls else []),
                     *(["AUTH PLAIN LOGIN"] if auth else [])]


def test_addresses_are_deterministic_by_host_name() -> None:
    sc = Scenario.from_dict({
        "traffic": [{"domain": "a.test", "messages": 1}],
        "domains": {"a.test": {"mx": ["zz.a.test", "aa.a.test"]}},
        "hosts": {"zz.a.test": {"addresses": ["192.0.2.7", "192.0.2.8"]},
                  "aa.a.test": {"address": "198.51.100.1"}},
    })
    amap, per_host = lab_addresses(sc)
    assert per_host == {"aa.a.test": ("127.0.0.10",), "zz.a.test": ("127.0.0.11", "127.0.0.12")}
    assert amap == {"198.51.100.1": "127.0.0.10", "192.0.2.7": "127.0.0.11",
                    "192.0.2.8": "127.0.0.12"}


# -- DNS -----------------------------------------------------------------------


def _dns_scenario() -> Scenario:
    return Scenario.from_dict({
        "traffic": [{"domain": "mx.test", "messages": 1}],
        "domains": {
            "mx.test": {"mx": [{"host": "b.mx.test", "preference": 20},
                               {"host": "a.mx.test", "preference": 10}], "ttl": "60s"},
            "null.test": {"null_mx": True},
            "gone.test": {"nxdomain": True},
            "broken.test": {"servfail": True},
            "flaky.test": {"mx": ["a.mx.test"],
                           "dns_outages": [{"start": "0s", "end": "1h", "kind": "TIMEOUT"}]},
            "self.test": {},
        },
        "host_defaults": {},
    })


def _ask(zone: LabZone, name: str, rtype: str, now: float = 0.0) -> dnslib.DNSRecord | None:
    q = dnslib.DNSRecord.question(name, rtype)
    out = zone.answer(q.pack(), now)
    return None if out is None else dnslib.DNSRecord.parse(out)


def test_zone_answers_the_scenario_with_lab_addresses() -> None:
    sc = _dns_scenario()
    amap, _ = lab_addresses(sc)
    zone = LabZone(sc, amap)
    mx = _ask(zone, "mx.test", "MX")
    assert mx is not None
    assert sorted((r.rdata.preference, str(r.rdata.label)) for r in mx.rr) == [
        (10, "a.mx.test."), (20, "b.mx.test.")]
    assert {r.ttl for r in mx.rr} == {60}
    a = _ask(zone, "a.mx.test", "A")
    assert a is not None and [str(r.rdata) for r in a.rr] == ["127.0.0.10"]
    null = _ask(zone, "null.test", "MX")
    assert null is not None and [(r.rdata.preference, str(r.rdata.label)) for r in null.rr] == [
        (0, ".")]
    gone, broken = _ask(zone, "gone.test", "MX"), _ask(zone, "broken.test", "MX")
    assert gone is not None and gone.header.rcode == dnslib.RCODE.NXDOMAIN
    assert broken is not None and broken.header.rcode == dnslib.RCODE.SERVFAIL
    assert _ask(zone, "flaky.test", "MX", now=10.0) is None  # TIMEOUT: dropped
    implicit = _ask(zone, "self.test", "MX")
    assert implicit is not None and implicit.header.rcode == 0 and implicit.rr == []
    unknown = _ask(zone, "nowhere.test", "A")
    assert unknown is not None and unknown.header.rcode == dnslib.RCODE.NXDOMAIN


def test_live_resolver_against_the_lab_dns_server() -> None:
    sc = _dns_scenario()

    async def body(lab: Lab) -> tuple[Any, ...]:
        r = LiveResolver(nameservers=[lab.dns.host], port=lab.dns.port, timeout=1.0)
        return (await r.resolve_mx("mx.test", 0.0), await r.resolve_mx("gone.test", 0.0),
                await r.resolve_mx("null.test", 0.0), await r.resolve_mx("self.test", 0.0),
                lab.host_addresses)

    mx, gone, null, implicit, addrs = with_lab(sc, body)
    assert isinstance(mx, Resolved)
    assert [(m.preference, m.host, m.addresses) for m in mx.mx] == [
        (10, "a.mx.test", addrs["a.mx.test"]), (20, "b.mx.test", addrs["b.mx.test"])]
    assert isinstance(gone, ResolveFailed) and gone.kind is DnsFailure.NXDOMAIN
    assert isinstance(null, Resolved) and null.mx[0].host == "."
    assert isinstance(implicit, Resolved) and implicit.implicit
    assert implicit.mx[0].addresses == addrs["self.test"]


# -- SMTP: the happy path, timing, pipelining -------------------------------------


def test_a_transaction_is_accepted_and_counted() -> None:
    async def body(lab: Lab) -> tuple[list[str], str, dict[str, int]]:
        c = await greet(lab)
        replies = await c.send("MAIL FROM:<a@x.test>", "RCPT TO:<b@lab.test>", "DATA")
        c.writer.write(b"Subject: hi\r\n\r\n..dot-stuffed\r\n.\r\n")
        dot = await c.reply()
        await c.send("QUIT")
        c.close()
        await until(lambda: lab.counters()["mx.lab.test"]["open"] == 0)
        return replies, dot, lab.counters()["mx.lab.test"]

    replies, dot, counters = with_lab(scenario(), body)
    assert replies == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK",
                       "354 Start mail input; end with <CRLF>.<CRLF>"]
    assert dot == "250 2.0.0 Message accepted for delivery"
    assert counters["accepted"] == 1 and counters["connections"] == 1
    assert counters["open"] == 0 and counters["peak_connections"] == 1


def test_latencies_per_phase_and_one_per_pipelined_batch() -> None:
    # Latencies long enough that "one latency, not two" leaves room for a loaded
    # machine: each upper bound is under the next multiple of its latency.
    sc = scenario({"connect_latency": "300ms", "command_latency": "300ms",
                   "data_latency": "500ms"})

    async def body(lab: Lab) -> list[float]:
        t = time.perf_counter()
        c = await Client.open(lab)
        await c.reply()
        times = [time.perf_counter() - t]
        t = time.perf_counter()
        ehlo = await c.send("EHLO c.test")
        assert "PIPELINING" in ehlo[0]
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        c.writer.write(b"RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@lab.test>\r\nDATA\r\n")
        for _ in range(4):
            await c.reply()
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        c.writer.write(b"body\r\n.\r\n")
        await c.reply()
        times.append(time.perf_counter() - t)
        c.close()
        return times

    banner, ehlo, batch, dot = with_lab(sc, body)
    # The lab's pacer wakes up to MAX_LAG early (its running estimate of how
    # late timers fire), so a reply may come that much before its latency:
    # egress's choice, making latencies right on average (lab/timing.py).
    early = MAX_LAG
    assert 0.30 - early <= banner < 0.60
    assert 0.30 - early <= ehlo < 0.60
    assert 0.30 - early <= batch < 0.60  # one latency for the whole batch, not two or four
    assert 0.50 - early <= dot < 1.00


def test_a_host_without_pipelining_answers_each_command_after_its_own_latency() -> None:
    sc = scenario({"command_latency": "200ms", "pipelining": False})

    async def body(lab: Lab) -> tuple[str, float]:
        c = await Client.open(lab)
        await c.reply()
        ehlo = (await c.send("EHLO c.test"))[0]
        t = time.perf_counter()
        c.writer.write(b"RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@lab.test>\r\n")
        for _ in range(3):
            await c.reply()
        c.close()
        return ehlo, time.perf_counter() - t

    ehlo, batch = with_lab(sc, body)
    assert "PIPELINING" not in ehlo
    assert 0.60 - 3 * MAX_LAG <= batch < 0.80  # three latencies, one per command, not four


# -- lab: only loopback ------------------------------------------------------------


def test_servers_refuse_non_loopback_addresses() -> None:
    from lab.servers import HostServer

    sc = scenario()
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8 only, not '192\.0\.2\.1'"):
        HostServer(sc.hosts["mx.lab.test"], ("192.0.2.1",), rng=None,  # type: ignore[arg-type]
                   clock=time.time)
