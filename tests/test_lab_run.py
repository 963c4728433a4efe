"""lab.run, lab.compare and the ``egress lab`` / ``egress compare`` commands.

The live engine delivering a small scenario into a lab on loopback (fail-over
when the first MX refuses, resets or never answers; the lab in a child
process), ``egress lab --run`` writing what ``egress simulate`` writes and
``egress compare`` reading both, and the errors compare names.  The lab's
servers and DNS on their own are tested in tests/test_lab.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from lab.compare import CompareError, compare_dirs
from lab.world import Lab
from sim.scenario import Scenario
from tests.support.lab_kit import with_lab

pytestmark = pytest.mark.timeout(60)


def test_compare_names_a_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "summary.json").write_text(json.dumps({}))
    with pytest.raises(CompareError, match=r"sim: missing series\.npz"):
        compare_dirs(tmp_path / "sim", tmp_path / "lab")
    with pytest.raises(CompareError, match="lab: not a directory"):
        compare_dirs(tmp_path / "lab", tmp_path / "lab")


def test_egress_lab_serves_for_a_duration_and_reports_counters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from engine.cli import main

    root = Path(__file__).resolve().parent.parent
    assert main(["lab", str(root / "scenarios" / "lab_small.toml"), "--duration", "0.3s"]) == 0
    out = capsys.readouterr().out
    assert "mx1.flaky.test" in out and "127.0.0.1" in out and "lab servers" in out
    assert main(["lab", str(root / "scenarios" / "lab_small.toml"), "--duration=soon"]) == 1
    assert "--duration" in capsys.readouterr().err


# -- end to end: the live engine delivering into a lab ------------------------------

TINY = """
name = "tiny"
seed = 3
horizon = "30s"
sample_interval = "0.25s"

[[traffic]]
domain = "two.test"
messages = 30
size = "2KB"

[domains."two.test"]
mx = [{ host = "mx1.two.test", preference = 10 }, { host = "mx2.two.test", preference = 20 }]

[host_defaults]
connect_latency = "2ms"
command_latency = "2ms"
data_latency = "5ms"
tls_latency = "2ms"

[hosts."mx1.two.test"]
outages = [{ start = "0s", end = "1h", mode = "refuse" }]

[hosts."mx2.two.test"]

[egress_path]
connection_limit = 2

[queue]
retry_interval = "1s"
"""


@pytest.mark.parametrize(("mx1", "seen_by_mx1"), [
    ('outages = [{ start = "0s", end = "1h", mode = "refuse" }]', "connections"),
    ("refuse_connections = 1.0", "refused"),
    ('outages = [{ start = "0s", end = "1h", mode = "blackhole" }]', "blackholed"),
])
def test_live_engine_fails_over_when_the_first_mx_fails(
    tmp_path: Path, mx1: str, seen_by_mx1: str
) -> None:
    from lab.run import run_in_lab

    path = tmp_path / "tiny.toml"
    text = TINY.replace('outages = [{ start = "0s", end = "1h", mode = "refuse" }]', mx1)
    path.write_text(text.replace("connection_limit = 2",
                                 'connection_limit = 2\nbanner_timeout = "1s"'))
    sc = Scenario.from_toml(path)

    async def body(lab: Lab) -> Any:
        return await run_in_lab(sc, lab=lab), lab.host_addresses

    result, addrs = with_lab(sc, body)
    s = result.summary
    assert (s["delivered"], s["still_queued"], s["bounced"]) == (30, 0, 0)
    hosts = s["lab"]["hosts"]
    if seen_by_mx1 == "connections":
        assert hosts["mx1.two.test"]["connections"] == 0  # refused by the kernel
    else:  # accepted, then reset at once or never answered
        assert hosts["mx1.two.test"][seen_by_mx1] == hosts["mx1.two.test"]["connections"] > 0
    assert hosts["mx1.two.test"]["accepted"] == 0
    assert hosts["mx2.two.test"]["accepted"] == 30
    assert hosts["mx2.two.test"]["tls_handshakes"] == hosts["mx2.two.test"]["connections"]
    deliveries = [r for r in result.records if r["type"] == "Delivery"]
    assert {r["peer_address"]["addr"] for r in deliveries} == {addrs["mx2.two.test"][0]}
    assert {r["peer_address"]["name"] for r in deliveries} == {"mx2.two.test"}


def test_egress_lab_run_writes_what_simulate_writes_and_compare_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    sim_dir, lab_dir = tmp_path / "sim", tmp_path / "lab"
    assert main(["simulate", str(path), "--out", str(sim_dir), "--quiet", "--no-plot"]) == 0
    assert main(["lab", str(path), "--run", "--out", str(lab_dir), "--no-plot"]) == 0
    names = {"records.jsonl", "series.npz", "summary.json"}
    assert {p.name for p in sim_dir.iterdir()} == names
    assert {p.name for p in lab_dir.iterdir()} == names
    summary = json.loads((lab_dir / "summary.json").read_text())
    assert summary["delivered"] == 30 and summary["realisation"] == "lab"
    # The client's cost per connection: one sample per connection made (every
    # connection mx2 accepted; mx1's refused ones leave none), a loopback connect.
    connect = summary["lab"]["timing"]["client_connect"]
    made = sum(h["connections"] for h in summary["lab"]["hosts"].values())
    assert connect["count"] == made >= 1, (connect, summary["lab"]["hosts"])
    # Milliseconds, not seconds: a loopback connect, with room for a loaded machine.
    assert 0 < connect["median_ms"] < 1000 and 0 < connect["mean_ms"] < 1000, connect
    capsys.readouterr()
    sim_summary = json.loads((sim_dir / "summary.json").read_text())
    assert summary["scenario_hash"] == sim_summary["scenario_hash"]
    assert main(["compare", str(sim_dir), str(lab_dir), "--json",
                 "--plot", str(tmp_path / "compare.png")]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["delivered"]["sim"] == rows["delivered"]["lab"] == 30.0
    assert rows["delivered"]["rel_diff"] == 0.0
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    assert not (lab_dir / "compare.png").exists() and not (sim_dir / "compare.png").exists()


def test_a_lab_in_a_child_process_serves_the_same_run(tmp_path: Path) -> None:
    from lab.run import run_in_lab

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    sc = Scenario.from_toml(path)
    result = asyncio.run(run_in_lab(sc, separate_process=True))
    s = result.summary
    assert (s["delivered"], s["still_queued"]) == (30, 0)
    hosts = s["lab"]["hosts"]
    assert hosts["mx1.two.test"]["connections"] == 0
    assert hosts["mx2.two.test"]["accepted"] == 30
    # measured in the engine's process, whichever process the servers are in
    assert s["lab"]["timing"]["client_connect"]["count"] == hosts["mx2.two.test"]["connections"]
    assert s["lab"]["dns_queries"] >= 3  # MX, then A and AAAA of each MX host
