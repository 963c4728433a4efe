"""KumoMTA's dispatcher rules through the live driver, on loopback: the batch
limit, RSET and the lone dot, reconnect_strategy and
try_next_host_on_transport_error (docs/KUMOMTA.md rows 9a, 9b, 10b, 11).
Scripted SMTP servers (tests/support/smtp_scripted.py) and the dnslib server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.dns_server import DnsServer
from tests.support.live_harness import Live, path_policy, zone_for
from tests.support.smtp_servers import Script, ScriptedServer, Step

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def dns() -> Any:
    with DnsServer(zone_for()) as server:
        yield server


def test_recipients_past_the_batch_limit_go_on_the_same_connection(dns: DnsServer) -> None:
    """crates/kumod/src/smtp_dispatcher.rs (``retry_immediately``): three
    recipients, max_recipients_per_batch=2: two transactions on one
    connection, RSET between them, no TransientFailure."""
    async def scenario() -> None:
        async with ScriptedServer() as server, Live(
                path_policy(server.port, max_recipients_per_batch=2), dns.port) as live:
            live.submit(("a@example.com", "b@example.com", "c@example.com"))
            await live.wait_done()
            assert {r["type"] for r in live.records[1:]} == {"Delivery"}
            assert len(server.connections) == 1
            verbs = [c.split(" ")[0] for c in server.connections[0].commands]
            assert verbs[:9] == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA",
                                 "RSET", "MAIL", "RCPT", "DATA"]

    asyncio.run(scenario())


def test_lone_dot_after_354_and_rset_after_a_failed_transaction(dns: DnsServer) -> None:
    """crates/rfc5321/src/client.rs (``send_mail_multi_recip``, ``use_rset``):
    a pipelined DATA answered 354 with no recipient accepted gets a lone
    dot, the connection carries on, and the next transaction starts with
    RSET although enable_rset is false (the first one failed)."""
    script = Script({
        "RCPT": [Step("550 5.1.1 no such user"), Step("250 2.1.5 OK")],
        "DOT": [Step("554 5.5.1 no valid recipients"), Step("250 2.0.0 OK queued")],
    })

    async def scenario() -> None:
        async with ScriptedServer(script) as server, Live(
                path_policy(server.port, connection_limit=1, enable_rset=False),
                dns.port) as live:
            live.submit()
            live.submit()
            await live.wait_done()
            assert [r["type"] for r in live.records if r["type"] != "Reception"] == [
                "Bounce", "Delivery"]
            assert len(server.connections) == 1
            log = server.connections[0]
            verbs = [c.split(" ")[0] for c in log.commands]
            assert verbs[:8] == ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT",
                                 "DATA"]
            assert log.bodies[0] == b""  # the lone dot

    asyncio.run(scenario())


async def _two_hosts(first: Script, **keys: Any) -> tuple[Live, ScriptedServer, ScriptedServer]:
    """mx1 (127.0.0.1) plays `first`, mx2 (127.0.0.2) is fine; two messages."""
    zone = {"example.com": {"MX": [(10, "mx1.example.com"), (20, "mx2.example.com")]},
            "mx1.example.com": {"A": ["127.0.0.1"]}, "mx2.example.com": {"A": ["127.0.0.2"]}}
    with DnsServer(zone) as dns:
        async with ScriptedServer(first) as one, ScriptedServer(
                host="127.0.0.2", port=one.port) as two, Live(
                path_policy(one.port, connection_limit=1, **keys), dns.port) as live:
            live.submit()
            live.submit()
            await live.wait_for(lambda: len(live.of_type("Delivery")) >= 1
                                and len(live.of_type("TransientFailure")) >= 1)
            await asyncio.sleep(0.2)
            return live, one, two


def test_connect_next_host_after_the_server_closed_mid_transaction() -> None:
    """crates/kumod/src/smtp_dispatcher.rs (``update_state_for_reconnect``,
    ConnectNextHost, the default): mx1 answers MAIL with 421 and closes; the
    session goes on at mx2 with the next message; the first is requeued."""
    live, one, two = asyncio.run(_two_hosts(
        Script({"MAIL": Step("421 4.3.2 closing", then="close")})))
    [fail] = live.of_type("TransientFailure")
    [ok] = live.of_type("Delivery")
    assert fail["response"]["code"] == 421 and ok["id"] != fail["id"]
    assert ok["peer_address"]["addr"] == "127.0.0.2"
    assert len(one.connections) == 1 and len(two.connections) == 1


def test_try_next_host_on_transport_error_takes_the_message_to_the_next_host() -> None:
    """crates/kumod/src/smtp_dispatcher.rs (``try_next_host_on_transport_error``):
    the same 421, and the message it broke is delivered by mx2 at once,
    attempts unchanged."""
    live, _, _ = asyncio.run(_two_hosts(
        Script({"MAIL": Step("421 4.3.2 closing", then="close")}),
        try_next_host_on_transport_error=True))
    [fail] = live.of_type("TransientFailure")
    delivered = live.of_type("Delivery")
    assert delivered[0]["id"] == fail["id"] and delivered[0]["num_attempts"] == 0
    assert delivered[0]["peer_address"]["addr"] == "127.0.0.2"
