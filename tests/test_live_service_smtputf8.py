"""SMTPUTF8 end to end on loopback: a UTF-8 recipient submitted to the
listener with SMTPUTF8 is delivered to an aiosmtpd sink that offers it (MAIL
carries SMTPUTF8), and bounces with a record when the sink does not."""

from __future__ import annotations

import asyncio
import pathlib
import smtplib
from typing import Any

import pytest

from engine.live.logfile import read_records
from tests.support.dns_server import DnsServer
from tests.support.live_harness import zone_for
from tests.support.smtp_servers import SinkServer
from tests.test_live_service import live_policy, service, until

pytestmark = pytest.mark.timeout(30)

RCPT = "jörg@example.com"
BODY = "From: s@sender.test\r\nSubject: grüße\r\n\r\nhallo\r\n".encode()


@pytest.fixture
def dns() -> Any:
    with DnsServer(zone_for()) as server:
        yield server


def utf8_send(port: int) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        return client.sendmail("s@sender.test", [RCPT], BODY,
                               mail_options=["SMTPUTF8", "BODY=8BITMIME"])


def run(dns: DnsServer, tmp_path: pathlib.Path, offered: bool) -> tuple[list[Any], Any]:
    async def scenario() -> list[Any]:
        async with SinkServer(smtputf8=offered) as sink:
            svc = service(live_policy({"smtp": sink.port}), tmp_path / "spool", dns,
                          log_dir=tmp_path / "logs")
            async with svc:
                assert await asyncio.to_thread(utf8_send, svc.listen_port) == {}
                await until(lambda: svc.engine.queued_count == 0, what="queue empty")
            return list(sink.messages)

    got = asyncio.run(scenario())
    return got, [r for r in read_records(tmp_path / "logs") if r["type"] != "Reception"]


def test_utf8_recipient_delivered_with_smtputf8(dns: DnsServer, tmp_path: pathlib.Path) -> None:
    got, recs = run(dns, tmp_path, offered=True)
    assert [(m.recipients, m.content) for m in got] == [((RCPT,), BODY)]
    assert "SMTPUTF8" in got[0].mail_options
    assert [(r["type"], r["recipient"]) for r in recs] == [("Delivery", RCPT)]


def test_utf8_recipient_bounces_when_smtputf8_not_offered(dns: DnsServer,
                                                         tmp_path: pathlib.Path) -> None:
    got, recs = run(dns, tmp_path, offered=False)
    assert got == []
    assert [(r["type"], r["recipient"]) for r in recs] == [("Bounce", RCPT)]
    assert recs[0]["response"]["code"] == 554
    assert recs[0]["response"]["enhanced_code"] == {"class": 5, "subject": 6, "detail": 7}
