"""bench.peers: the pieces that need no Postfix (CI has none), against real peers.

The DNS server is asked by the live resolver over UDP on 127.0.0.1; the
aiosmtplib sender delivers into a real aiosmtpd server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from bench import peers
from engine.events import DnsFailure, MxRecord, Resolved, ResolveFailed
from engine.live.dns import LiveResolver


def test_message_is_the_size_asked_in_short_crlf_lines() -> None:
    for size in (2000, 500, 4096):
        data = peers.message(size, index=7)
        assert len(data) == size
        assert data.endswith(b"\r\n")
        assert b"Message-ID: <7@source.test>" in data
        assert max(len(line) for line in data.split(b"\r\n")) <= 78


def test_smtp_source_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "tool", lambda name: f"/usr/sbin/{name}")
    assert peers.smtp_source_command("127.0.0.2", 2525, sessions=32, messages=20000) == [
        "/usr/sbin/smtp-source", "-d", "-s", "32", "-m", "20000", "-l", "2000",
        "-f", "bench@source.test", "-t", "user@sink.test", "127.0.0.2:2525"]
    assert peers.smtp_source_command("127.0.0.3", 25, sessions=4, messages=10, size=100,
                                     recipients=10, reuse=False, to="a@b.test") == [
        "/usr/sbin/smtp-source", "-s", "4", "-m", "10", "-l", "100", "-f",
        "bench@source.test", "-t", "a@b.test", "-r", "10", "127.0.0.3:25"]


def test_only_loopback_addresses() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1' is not in 127\.0\.0\.0/8 or ::1"):
        peers.SmtpSink("10.0.0.1", port=25)
    with pytest.raises(ValueError, match=r"'192\.0\.2\.1' is not in 127"):
        peers.DnsServer({"sink.test": "192.0.2.1"})
    with pytest.raises(ValueError, match="loopback only"):
        peers.smtp_source_command("8.8.8.8", 25, sessions=1, messages=1)


def test_missing_tool_names_the_fix() -> None:
    with pytest.raises(peers.PeerUnavailable,
                       match=r"no-such-tool-xyz is not installed .*scripts/bench-setup\.sh"):
        peers.tool("no-such-tool-xyz")


def test_wait_listening_times_out_naming_the_address() -> None:
    port = peers.free_port()
    with pytest.raises(TimeoutError, match=rf"nothing listening on 127\.0\.0\.1:{port}"):
        peers.wait_listening("127.0.0.1", port, 0.2)


def test_dns_server_answers_mx_then_a() -> None:
    async def ask(port: int) -> tuple[Any, Any]:
        resolver = LiveResolver(["127.0.0.1"], port=port, timeout=2.0)
        return (await resolver.resolve_mx("Sink.Test", 1.0),
                await resolver.resolve_mx("other.test", 2.0))

    with peers.DnsServer({"sink.test": "127.0.0.9"}) as dns:
        found, missing = asyncio.run(ask(dns.port))
    assert isinstance(found, Resolved)
    assert found.domain == "sink.test"
    assert found.mx == (MxRecord(preference=10, host="mx.sink.test", addresses=("127.0.0.9",)),)
    assert found.implicit is False
    assert isinstance(missing, ResolveFailed)
    assert missing.kind is DnsFailure.NXDOMAIN


class _Counter:
    def __init__(self) -> None:
        self.envelopes: list[tuple[tuple[str, int], str, list[str], int]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((session.peer, envelope.mail_from, list(envelope.rcpt_tos),
                               len(envelope.content)))
        return "250 OK"


def test_aiosmtplib_sender_delivers_every_message_and_reconnects() -> None:
    counter = _Counter()
    ctl = Controller(counter, hostname="127.0.0.1", port=peers.free_port())
    ctl.start()
    try:
        sent = asyncio.run(peers.aiosmtplib_send(
            "127.0.0.1", ctl.port, messages=7, connections=3, size=600, recipients=2,
            per_connection=2, domain="sink.test"))
    finally:
        ctl.stop()
    assert sent == 7
    assert len(counter.envelopes) == 7
    assert {e[1] for e in counter.envelopes} == {"bench@source.test"}
    assert all(e[2] == ["user0@sink.test", "user1@sink.test"] for e in counter.envelopes)
    per_conn: dict[tuple[str, int], int] = {}
    for peer, *_ in counter.envelopes:
        per_conn[peer] = per_conn.get(peer, 0) + 1
    assert max(per_conn.values()) == 2  # reconnects after per_connection messages
    assert len(per_conn) >= 4
