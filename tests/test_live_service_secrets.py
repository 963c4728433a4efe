"""engine.live.service: an inline AUTH password never rests on disk.

A real `Service` delivers with AUTH PLAIN to a real SMTP server on loopback,
the password given inline (``{"key_data": ...}``) in the policy, snapshots
taken after every event.  No byte of the spool holds the password; after a
restart from those snapshots the next delivery authenticates again (the
secret came back from the policy, not from disk).
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from engine.config import make_egress_path
from engine.live.dns import LiveResolver
from engine.live.service import Service
from engine.policy import Policy
from tests.support.dns_server import DnsServer
from tests.support.live_harness import message, zone_for
from tests.support.smtp_servers import SinkServer

pytestmark = pytest.mark.timeout(60)

SECRET = "inline-S3cret-4417"


def auth_policy(port: int) -> Policy:
    p = Policy()

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        return make_egress_path(smtp_port=port, prohibited_hosts=[], enable_tls="Disabled",
                                enable_mta_sts=False, smtp_auth_plain_username="egress",
                                smtp_auth_plain_password={"key_data": SECRET},
                                allow_smtp_auth_plain_without_tls=True)

    return p


async def until(cond: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_an_inline_password_is_never_written_to_the_spool(tmp_path: pathlib.Path) -> None:
    spool = tmp_path / "spool"

    async def scenario() -> None:
        with DnsServer(zone_for()) as dns:
            async with SinkServer(auth=("egress", SECRET), auth_require_tls=False) as sink:
                for n in (1, 2):  # the second run restores the first one's snapshot
                    svc = Service(auth_policy(sink.port), spool, listen=("127.0.0.1", 0),
                                  snapshot_every=1,
                                  resolver=LiveResolver(["127.0.0.1"], port=dns.port))
                    async with svc:
                        await svc.submit("s@sender.test", ["a@example.com"], message(n))
                        await until(lambda n=n: len(sink.messages) == n)  # type: ignore[misc]
                        eng = svc.engine
                        assert eng is not None
                        await until(lambda eng=eng: eng.queued_count == 0)  # type: ignore[misc]
                        if n == 1:  # a path with its config, in the last snapshot
                            assert eng.paths and svc.journal is not None
                            svc.journal.write_snapshot(svc.journal.last_seq, eng.snapshot())
                assert sink.auth_attempts == [("egress", True), ("egress", True)]

    asyncio.run(scenario())
    files = [f for f in spool.rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert SECRET.encode() not in f.read_bytes(), f
