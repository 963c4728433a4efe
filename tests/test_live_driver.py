"""engine.live.driver end to end: Engine + LiveDriver + LiveResolver against real peers.

Every peer is on loopback: a dnslib server answering MX -> host -> A 127.0.0.x,
aiosmtpd sinks and scripted servers.  prohibited_hosts is emptied in every
policy here: its default refuses 127.0.0.0/8, so loopback delivery needs it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from engine.events import Closed, Connected, Response, TimerFired
from tests.support.dns_server import DnsServer
from tests.support.live_harness import Live, message, path_policy, zone_for
from tests.support.smtp_servers import Script, ScriptedServer, SinkServer, Step

pytestmark = pytest.mark.timeout(30)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@pytest.fixture
def dns() -> Any:
    with DnsServer(zone_for()) as server:
        yield server


def test_plain_delivery_reaches_the_sink_with_a_delivery_record(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink, Live(path_policy(sink.port), dns.port) as live:
            mid = live.submit(("a@example.com", "b@example.com"))
            await live.wait_done()
            (got,) = sink.messages
            assert got.recipients == ("a@example.com", "b@example.com")
            assert got.sender == "s@sender.test"
            assert got.content == live.bodies[mid]
            # one record for the one response, both recipients listed, as
            # KumoMTA groups them (crates/kumod/src/smtp_dispatcher.rs, by_status)
            (r,) = live.of_type("Delivery")
            assert r["recipient"] == ["a@example.com", "b@example.com"]
            assert r["peer_address"] == {"name": "mx1.example.com", "addr": "127.0.0.1"}
            assert r["response"]["code"] == 250
            assert r["num_attempts"] == 0  # a first try (KumoMTA counts on requeue)
            assert "tls_cipher" not in r
            assert live.discarded == [mid]

    run(scenario())


def test_dot_stuffing_and_bare_lf_arrive_as_the_sink_expects(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink, Live(path_policy(sink.port), dns.port) as live:
            content = b"Subject: dots\r\n\r\n.leading dot\n..two\r\nend\r\n"
            live.submit(content=content)
            await live.wait_done()
            want = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
            assert sink.messages[0].content == want

    run(scenario())


def test_pipelined_batch_arrives_in_one_write(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with ScriptedServer() as server, Live(path_policy(server.port), dns.port) as live:
            mid = live.submit(("a@example.com", "b@example.com", "c@example.com"))
            await live.wait_done()
            (conn,) = server.connections
            batch = [c for c in conn.chunks if c.startswith(b"MAIL FROM")]
            size = len(live.bodies[mid])
            want = (b"MAIL FROM:<s@sender.test> SIZE=%d\r\nRCPT TO:<a@example.com>\r\n"
                    b"RCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n" % size)
            assert batch == [want]
            (rec,) = live.of_type("Delivery")  # one response, one record
            assert rec["recipient"] == ["a@example.com", "b@example.com", "c@example.com"]

    run(scenario())


def test_connection_is_reused_for_several_messages(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink:
            policy = path_policy(sink.port, connection_limit=1)
            async with Live(policy, dns.port) as live:
                for _ in range(5):
                    live.submit()
                await live.wait_done()
                assert len(sink.messages) == 5
                assert sink.connections == 1
                assert {r["peer_address"]["addr"] for r in live.of_type("Delivery")} == {
                    "127.0.0.1"}

    run(scenario())


def test_max_deliveries_per_connection_opens_a_new_connection(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with ScriptedServer() as server:
            policy = path_policy(server.port, connection_limit=1,
                                 max_deliveries_per_connection=2, idle_timeout=0.2)
            async with Live(policy, dns.port) as live:
                for _ in range(5):
                    live.submit()
                await live.wait_done()
                await live.wait_for(lambda: len(server.connections) == 3
                                    and all("QUIT" in c.commands for c in server.connections),
                                    what="three connections quit")
                per_conn = [sum(1 for c in log.commands if c.startswith("MAIL"))
                            for log in server.connections]
                assert per_conn == [2, 2, 1]

    run(scenario())


def test_idle_timeout_closes_with_quit_at_the_configured_time(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with ScriptedServer() as server:
            policy = path_policy(server.port, idle_timeout=0.3)
            async with Live(policy, dns.port) as live:
                live.submit()
                await live.wait_done()
                done = time.monotonic()
                await live.wait_for(lambda: bool(server.connections)
                                    and "QUIT" in server.connections[0].commands,
                                    what="QUIT after idle")
                waited = time.monotonic() - done
                assert 0.2 <= waited < 1.0
                assert server.connections[0].commands[-1] == "QUIT"
                await live.wait_for(lambda: live.engine.conns == {}, what="conn forgotten")

    run(scenario())


def test_source_address_binding(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink:
            policy = path_policy(sink.port, source_address="127.0.0.2")
            async with Live(policy, dns.port) as live:
                live.submit()
                await live.wait_done()
                assert sink.messages[0].peer == "127.0.0.2"
                (rec,) = live.of_type("Delivery")
                assert rec["egress_source"] == "src"

    run(scenario())


def test_every_fed_event_is_journaled_in_order(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink, Live(path_policy(sink.port), dns.port) as live:
            live.submit()
            await live.wait_done()
            kinds = [type(e).__name__ for e in live.events]
            assert kinds[:3] == ["MessageSubmitted", "Resolved", "Connected"]
            assert isinstance(live.events[2], Connected)
            assert any(isinstance(e, Response) and e.reply.code == 250 for e in live.events)
            # replaying the journaled events into a fresh engine gives the same state
            from engine.engine import Engine

            twin = Engine(live.policy)
            twin.hostname = live.engine.hostname  # what the driver gave it (the EHLO name)
            for ev in live.events:
                twin.handle(ev)
            assert twin.snapshot() == live.engine.snapshot()

    run(scenario())


def test_body_is_read_from_the_body_source_at_send_time(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with ScriptedServer() as server, Live(path_policy(server.port), dns.port) as live:
            live.submit(content=message(99))
            await live.wait_done()
            assert server.connections[0].bodies == [message(99)]
            verbs = [c.split(" ")[0] for c in server.connections[0].commands]
            assert verbs[:2] == ["EHLO", "MAIL"]

    run(scenario())


def test_stale_timer_firing_is_ignored(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink, Live(path_policy(sink.port), dns.port) as live:
            live.driver._fire(("idle", 12345))  # never armed in the engine
            assert live.driver.protocol_errors == 0
            assert not any(isinstance(e, TimerFired) for e in live.events)

    run(scenario())


def test_refused_event_is_not_journaled(dns: DnsServer) -> None:
    async def scenario() -> None:
        async with Live(path_policy(1), dns.port) as live:
            live.driver.feed(Closed(at=time.time(), conn=77))
            assert live.driver.protocol_errors == 1
            assert live.events == []
            live.driver.protocol_errors = 0

    run(scenario())


def test_drain_suppresses_new_transactions(dns: DnsServer) -> None:
    async def scenario() -> None:
        script = Script({"DOT": Step("250 2.0.0 OK", delay=0.3)})
        async with ScriptedServer(script) as server, Live(
            path_policy(server.port, connection_limit=1), dns.port
        ) as live:
            live.submit()
            live.submit()
            await live.wait_for(lambda: live.driver.in_flight() == 1, what="in flight")
            finished = await live.driver.drain(2.0)
            assert finished is True
            assert len(live.of_type("Delivery")) == 1
            mails = [c for c in server.commands if c.split(":")[0] == "MAIL FROM"]
            assert len(mails) == 1  # the second transaction never went out
            assert live.driver.in_flight() == 0
            assert live.driver.engine.draining  # the engine, not the driver, held it back
            assert sum(live.driver.engine.ready_depths().values()) == 1
            assert "QUIT" in server.commands

    run(scenario())
