"""Faults through the live driver: each gives the right record type and code.

Real peers on loopback only: scripted SMTP servers that misbehave to the byte
(tests/support/smtp_scripted.py), a port that refuses connections, and the
dnslib server answering SERVFAIL, NXDOMAIN or a null MX.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from engine.wire import ReplyParser
from tests.support.dns_server import DnsServer
from tests.support.live_harness import Live, path_policy, zone_for
from tests.support.smtp_servers import (
    Script,
    ScriptedServer,
    banner_421,
    closed_port,
    drop_mid_data,
    fail_at,
    malformed_reply,
    overlong_reply,
    slow_reply,
    tls_handshake_failure,
)

pytestmark = pytest.mark.timeout(30)
RCPTS = ("a@example.com", "b@example.com")


@pytest.fixture
def dns() -> Any:
    with DnsServer(zone_for()) as server:
        yield server


async def _outcome(dns_port: int, script: Script, **keys: Any) -> tuple[Live, float]:
    """Submit one two-recipient message to a server playing `script`; return
    the harness (records) and seconds from submission to the first outcome."""
    async with ScriptedServer(script) as server, Live(path_policy(server.port, **keys),
                                                      dns_port) as live:
        started = time.monotonic()
        live.submit(RCPTS)
        await live.wait_for(lambda: any(r["type"] != "Reception" for r in live.records),
                            what="an outcome")
        took = time.monotonic() - started
        # Per-recipient outcomes come one record each: wait for every recipient's.
        await live.wait_for(lambda: _answered(live) >= set(RCPTS), what="every recipient")
        return live, took


def _answered(live: Live) -> set[str]:
    """Recipients named by an outcome record so far."""
    out: set[str] = set()
    for r in live.records:
        if r["type"] != "Reception":
            rcpt = r["recipient"]
            out.update([rcpt] if isinstance(rcpt, str) else rcpt)
    return out


def _summary(live: Live) -> list[tuple[Any, ...]]:
    out = []
    for r in live.records:
        if r["type"] == "Reception":
            continue
        enh = r["response"]["enhanced_code"]
        code = None if enh is None else f"{enh['class']}.{enh['subject']}.{enh['detail']}"
        out.append((r["type"], r["recipient"], r["response"]["code"], code,
                    r["response"]["command"]))
    return out


@pytest.mark.parametrize(
    ("verb", "reply", "kind", "command"),
    [
        ("MAIL", "451 4.3.0 try later", "TransientFailure", "MAIL FROM:<s@sender.test> SIZE="),
        ("MAIL", "550 5.7.1 sender refused", "Bounce", "MAIL FROM:<s@sender.test> SIZE="),
        ("RCPT", "450 4.2.0 mailbox busy", "TransientFailure", "RCPT TO:<"),
        ("RCPT", "550 5.1.1 no such user", "Bounce", "RCPT TO:<"),
        ("DATA", "451 4.3.0 not now", "TransientFailure", "DATA"),
        ("DATA", "554 5.0.0 no data", "Bounce", "DATA"),
        ("DOT", "452 4.3.1 disk full", "TransientFailure", "."),
        ("DOT", "554 5.7.1 spam", "Bounce", "."),
    ],
)
def test_smtp_reply_faults(dns: DnsServer, verb: str, reply: str, kind: str,
                           command: str) -> None:
    live, _ = asyncio.run(_outcome(dns.port, fail_at(verb, reply)))
    code, enh = int(reply[:3]), reply.split(" ")[1]
    got = _summary(live)
    if verb == "RCPT":  # each RCPT has its own command, so its own record
        assert [(k, r, c, e) for k, r, c, e, _ in got] == [
            (kind, "a@example.com", code, enh), (kind, "b@example.com", code, enh)]
    else:  # one response for both: one record listing them (KumoMTA's by_status)
        assert [(k, r, c, e) for k, r, c, e, _ in got] == [(kind, list(RCPTS), code, enh)]
    assert all(cmd.startswith(command) for *_, cmd in got)
    assert all(r["num_attempts"] == 0 for r in live.records[1:])
    if kind == "Bounce":
        assert live.engine.queued_count == 0
    else:
        assert live.engine.scheduled_count == 1  # on the retry schedule


def test_connection_refused(dns: DnsServer) -> None:
    async def scenario() -> None:
        with closed_port() as (_, port):
            async with Live(path_policy(port), dns.port) as live:
                live.submit(RCPTS)
                await live.wait_for(lambda: len(live.records) == 2, what="an outcome")
                (rec,) = live.of_type("TransientFailure")
                assert rec["recipient"] == list(RCPTS)
                # every host failed: KumoMTA's internal 400, no peer
                # (crates/kumod/src/ready_queue.rs, Dispatcher::run)
                assert rec["response"]["code"] == 400
                assert rec["response"]["content"].startswith(
                    "KumoMTA internal: failed to connect to any candidate hosts: ")
                assert "ConnectionRefusedError" in rec["response"]["content"]
                assert rec["peer_address"] is None

    asyncio.run(scenario())


def test_banner_421(dns: DnsServer) -> None:
    live, _ = asyncio.run(_outcome(dns.port, banner_421()))
    # the only host failed: KumoMTA's internal 400 names its 421
    assert _summary(live) == [("TransientFailure", list(RCPTS), 400, None, None)]
    assert "421 4.3.2" in live.records[1]["response"]["content"]


def test_drop_mid_data(dns: DnsServer) -> None:
    live, _ = asyncio.run(_outcome(dns.port, drop_mid_data()))
    got = _summary(live)
    assert [(k, c, e, cmd) for k, _, c, e, cmd in got] == [
        ("TransientFailure", 421, "4.4.2", ".\r\n")]
    assert "connection closed" in live.records[1]["response"]["content"]


def test_reply_slower_than_its_timeout_fires_at_the_configured_value(dns: DnsServer) -> None:
    live, took = asyncio.run(_outcome(dns.port, slow_reply("DATA", 3.0), data_timeout=0.5))
    got = _summary(live)
    assert [(k, c, e, cmd) for k, _, c, e, cmd in got] == [
        ("TransientFailure", 421, "4.4.2", "DATA\r\n")]
    assert "timed out after 0.5s" in live.records[1]["response"]["content"]
    # At the configured timeout: never before it, and long before the reply
    # itself would have come (3 s), with room for a loaded machine.
    assert 0.5 <= took < 2.0


def test_malformed_reply(dns: DnsServer) -> None:
    live, _ = asyncio.run(_outcome(dns.port, malformed_reply("MAIL")))
    got = _summary(live)
    assert [(k, c, e) for k, _, c, e, _ in got] == [("TransientFailure", 421, "4.5.0")]
    assert "not an SMTP reply line" in live.records[1]["response"]["content"]


def test_overlong_reply_line(dns: DnsServer) -> None:
    live, _ = asyncio.run(_outcome(dns.port, overlong_reply("EHLO", 5000)))
    (got,) = _summary(live)
    assert got[:4] == ("TransientFailure", list(RCPTS), 400, None)  # every host failed
    assert "longer than 4096 bytes" in live.records[1]["response"]["content"]


@pytest.mark.parametrize("mode", ["Required", "Opportunistic"])
def test_tls_handshake_failure(dns: DnsServer, mode: str) -> None:
    live, _ = asyncio.run(_outcome(dns.port, tls_handshake_failure(), enable_tls=mode))
    (got,) = _summary(live)
    assert got[:4] == ("TransientFailure", list(RCPTS), 400, None)  # every host failed
    assert "TLS handshake" in live.records[1]["response"]["content"]


def test_parser_keeps_the_replies_before_a_bad_line() -> None:
    """engine.wire: the 220 to STARTTLS must survive garbage in the same read."""
    parser = ReplyParser()
    with pytest.raises(Exception) as info:
        parser.feed(b"220 2.0.0 go ahead\r\nthis is not TLS\r\n")
    assert [r.code for r in info.value.replies] == [220]


@pytest.mark.parametrize(
    ("fault", "zone", "kind", "code", "enh"),
    [
        # a failed resolve is transient, NXDOMAIN too (KumoMTA's
        # crates/kumod/src/queue/queue.rs logs 451 4.4.4 and requeues)
        ("SERVFAIL", None, "TransientFailure", 451, "4.4.4"),
        ("NXDOMAIN", None, "TransientFailure", 451, "4.4.4"),
        (None, {"example.com": {"MX": [(0, ".")]}}, "Bounce", 556, "5.1.10"),
    ],
)
def test_dns_faults(fault: str | None, zone: dict[str, Any] | None, kind: str, code: int,
                    enh: str) -> None:
    async def scenario(port: int) -> list[tuple[Any, ...]]:
        async with Live(path_policy(25), port) as live:
            live.submit(RCPTS)
            await live.wait_for(lambda: len(live.records) == 2, what="an outcome")
            return _summary(live)

    with DnsServer(zone or zone_for()) as server:
        if fault is not None:
            server.faults["example.com"] = fault  # type: ignore[assignment]
        got = asyncio.run(scenario(server.port))
    assert [(k, r, c, e) for k, r, c, e, _ in got] == [(kind, list(RCPTS), code, enh)]
