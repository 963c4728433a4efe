"""`egress simulate` and `egress sweep` as a user runs them (subprocesses)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCENARIO = textwrap.dedent(
    """
    name = "cli-test"
    seed = 3
    horizon = "1h"
    sample_interval = "1s"

    [[traffic]]
    domain = "example.com"
    messages = 400
    at = "0s"

    [domains."example.com"]
    mx = [{ host = "mx.example.com", preference = 10 }]

    [hosts."mx.example.com"]
    connect_latency = "5ms"
    command_latency = "2ms"
    data_latency = "40ms"
    tempfail_rcpt = 0.0

    [egress_path]
    connection_limit = 8
    enable_tls = "Disabled"
    """
)


def egress(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True, text=True, timeout=300,
    )


def write(tmp_path: Path, text: str = SCENARIO) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_simulate_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = egress("simulate", str(write(tmp_path)), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["delivered"] == 400 and summary["still_queued"] == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "Delivery" for r in records) == 400
    assert sum(r["type"] == "Reception" for r in records) == 400
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import numpy as np

    with np.load(out / "series.npz") as series:
        assert int(series["delivered_cumulative"][-1]) == 400
    assert "delivered" in proc.stdout and "400" in proc.stdout


def test_simulate_set_overrides_a_key(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = egress("simulate", str(write(tmp_path)), "--out", str(out), "--quiet", "--no-plot",
                  "--set", "egress_path.connection_limit=2")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert max(summary["peak_connections"].values()) == 2


def test_simulate_bad_scenario_exits_1_naming_the_field(tmp_path: Path) -> None:
    bad = write(tmp_path, SCENARIO.replace("tempfail_rcpt = 0.0", "tempfail_rcpt = 1.5"))
    proc = egress("simulate", str(bad))
    assert proc.returncode == 1
    assert "tempfail_rcpt" in proc.stderr and "s.toml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_simulate_bad_override_exits_1(tmp_path: Path) -> None:
    proc = egress("simulate", str(write(tmp_path)), "--set", "egress_path.conection_limit=3")
    assert proc.returncode == 1
    assert "conection_limit" in proc.stderr and "connection_limit" in proc.stderr


def test_sweep_runs_every_combination_over_seeds(tmp_path: Path) -> None:
    out = tmp_path / "sweep.csv"
    proc = egress("sweep", str(write(tmp_path)), "--vary", "egress_path.connection_limit=1,4",
                  "--seeds", "2", "--workers", "2", "--csv", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["egress_path.connection_limit"] for r in rows] == ["1", "4"]
    assert all(r["runs"] == "2" for r in rows)
    slow, fast = (float(r["drain_time_mean"]) for r in rows)
    assert fast < slow / 2  # four connections drain far faster than one
    assert [int(float(r["max_peak_connections_max"])) for r in rows] == [1, 4]


# one slow connection behind a small ready queue: the backlog waits minutes, re-delayed
SQUEEZED = SCENARIO.replace("connection_limit = 8", "connection_limit = 1\nmax_ready = 20")
SQUEEZED = SQUEEZED.replace('data_latency = "40ms"', 'data_latency = "400ms"')


def test_simulate_records_choice(tmp_path: Path) -> None:
    path = write(tmp_path, SQUEEZED)
    types = {}
    for choice in ("outcomes", "all"):
        out = tmp_path / choice
        args = ["--records", choice] if choice != "outcomes" else []
        proc = egress("simulate", str(path), "--out", str(out), "--quiet", "--no-plot", *args)
        assert proc.returncode == 0, proc.stderr
        lines = (out / "records.jsonl").read_text().splitlines()
        types[choice] = {json.loads(line)["type"] for line in lines}
        summary = json.loads((out / "summary.json").read_text())
        assert summary["records"]["Delayed"] > 0
    assert "Delayed" not in types["outcomes"] and "Delayed" in types["all"]
    out = tmp_path / "none"
    proc = egress("simulate", str(path), "--out", str(out), "--quiet", "--no-plot",
                  "--records", "none")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "records.jsonl").exists() and (out / "summary.json").exists()


def test_simulate_says_what_is_wrong_and_prints_progress_lines(tmp_path: Path) -> None:
    proc = egress("simulate", str(write(tmp_path, SQUEEZED)))
    assert proc.returncode == 0, proc.stderr
    # not a terminal: plain progress lines, the first at once
    assert "cli-test: simulated 0:00:00, finished 0/400" in proc.stdout
    assert "what is wrong:" in proc.stdout and "--set egress_path.max_ready=" in proc.stdout
    quiet = egress("simulate", str(write(tmp_path, SQUEEZED)), "--quiet")
    assert "cli-test: simulated" not in quiet.stdout and "what is wrong:" in quiet.stdout


def test_sweep_prints_runs_done(tmp_path: Path) -> None:
    proc = egress("sweep", str(write(tmp_path)), "--vary", "egress_path.connection_limit=2,4",
                  "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "sweep: 2/2 runs done" in proc.stdout
