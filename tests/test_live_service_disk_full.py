"""engine.live.service: a journal that cannot write (a full disk) on a real service.

The journal's SQLite file is capped (`Journal.cap_pages`, SQLite's
max_page_count: a commit that would grow the file fails with "database or
disk is full", as on a full disk).  A submission then gets 451 4.3.0 and is
never delivered; once there is room again the next submission is accepted
and delivered by the same process; the failure episode is one log line.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import smtplib
from typing import Any

import pytest

from engine.live.journal import iter_events
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message
from tests.support.smtp_servers import SinkServer
from tests.test_live_service import live_policy, service, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dns() -> Any:
    from tests.support.live_harness import zone_for

    with DnsServer(zone_for()) as server:
        yield server


def send(port: int, rcpt: str, content: bytes) -> tuple[int, bytes]:
    """One message over SMTP; the reply to its final dot."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("c.test")
        client.mail("s@sender.test")
        client.rcpt(rcpt)
        return client.data(content)


def test_a_full_disk_answers_451_delivers_nothing_and_recovers(
        dns: DnsServer, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n" * 1
    big = big + (b"y" * 998 + b"\r\n") * 300  # 300 KB: cannot fit under the cap

    async def scenario() -> None:
        async with SinkServer() as sink:
            svc = service(live_policy({"smtp": sink.port}), tmp_path / "spool", dns)
            async with svc:
                port = svc.listen_port
                assert port is not None and svc.journal is not None
                code, _ = await asyncio.to_thread(send, port, "a@example.com", message(1))
                assert code == 250
                await until(lambda: len(sink.messages) == 1, what="first delivery")

                svc.journal.cap_pages(1)  # no room to grow: a full disk
                with caplog.at_level(logging.WARNING):
                    for rcpt in ("b@example.com", "c@example.com"):
                        code, text = await asyncio.to_thread(send, port, rcpt, big)
                        assert (code, text[:5]) == (451, b"4.3.0")
                    await asyncio.sleep(0.5)  # were it queued, it would be delivered by now
                    assert len(sink.messages) == 1
                    assert svc.engine is not None and svc.engine.queued_count == 0
                    assert svc.journal.inbox() == []

                    svc.journal.cap_pages(1 << 30)  # room again, same process
                    code, _ = await asyncio.to_thread(send, port, "d@example.com", big)
                    assert code == 250
                    await until(lambda: len(sink.messages) == 2, what="delivery after")
            delivered = sorted(m.recipients[0] for m in sink.messages)
            assert delivered == ["a@example.com", "d@example.com"]

    asyncio.run(scenario())
    failed = [r for r in caplog.records if "commit failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in failed]
    assert failed[0].exc_info is None
    recovered = [r for r in caplog.records if "commits succeed again" in r.getMessage()]
    assert len(recovered) == 1
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("egress"))
    submitted = [ev.recipients for _, ev in iter_events(tmp_path / "spool" / "journal.sqlite")
                 if type(ev).__name__ == "MessageSubmitted"]
    assert submitted == [("a@example.com",), ("d@example.com",)]


def test_an_accepted_submission_whose_event_was_never_written_is_delivered_after_restart(
        dns: DnsServer, tmp_path: pathlib.Path) -> None:
    """A crash between the inbox commit (the 250) and its event's commit loses nothing."""
    from engine.events import MessageSubmitted
    from engine.live.journal import Journal

    spool = tmp_path / "spool"

    async def crash_after_accept() -> None:
        journal = Journal.in_spool(spool)
        ev = MessageSubmitted(at=1.0, id="m-inbox", sender="s@sender.test",
                              recipients=("a@example.com",), size=len(message(5)))
        await journal.accept(ev, message(5))
        journal.close()  # nothing else written: as if killed right after the 250

    async def restart() -> None:
        async with SinkServer() as sink:
            async with service(live_policy({"smtp": sink.port}), spool, dns) as svc:
                await until(lambda: len(sink.messages) == 1, what="delivery after restart")
                assert svc.journal is not None
                await until(lambda: svc.journal.inbox() == [], what="inbox emptied")
            assert sink.messages[0].content == message(5)

    asyncio.run(crash_after_accept())
    asyncio.run(restart())
