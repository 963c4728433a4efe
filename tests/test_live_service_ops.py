"""The running `Service`'s operator outputs: rotated JSON-lines logs and Prometheus metrics.

Real peers on loopback: the dnslib server, an aiosmtpd sink that refuses one
recipient (so there is a Bounce beside the Deliveries), the service's own
log directory with a small ``log_max_bytes`` so rotation happens while it
delivers, and an HTTP scrape of its metrics endpoint parsed with
prometheus-client's own text parser and compared with the engine's counters.
"""

from __future__ import annotations

import asyncio
import collections
import pathlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from engine.live.dns import LiveResolver
from engine.live.logfile import read_records
from engine.live.metrics import parse_counter_key
from engine.live.service import Service
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message, path_policy, zone_for
from tests.support.smtp_servers import SinkServer

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")]

MAX_BYTES = 1500
GOOD = 8
PATH = "unspecified->mx1.example.com@smtp_client"


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(zone_for()) as server:
        yield server


async def until(cond: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"{what} not met after {timeout}s"
        await asyncio.sleep(0.01)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    # read the lines as Prometheus does: prometheus-client's parser would rename
    # a counter's samples to *_total, which kumod's (and so egress's) are not
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            name, labels = parse_counter_key(key)
            out[(name, frozenset(labels.items()))] = float(value)
    return out


def test_logs_rotate_and_metrics_match_the_engine(dns: DnsServer, tmp_path: pathlib.Path) -> None:
    logs = tmp_path / "logs"

    async def scenario() -> None:
        async with SinkServer(reject_recipients={"bad@example.com": "550 5.1.1 no such user"}
                              ) as sink:
            svc = Service(path_policy(sink.port), tmp_path / "spool", listen=None,
                          resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0),
                          log_dir=logs, log_max_bytes=MAX_BYTES, metrics_port=0)
            async with svc:
                assert svc.engine is not None
                for i in range(GOOD):
                    await svc.submit("s@sender.test", ["a@example.com"], message(i))
                await svc.submit("s@sender.test", ["bad@example.com"], message(99))
                await until(lambda: svc.engine.queued_count == 0, "every message finished")
                # rotation happened while running, not at close
                assert len(list(logs.glob("*.jsonl"))) > 1
                before = dict(svc.engine.counters)
                scraped = await asyncio.to_thread(scrape, svc.metrics.port)
                assert dict(svc.engine.counters) == before  # nothing moved meanwhile
            assert len(sink.messages) == GOOD

        # kumod's names and labels (crates/kumod/src/metrics_helper.rs)
        service = frozenset({("service", f"smtp_client:{PATH}")})
        client = frozenset({("service", "smtp_client")})
        for key, value in before.items():
            name, labels = parse_counter_key(key)
            if not labels and name.startswith(("total_messages_d", "total_messages_f",
                                               "total_messages_t", "ready", "connection")):
                assert scraped[(name, client)] == value
        assert scraped[("total_messages_delivered", client)] == GOOD
        assert scraped[("total_messages_delivered", service)] == GOOD
        assert scraped[("total_messages_fail", service)] == 1
        assert scraped[("total_messages_received",
                        frozenset({("service", "esmtp_listener")}))] == GOOD + 1
        assert scraped[("ready_count", client)] == 0
        assert scraped[("scheduled_count_total", frozenset())] == 0

    asyncio.run(scenario())

    segments = sorted(logs.glob("*.jsonl"))
    assert len(segments) >= 4  # 2 * 9 records of ~400 bytes, 1500 bytes a segment
    for seg in segments:
        lines = seg.read_bytes().splitlines(keepends=True)
        assert lines, seg.name
        assert len(lines) == 1 or seg.stat().st_size <= MAX_BYTES, (seg.name, seg.stat())
    records = list(read_records(logs))
    kinds = collections.Counter(r["type"] for r in records)
    assert kinds == {"Reception": GOOD + 1, "Delivery": GOOD, "Bounce": 1}
    # the segments, in name order, hold the records in the order they were written
    stamps = [r["timestamp"] for r in records]
    assert stamps == sorted(stamps)
    (bounce,) = [r for r in records if r["type"] == "Bounce"]
    assert (bounce["recipient"], bounce["response"]["code"]) == ("bad@example.com", 550)
