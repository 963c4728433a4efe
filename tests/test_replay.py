"""bridge.replay and `egress replay`: a real live journal, recomputed and re-simulated.

The journal is written by a real `Service` delivering to an aiosmtpd sink on
loopback (through the dnslib server), then read back three ways.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import pytest

from bridge.replay import (
    ReplayError,
    compare,
    read_traffic,
    simulated_outcome,
    traffic_tables,
)
from engine.cli import main
from engine.events import MessageSubmitted
from engine.live.dns import LiveResolver
from engine.live.service import Service
from engine.policy import Policy
from tests.support.dns_server import DnsServer
from tests.support.live_harness import LOOPBACK_POLICY_FILE, message
from tests.support.smtp_servers import SinkServer
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)

ORIGINAL = LOOPBACK_POLICY_FILE
OTHER = """
from engine import Policy, make_egress_path
policy = Policy()

@policy.on("get_egress_path_config")
def path(domain, source_name, site_name):
    return make_egress_path(connection_limit=1, enable_mta_sts=False)
"""
WORLD = """
[domains."example.com"]
mx = [{ host = "mx.example.com", preference = 10 }]

[hosts."mx.example.com"]
permfail_rcpt = 1.0
"""
ZONE = {
    "example.com": {"MX": [(10, "mx1.example.com")]},
    "example.net": {"MX": [(10, "mx1.example.com")]},
    "mx1.example.com": {"A": ["127.0.0.1"]},
}


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A spool with 12 messages to example.com and 8 to example.net, all delivered."""
    tmp = tmp_path_factory.mktemp("replay")
    spool = tmp / "spool"

    async def deliver(dns: DnsServer) -> None:
        async with SinkServer() as sink:
            original = tmp / "original.py"
            original.write_text(ORIGINAL.format(port=sink.port))
            spool.mkdir()
            (spool / "policy.py").write_text(original.read_text())
            svc = Service(Policy.from_file(original), spool, listen=None,
                          resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0))
            async with svc:
                for i in range(20):
                    domain = "example.com" if i < 12 else "example.net"
                    await svc.submit("s@sender.test", [f"r{i}@{domain}"], message(i),
                                     tenant="acme")
                    await asyncio.sleep(0.005)
                await until(lambda: len(sink.messages) >= 20 and not svc.engine.queued_count,
                            timeout=60.0, what="20 delivered")

    with DnsServer(ZONE) as dns:
        asyncio.run(deliver(dns))
    (tmp / "other.py").write_text(OTHER)
    (tmp / "world.toml").write_text(WORLD)
    return spool


def test_read_traffic_gives_every_arrival_in_order(spool: pathlib.Path) -> None:
    arrivals = read_traffic(spool)
    assert [m.recipients[0] for m in arrivals] == [
        f"r{i}@{'example.com' if i < 12 else 'example.net'}" for i in range(20)]
    assert all(m.tenant == "acme" for m in arrivals)
    assert [m.size for m in arrivals] == [len(message(i)) for i in range(20)]
    assert arrivals == sorted(arrivals, key=lambda m: m.at)


def test_traffic_tables_bin_arrivals_into_bulk_streams() -> None:
    def sub(i: int, at: float, domain: str, size: int) -> MessageSubmitted:
        return MessageSubmitted(at=at, id=f"m{i}", sender="s@x.test",
                                recipients=(f"r@{domain}",), size=size)

    t0, tables = traffic_tables([sub(1, 100.0, "a.test", 10), sub(2, 100.0002, "a.test", 20),
                                 sub(3, 100.5, "b.test", 7), sub(4, 101.0, "a.test", 5)])
    assert t0 == 100.0
    common = {"tenant": "", "campaign": "", "sender": "s@x.test", "recipients": 1}
    assert tables == [
        {"domain": "a.test", "messages": 2, "at": 0.0, "size": 15, **common},
        {"domain": "b.test", "messages": 1, "at": 0.5, "size": 7, **common},
        {"domain": "a.test", "messages": 1, "at": 1.0, "size": 5, **common},
    ]


def test_replay_command_prints_both_outcomes(spool: pathlib.Path, capsys: Any) -> None:
    out = spool.parent / "out"
    assert main(["replay", str(spool), "--policy", str(spool.parent / "other.py"),
                 "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    actual, simulated = data["actual"], data["simulated"]
    assert (actual["submitted"], actual["delivered"], actual["bounced"],
            actual["still_queued"]) == (20, 20, 0, 0)
    assert actual["records"] == {"Delivery": 20, "Reception": 20}
    assert 0.0 < actual["drain_time"] < 10.0
    assert (simulated["submitted"], simulated["delivered"], simulated["bounced"],
            simulated["still_queued"]) == (20, 20, 0, 0)
    assert simulated["drain_time"] > 0.0
    assert data["original_policy"] == str(spool / "policy.py")
    assert data["shaping"] == {"files": [], "from": "spool"}  # the spool keeps none
    assert json.loads((out / "comparison.json").read_text())["actual"] == actual
    assert len((out / "actual_records.jsonl").read_text().splitlines()) == 40
    assert (out / "simulated" / "summary.json").is_file()


def test_replay_table_output(spool: pathlib.Path, capsys: Any) -> None:
    assert main(["replay", str(spool), "--policy", str(spool.parent / "other.py")]) == 0
    text = capsys.readouterr().out
    assert f"replayed with {spool / 'policy.py'}\n" in text
    assert f"the same arrivals with {spool.parent / 'other.py'} (world: default)\n" in text
    assert "shaping (both, from the spool): none\n" in text
    (drain,) = [line for line in text.splitlines() if " drain time " in line]
    assert all(cell.strip().endswith(("s", "ms")) for cell in drain.strip("│ ").split("│")[1:])
    (row,) = [line for line in text.splitlines() if " delivered " in line]
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["delivered", "20", "20"]


def test_world_file_changes_the_simulated_outcome(spool: pathlib.Path) -> None:
    out = compare(spool, spool.parent / "other.py", world=spool.parent / "world.toml")
    assert out["actual"]["delivered"] == 20
    assert (out["simulated"]["delivered"], out["simulated"]["bounced"]) == (8, 12)


def test_a_journal_refuses_to_replay_under_another_policy(spool: pathlib.Path) -> None:
    with pytest.raises(ReplayError, match="does not replay under this policy"):
        compare(spool, spool.parent / "other.py", original=spool.parent / "other.py")


def test_missing_spool_and_policy_are_named(tmp_path: pathlib.Path, capsys: Any) -> None:
    assert main(["replay", str(tmp_path / "nope"), "--policy", "x.py"]) == 1
    assert "no journal at" in capsys.readouterr().err
    (tmp_path / "journal.sqlite").write_bytes(b"")
    with pytest.raises(ReplayError, match="no original policy at"):
        compare(tmp_path, "x.py")


# a warm-up that has not begun: the source may take no message at all
NOT_YET = """
[warmup."unspecified"]
start = 2099-01-01
daily = { 1 = 100 }
"""


def test_shaping_files_reach_the_simulated_side(spool: pathlib.Path) -> None:
    shaping = spool.parent / "not-yet.toml"
    shaping.write_text(NOT_YET)
    arrivals = read_traffic(spool)
    plain, _ = simulated_outcome(arrivals, spool.parent / "other.py")
    held, _ = simulated_outcome(arrivals, spool.parent / "other.py", shaping_files=[shaping])
    assert (plain["delivered"], held["delivered"]) == (20, 0)


def test_a_shaping_file_that_cannot_be_read_is_one_line(spool: pathlib.Path,
                                                         capsys: Any) -> None:
    missing = spool.parent / "missing.toml"
    assert main(["replay", str(spool), "--policy", str(spool.parent / "other.py"),
                 "--shaping", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"egress replay: error: --shaping {missing}: cannot read: No such file or " \
        "directory\n"
