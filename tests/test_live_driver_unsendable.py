"""engine.live.driver: a command that cannot be put on the wire fails its
transaction or host with a clear record; nothing else of the step is lost.

Real DNS and SMTP servers on loopback.  A bare CR in an address (possible
in a journal written before the listener refused it) makes `engine.wire`
raise at send time, and a keysource that cannot be read makes AUTH
unsendable.  Before, the exception cut off the rest of the event's
effects (the reply timer among them), so the connection waited for a reply
to a command never sent; now the session hears a `Malformed` naming the
error, the message gets a TransientFailure record and its retry, and the
engine's timers and connections stay consistent.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from tests.support.dns_server import DnsServer
from tests.support.live_harness import Live, path_policy, zone_for
from tests.support.smtp_servers import SinkServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def dns() -> Any:
    with DnsServer(zone_for()) as server:
        yield server


def test_a_bare_cr_in_the_sender_fails_the_transaction_not_the_connection_state(
        dns: DnsServer) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink, Live(path_policy(sink.port), dns.port) as live:
            live.submit(("a@example.com",), sender="bad\rsender@sender.test")
            await live.wait_for(lambda: live.of_type("TransientFailure"), what="a record")
            [rec] = live.of_type("TransientFailure")
            assert "egress could not send MAIL FROM" in rec["response"]["content"]
            assert "must not contain CR or LF" in rec["response"]["content"]
            eng = live.engine
            await live.wait_for(lambda: not eng.conns, what="the connection closed")
            # consistent: the message waits for its retry, no timer for a dead session
            assert eng.scheduled_count == 1 and eng.queued_count == 1
            assert [t for t in eng.timers if t[0] in ("conn", "idle", "msgrate")] == []
            assert live.driver.effect_errors == 0
            live.submit(("b@example.com",))  # the path still delivers
            await live.wait_for(lambda: len(sink.messages) == 1, what="a delivery")

    asyncio.run(scenario())


def test_an_unreadable_keysource_defers_with_a_record_naming_it_not_its_value(
        dns: DnsServer, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-password-file"

    async def scenario() -> None:
        async with SinkServer(auth=("egress", "s3cret-pw"), auth_require_tls=False) as sink, \
                Live(path_policy(sink.port, smtp_auth_plain_username="egress",
                                 smtp_auth_plain_password=str(missing),
                                 allow_smtp_auth_plain_without_tls=True), dns.port) as live:
            live.submit(("a@example.com",))
            await live.wait_for(lambda: live.of_type("TransientFailure"), what="a record")
            [rec] = live.of_type("TransientFailure")
            text = rec["response"]["content"]
            assert "egress could not send AUTH PLAIN" in text
            assert str(missing) in text  # where the secret should be, never a secret
            assert "connection closed by peer" not in text
            assert sink.auth_attempts == []
            await live.wait_for(lambda: not live.engine.conns, what="the connection closed")
            assert live.engine.scheduled_count == 1  # deferred: retried on schedule

    asyncio.run(scenario())
