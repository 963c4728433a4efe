"""engine.live.service: the joined live MTA against real peers on loopback.

A real SQLite spool in tmp_path, the dnslib server, aiosmtpd sinks and
scripted servers, smtplib as the submitting client, an HTTP GET for metrics.
"""

from __future__ import annotations

import asyncio
import pathlib
import smtplib
import sqlite3
import urllib.request
from typing import Any

import pytest

from engine.config import make_egress_path
from engine.errors import JournalError
from engine.live.dns import LiveResolver
from engine.live.journal import iter_events
from engine.live.logfile import read_records
from engine.live.service import Service
from engine.policy import Policy
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message, zone_for
from tests.support.smtp_servers import ScriptedServer, SinkServer, hang_at

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def dns() -> Any:
    with DnsServer(zone_for()) as server:
        yield server


def live_policy(ports: dict[str, int], **keys: Any) -> Policy:
    """Every path delivers to 127.0.0.1:ports["smtp"] (read at each policy call)."""
    p = Policy()

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        return make_egress_path(smtp_port=ports["smtp"], prohibited_hosts=[],
                                enable_tls="Disabled", enable_mta_sts=False, **keys)

    return p


def service(policy: Policy, spool: pathlib.Path, dns: DnsServer, **kw: Any) -> Service:
    kw.setdefault("listen", ("127.0.0.1", 0))
    return Service(policy, spool, resolver=LiveResolver(["127.0.0.1"], port=dns.port,
                                                        timeout=2.0), **kw)


async def until(cond: Any, timeout: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not met after {timeout}s")
        await asyncio.sleep(0.01)


def smtp_send(port: int, rcpts: list[str], content: bytes) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        return client.sendmail("s@sender.test", rcpts, content)


def test_smtp_and_api_submissions_are_delivered_and_logged(dns: DnsServer,
                                                           tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink:
            svc = service(live_policy({"smtp": sink.port}), tmp_path / "spool", dns,
                          log_dir=tmp_path / "logs")
            async with svc:
                body = b"X-Tenant: acme\r\nX-Campaign: spring\r\n" + message(1)
                refused = await asyncio.to_thread(smtp_send, svc.listen_port,
                                                  ["a@example.com"], body)
                assert refused == {}
                ids = await svc.submit("s@sender.test", ["b@example.com"], message(2),
                                       tenant="t2")
                assert len(ids) == 1
                await until(lambda: len(sink.messages) == 2, what="two deliveries")
                await until(lambda: svc.engine.queued_count == 0, what="queue empty")
            assert sorted(m.recipients[0] for m in sink.messages) == ["a@example.com",
                                                                     "b@example.com"]
            assert {m.content for m in sink.messages} == {body, message(2)}
        recs = list(read_records(tmp_path / "logs"))
        kinds = sorted((r["type"], r["queue"]) for r in recs)
        assert kinds == [("Delivery", "spring:acme@example.com"), ("Delivery", "t2@example.com"),
                         ("Reception", "spring:acme@example.com"),
                         ("Reception", "t2@example.com")]
        journal = tmp_path / "spool" / "journal.sqlite"
        with sqlite3.connect(journal) as db:
            assert db.execute("SELECT count(*) FROM bodies").fetchone() == (0,)  # discarded
        kinds = [type(ev).__name__ for _, ev in iter_events(journal)]
        assert kinds[0] == "Restarted"
        assert kinds.count("MessageSubmitted") == 2

    asyncio.run(scenario())


def test_no_open_relay_for_clients_outside_allowed_networks(dns: DnsServer,
                                                            tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        svc = service(live_policy({"smtp": 25}), tmp_path / "spool", dns,
                      allowed_networks=["10.0.0.0/8"])
        async with svc:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
                await asyncio.to_thread(smtp_send, svc.listen_port, ["a@example.com"],
                                        message(1))
            assert info.value.recipients["a@example.com"][0] == 550
            assert svc.engine.queued_count == 0

    asyncio.run(scenario())


def test_in_flight_message_is_retried_after_a_restart(dns: DnsServer,
                                                      tmp_path: pathlib.Path) -> None:
    """The first process dies with the message's body sent and no reply; the
    second delivers it, with no attempt counted for the interruption."""
    spool = tmp_path / "spool"
    ports: dict[str, int] = {}

    async def first() -> None:
        async with ScriptedServer(hang_at("DOT")) as hanging:
            ports["smtp"] = hanging.port
            svc = service(live_policy(ports), spool, dns)
            await svc.start()
            await svc.submit("s@sender.test", ["a@example.com"], message(7))
            await until(lambda: svc.driver.in_flight() == 1, what="in flight")
            await until(lambda: bool(hanging.connections and hanging.connections[0].bodies),
                        what="body sent")
            await svc.stop(grace=0.0)  # cut off: no reply was read
            assert svc.engine.queued_count == 1

    async def second() -> None:
        async with SinkServer() as sink:
            ports["smtp"] = sink.port
            svc = service(live_policy(ports), spool, dns, log_dir=tmp_path / "logs")
            async with svc:
                assert svc.recovered == 1
                await until(lambda: len(sink.messages) == 1, what="redelivery")
                await until(lambda: svc.engine.queued_count == 0, what="finished")
            assert sink.messages[0].content == message(7)
        (rec,) = [r for r in read_records(tmp_path / "logs") if r["type"] == "Delivery"]
        assert rec["num_attempts"] == 0  # the cut-off attempt never counted
        assert rec["recipient"] == "a@example.com"

    asyncio.run(first())
    asyncio.run(second())


def test_snapshots_bound_the_replay(dns: DnsServer, tmp_path: pathlib.Path) -> None:
    spool = tmp_path / "spool"

    async def run_once(n: int) -> tuple[int, int]:
        async with SinkServer() as sink:
            svc = service(live_policy({"smtp": sink.port}), spool, dns, snapshot_every=10)
            async with svc:
                for i in range(n):
                    await svc.submit("s@sender.test", ["a@example.com"], message(i))
                await until(lambda: len(sink.messages) == n, what="deliveries")
                await until(lambda: svc.engine.queued_count == 0, what="finished")
                return svc.replayed, svc.journal.last_seq

    asyncio.run(run_once(6))
    replayed, last_seq = asyncio.run(run_once(1))
    assert last_seq > 40
    assert replayed < 10  # only the events after the latest snapshot
    with sqlite3.connect(spool / "journal.sqlite") as db:
        assert db.execute("SELECT count(*) FROM snapshots").fetchone() == (2,)


def test_metrics_endpoint_serves_the_engine_counters(dns: DnsServer,
                                                     tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink:
            svc = service(live_policy({"smtp": sink.port}), tmp_path / "spool", dns,
                          metrics_port=0)
            async with svc:
                await svc.submit("s@sender.test", ["a@example.com"], message(1))
                await until(lambda: svc.engine.queued_count == 0, what="finished")
                url = f"http://127.0.0.1:{svc.metrics.port}/metrics"
                text = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url, timeout=5).read().decode())
            # kumod's shape (crates/kumod/src/metrics_helper.rs): a counter by service
            assert '\ntotal_messages_delivered{service="smtp_client"} 1\n' in text

    asyncio.run(scenario())


def test_a_journal_of_another_layout_is_refused_with_its_path(dns: DnsServer,
                                                              tmp_path: pathlib.Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    with sqlite3.connect(spool / "journal.sqlite") as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('codec_version', '0')")

    async def scenario() -> None:
        svc = service(live_policy({"smtp": 25}), spool, dns)
        with pytest.raises(JournalError, match="codec_version"):
            await svc.start()

    asyncio.run(scenario())


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="snapshot_every must be an integer >= 1, not 0"):
        Service(Policy(), "spool", snapshot_every=0)
    with pytest.raises(ValueError, match="grace must be a number of seconds >= 0, not -1"):
        Service(Policy(), "spool", grace=-1)


def test_snapshot_interval_grows_with_the_queue(dns: DnsServer, tmp_path: pathlib.Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A snapshot costs in proportion to the queue; with 50 messages held on a
    # suspended path, snapshot_every=10 must not snapshot every 10 events but
    # only once the events since the last one are at least in proportion to
    # the queue.  The bound below is computed from the journal, not from the
    # service's own constant: whatever the factor (>= 1), the gap before a
    # snapshot is at least the number of messages queued when it is written.
    from engine.live.journal import Journal

    written: list[int] = []
    original = Journal.write_snapshot

    def counting(self: Journal, seq: int, data: bytes) -> Any:
        written.append(seq)
        return original(self, seq, data)

    monkeypatch.setattr(Journal, "write_snapshot", counting)

    async def scenario() -> int:
        svc = service(live_policy({"smtp": 9}, suspended=True), tmp_path / "spool", dns,
                      snapshot_every=10)
        async with svc:
            for i in range(50):
                await svc.submit("s@sender.test", ["a@example.com"], message(i))
            await until(lambda: svc.engine.queued_count == 50, what="queued")
            return svc.journal.last_seq

    last_seq = asyncio.run(scenario())
    events = list(iter_events(tmp_path / "spool" / "journal.sqlite"))
    assert [type(ev).__name__ for s, ev in events if s > last_seq] == ["Drain"]  # the stop's
    submitted_by = {seq: sum(type(ev).__name__ == "MessageSubmitted" for s, ev in events
                             if s <= seq) for seq in written}
    assert last_seq // 10 >= 5  # a fixed interval of 10 would have written 5 or more
    assert len(written) < last_seq // 10
    previous = 0
    for seq in written:
        assert seq - previous >= max(10, submitted_by[seq]), (previous, seq, submitted_by)
        previous = seq
