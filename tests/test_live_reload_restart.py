"""A reload, then a crash: the journal still folds under the policy now in force.

A restart (and `egress check --spool`) folds the spool's journal from its
latest snapshot under the operator's policy file, which a reload has changed.
The events before the reload were decided under the old policy: folded under
the new one they need not replay (the old policy's connection_limit 4 opened
connections the new one's 1 never opens, and the journal has their replies).
So a reload writes a snapshot with the batch that journals it.

Real parts: the service on loopback, an aiosmtpd sink slow at the dot (so
several connections overlap), the DNS server on loopback, the SQLite journal.
The fold is checked while the service runs, before any periodic snapshot (or a
clean stop's) could hide the gap.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator

import pytest

from engine.live.dns import LiveResolver
from engine.live.journal_read import engine_from_spool, read_journal
from engine.live.service import Service
from engine.policy import Policy
from tests.support.dns_server import DnsServer
from tests.support.live_harness import LOOPBACK_POLICY_FILE, zone_for
from tests.test_http_api import api, until
from tests.test_shaping_live import SlowSink, _burst

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")]


def _policy(limit: int) -> str:
    return LOOPBACK_POLICY_FILE.replace(
        'enable_mta_sts=False)', f'enable_mta_sts=False, connection_limit={limit}, '
                                 'idle_timeout="1s")')


def _snapshot(spool: pathlib.Path) -> int | None:
    """The seq of the journal's latest snapshot, None if it has none."""
    snap, events = read_journal(spool / "journal.sqlite")
    for _ in events:  # read to the end: the read transaction closes
        pass
    return None if snap is None else snap[0]


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(zone_for()) as server:
        yield server


def test_a_journal_folds_under_the_reloaded_policy(dns: DnsServer,
                                                   tmp_path: pathlib.Path) -> None:
    policy_file, spool = tmp_path / "policy.py", tmp_path / "spool"

    async def scenario() -> None:
        async with SlowSink() as sink:
            policy_file.write_text(_policy(4).format(port=sink.port))
            svc = Service(Policy.from_file(str(policy_file)), spool, listen=None,
                          http_listen=[("127.0.0.1", 0)],
                          resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0),
                          policy_path=policy_file, log_dir=tmp_path / "logs")
            async with svc:
                # under the old policy: several connections at once
                assert await _burst(svc, sink, 0, 40) > 1
                assert _snapshot(spool) is None  # none yet: the fold starts from scratch
                policy_file.write_text(_policy(1).format(port=sink.port))
                assert (await api(svc, "POST", "/api/admin/reload/v1", {}))["reloaded"] is True
                await _burst(svc, sink, 100, 10)  # and some events after the reload
                eng = svc.engine
                assert eng is not None
                await until(lambda: eng.queued_count == 0, "every message finished")
                # What a crash now would restart from, under the policy now in
                # force.  Without the reload's snapshot this raises JournalError;
                # with it, it folds to the running state once the journal has
                # committed the last events (journaled without waiting).
                new_policy = Policy.from_file(str(policy_file))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while True:
                    folded = await asyncio.to_thread(engine_from_spool, spool, new_policy)
                    if folded.queued_count == 0 and folded.counters == eng.counters:
                        break
                    assert loop.time() < deadline, (folded.queued_count, folded.counters)
                    await asyncio.sleep(0.05)
                assert _snapshot(spool) is not None  # the reload's

    asyncio.run(scenario())
