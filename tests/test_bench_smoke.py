"""Benchmarks run: each one's ``--quick`` mode finishes and prints its table.

The figures themselves are not asserted (they belong in BENCHMARKS.md); what
is asserted is that every section of the table is there with numbers in it.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(module: str, *args: str) -> str:
    """`python -m module args` from the checkout: its output (a failure raises)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True).stdout


def test_journal_bench_quick(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.journal", "--quick", "--dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    rows = re.findall(r"^\s+(1|8|32|128)\s+[\d,]+\s+[\d.]+\s+[\d,]+\s+[\d.]+x"
                      r"\s+[\d,]+\s+[\d.]+\s+[\d.]+$", out, re.M)
    assert rows == ["1", "8", "32", "128"], out
    for name in ("MessageSubmitted", "Response", "stream, mixed"):
        assert re.search(rf"^{name}\s+[\d,]+\s+[\d,]+\s+\d+$", out, re.M), out
    assert "recovery of a 5,000-event journal: simulated (scenarios/million.toml" in out
    # a mixed stream from a real simulated run, not only submissions
    mix = re.search(r"^  mix: (.*)$", out, re.M)
    assert mix and "Response" in mix.group(1) and "MessageSubmitted" in mix.group(1), out
    scratch = re.search(r"from scratch: read\+decode\+handle\s+[\d.]+ s\s+5,000 events, "
                        r"([\d,]+) queued, (.*)$", out, re.M)
    assert scratch and scratch.group(2) == "state = the run's", out
    warm = re.search(r"from snapshot: restore \+ tail\s+[\d.]+ s\s+50 tail events, "
                     r"([\d,]+) queued, [\d.]+x faster, (.*)$", out, re.M)
    assert warm and warm.group(2) == "state = the run's", out
    assert warm.group(1) == scratch.group(1), out  # both ways recover the same queue
    # the worst case for state size: every submitted message still queued
    assert re.search(r"(?s)MessageSubmitted only.*?from scratch: read\+decode\+handle\s+[\d.]+ s"
                     r"\s+5,000 events, 5,000 queued, state = the run's", out), out
    assert list(tmp_path.iterdir()) == []  # the bench cleaned up after itself


def _postfix_tools_missing() -> str | None:
    import shutil

    for name in ("smtp-sink", "smtp-source"):
        if shutil.which(name) is None and shutil.which(name, path="/usr/sbin") is None:
            return (f"{name} is not installed (Debian package postfix; "
                    "scripts/bench-setup.sh installs it, and so does .ci/run)")
    return None


@pytest.fixture
def postfix_tools() -> None:
    """Skip without smtp-sink/smtp-source; fail instead where they are required
    (.ci/run sets EGRESS_REQUIRE_BENCH_TOOLS=1, so CI never skips silently)."""
    missing = _postfix_tools_missing()
    if missing is None:
        return
    if os.environ.get("EGRESS_REQUIRE_BENCH_TOOLS"):
        pytest.fail(f"EGRESS_REQUIRE_BENCH_TOOLS is set but {missing}")
    pytest.skip(missing)


@pytest.mark.usefixtures("postfix_tools")
def test_delivery_bench_quick() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.delivery", "--quick", "--messages", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=True,
    ).stdout
    for variant in ("reuse", "conn-per-msg", "rcpt10"):
        for who in ("smtp-source", "aiosmtplib", "egress", "egress-nojournal"):
            # A rate appears only when the sink counted all 60; egress rows carry a
            # note only when its Delivery records were not exactly 60 x recipients.
            row = re.search(rf"^delivery {variant} \(60\): {who} msg/s\s+([\d,]+)\s+(.*)$",
                            out, re.M)
            assert row, (variant, who, out)
            assert re.fullmatch(r"min [\d,]+ max [\d,]+(, cpu/wall [\d.]+, [\d,]+ us CPU/msg)?",
                                row.group(2)), out
        for other in ("aiosmtplib", "smtp-source", "egress-nojournal"):
            assert re.search(rf"^delivery {variant}: egress / {other}\s+[\d.]+x", out, re.M), out


@pytest.mark.usefixtures("postfix_tools")
def test_e2e_bench_quick() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.e2e", "--quick", "--messages", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=True,
    ).stdout
    assert re.search(r"^e2e \(60\): direct msg/s\s+[\d,]+\s+min", out, re.M), out
    # egress is the thing measured: it always has a rate.
    assert re.search(r"^e2e \(60\): egress msg/s\s+[\d,]+\s+min", out, re.M), out
    for relay in ("postfix", "slimta"):
        # A comparison peer has a rate, or is missing here (slimta lives in its own
        # venv, made by scripts/bench-setup.sh); never a failed or short run.
        assert re.search(rf"^e2e \(60\): {relay} msg/s\s+([\d,]+\s+min|n/a\s+not available)",
                         out, re.M), (relay, out)


def test_memory_bench_quick() -> None:
    """Tiny sizes: the tracemalloc table, then a real `egress deliver` holding 2,000.

    Without smtp-source the bench injects with aiosmtplib, so this runs anywhere."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=True,
    ).stdout
    row = re.search(r"^\s+10,000\s+(\d+)\s+(\d+)$", out, re.M)
    assert row, out
    with_strings, engine_only = int(row.group(1)), int(row.group(2))
    # The strings a message brings (id, recipient) cost more than nothing, and
    # the engine's own share stays in the range bench.core documents.
    assert 100 < engine_only < with_strings < 1000, out
    assert re.search(r"^  bytes per message at 10,000 queued: \d+ with", out, re.M), out
    assert "holding 2,000 queued messages of 2000 B" in out
    held = re.search(r"^\s+RSS holding 2,000 queued\s+([\d.]+) MiB", out, re.M)
    idle = re.search(r"^\s+RSS idle \(listening, nothing queued\)\s+([\d.]+) MiB", out, re.M)
    assert held and idle, out
    assert float(held.group(1)) > float(idle.group(1)) > 10, out  # holding costs memory
    per = re.search(r"RSS - idle, per queued message\s+([\d,]+) B", out)
    assert per and 0 < int(per.group(1).replace(",", "")) < 100_000, out
    spool = re.search(r"spool on disk\s+[\d.]+ MiB\s+([\d,]+) B/msg", out)
    # each message's 2 KB body (plus its event) is in the spool, not only in memory
    assert spool and int(spool.group(1).replace(",", "")) >= 2000, out
    assert re.search(r"RSS after restart, 2,000 recovered\s+[\d.]+ MiB", out), out


def test_sim_bench_quick_blast() -> None:
    """bench.sim --quick: a small blast at default max_ready, with both SimPy ratios."""
    out = _bench("bench.sim", "--quick")
    assert re.match(r"build: (pure Python|compiled \(mypyc\): \d+ of)", out), out
    assert re.search(r"^blast 5k\s+5,000 msgs  delivered 5,000  drain [\d,]+ s  delayed [\d,]+$",
                     out, re.M), out
    assert re.search(r"cpu [\d.]+ s  [\d.]+ cpu us/msg  engine events [\d,]+  "
                     r"simpy events [\d,]+$", out, re.M), out
    assert re.search(r"msgs/s : timeouts/s 1/[\d.]+  x bare \(same SimPy events\) [\d.]+$",
                     out, re.M), out


def test_sim_bench_out_writes_the_records_a_user_run_writes(tmp_path: Path) -> None:
    """bench.sim --out: the blast's records streamed as `egress simulate --out` streams
    them (the outcomes: a Reception and a Delivery per message, a TransientFailure per
    tempfailed recipient, no Delayed), and the row says how much was written, which is
    the file's size."""
    out = _bench("bench.sim", "--quick", "--out", str(tmp_path))
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    kinds = collections.Counter(json.loads(line)["type"] for line in lines)
    assert kinds["Reception"] == kinds["Delivery"] == 5000, kinds
    assert set(kinds) == {"Reception", "Delivery", "TransientFailure"}, kinds
    size = (tmp_path / "records.jsonl").stat().st_size
    written = re.search(r"records written [\d.]+ GB \(([\d,]+) bytes per message\)", out)
    assert written and int(written.group(1).replace(",", "")) == round(size / 5000), out


def test_sim_split_names_build_and_parts() -> None:
    """bench.sim_split: a small blast's CPU per message split by part; the build is named
    and the parts' shares of the whole add up to 100 % (the two 'of which' lines inside)."""
    out = _bench("bench.sim_split", "--size", "2k")
    assert re.search(r"^build: (pure Python|compiled \(mypyc\): \d+ of)", out, re.M), out
    shares = {m[0].strip(): float(m[1]) for m in
              re.findall(r"^  (\S.*?)\s+([\d.]+) %\s+[\d.]+ us$", out, re.M)}
    assert len(shares) == 6, out
    assert abs(sum(shares.values()) - 100.0) < 0.5, out


def test_blast_once_prints_a_blasts_cpu_per_message() -> None:
    """bench.blast_once: one small blast, every message delivered, its CPU per message."""
    out = _bench("bench.blast_once", "2000")
    m = re.search(r"^blast 2,000: ([\d.]+) CPU us per message, [\d.]+ s wall, "
                  r"delivered 2,000, peak RSS \d+ MiB$", out, re.M)
    assert m and float(m.group(1)) > 0, out
    bad = subprocess.run([sys.executable, "-m", "bench.blast_once", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "messages must be at least 1" in bad.stderr


def test_overflow_bench_quick() -> None:
    """bench.overflow --quick: ns per re-delay for two backlogs, wheel and heap."""
    out = _bench("bench.overflow", "--quick")
    rows = re.findall(r"^\s+([\d,]+)\s+[\d,]+\s+[\d,]+\s+[\d,]+  \(x[\d.]+, x[\d.]+ of the "
                      r"smallest\)$", out, re.M)
    assert rows == ["10,000", "50,000"], out
