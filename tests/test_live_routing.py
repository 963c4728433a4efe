"""Smart hosts and domain literals in live delivery, on loopback: a real
`Service` (SQLite spool, log files), a dnslib server, an aiosmtpd sink.

KumoMTA: crates/kumod/src/smtp_dispatcher.rs (``MxListEntry::resolve_into``:
an mx_list name is looked up for A/AAAA only, a literal is used as is) and
crates/mailexchanger/src/lib.rs (``resolve_impl``: a domain literal is its
address, no DNS).
"""

from __future__ import annotations

import asyncio
import pathlib
import smtplib
from typing import Any

import pytest

from engine.live.dns import LiveResolver
from engine.live.logfile import read_records
from engine.live.service import Service
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message, path_policy
from tests.support.smtp_servers import SinkServer

pytestmark = pytest.mark.timeout(30)


def smart(*hosts: Any) -> dict[str, Any]:
    return {"protocol": {"smtp": {"mx_list": list(hosts)}}, "retry_interval": "1h"}


async def until(cond: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not met after {timeout}s")
        await asyncio.sleep(0.01)


def send(port: int, rcpt: str) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        return client.sendmail("s@sender.test", [rcpt], message(1, rcpt))


async def deliver(tmp: pathlib.Path, dns: DnsServer, rcpt: str,
                  queue: dict[str, Any] | None, want: str) -> list[dict[str, Any]]:
    """Submit one message to `rcpt` through a Service whose paths deliver to
    the sink's port; the records once one of type `want` is written."""
    async with SinkServer() as sink:
        svc = Service(path_policy(sink.port, queue=queue), tmp / "spool",
                      listen=("127.0.0.1", 0), log_dir=tmp / "logs",
                      resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0))
        async with svc:
            assert await asyncio.to_thread(send, svc.listen_port, rcpt) == {}
            await until(lambda: any(r["type"] == want for r in read_records(tmp / "logs")),
                        what=f"a {want} record")
        got = [list(m.recipients) for m in sink.messages]
    if want == "Delivery":
        assert got == [[rcpt]]
    return [r for r in read_records(tmp / "logs") if r["type"] == want]


def test_a_named_smart_host_is_looked_up_for_a_only(tmp_path: pathlib.Path) -> None:
    # no MX for the recipient's domain at all: only relay.test's A answers
    with DnsServer({"relay.test": {"A": ["127.0.0.1"]}}) as dns:
        [rec] = asyncio.run(deliver(tmp_path, dns, "a@nowhere.test", smart("relay.test"),
                                    "Delivery"))
        asked = {(q.name, q.rtype) for q in dns.queries}
    assert rec["site"] == "unspecified->mx_list:relay.test@smtp_client"
    assert rec["peer_address"] == {"name": "relay.test", "addr": "127.0.0.1"}
    assert asked == {("relay.test", "A"), ("relay.test", "AAAA")}


def test_an_address_literal_smart_host_needs_no_dns(tmp_path: pathlib.Path) -> None:
    with DnsServer({}) as dns:
        [rec] = asyncio.run(deliver(tmp_path, dns, "someone@localhost",
                                    smart("[127.0.0.1]"), "Delivery"))
    assert rec["site"] == "unspecified->mx_list:[127.0.0.1]@smtp_client"
    assert rec["peer_address"] == {"name": "[127.0.0.1]", "addr": "127.0.0.1"}


def test_a_domain_literal_recipient_is_delivered_to_its_address(tmp_path: pathlib.Path) -> None:
    with DnsServer({}) as dns:
        [rec] = asyncio.run(deliver(tmp_path, dns, "x@[127.0.0.1]", None, "Delivery"))
    assert rec["site"] == "unspecified->127.0.0.1@smtp_client"
    assert rec["peer_address"] == {"name": "127.0.0.1", "addr": "127.0.0.1"}


def test_a_smart_host_without_an_address_is_a_transient_failure(
        tmp_path: pathlib.Path) -> None:
    with DnsServer({}) as dns:
        [rec] = asyncio.run(deliver(tmp_path, dns, "a@nowhere.test", smart("gone.test"),
                                    "TransientFailure"))
    assert (rec["response"]["code"], rec["response"]["enhanced_code"]) == (
        451, {"class": 4, "subject": 4, "detail": 4})
    assert "gone.test" in rec["response"]["content"]
