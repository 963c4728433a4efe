"""Benchmarks run: each one's ``--quick`` mode finishes and prints its table.

The figures themselves are not asserted (they belong in BENCHMARKS.md); what
is asserted is that every section of the table is there with numbers in it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_journal_bench_quick(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.journal", "--quick", "--dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    rows = re.findall(r"^\s+(1|8|32|128)\s+[\d,]+\s+[\d.]+\s+[\d,]+\s+[\d.]+x$", out, re.M)
    assert rows == ["1", "8", "32", "128"], out
    for name in ("MessageSubmitted", "Response", "stream, mixed"):
        assert re.search(rf"^{name}\s+[\d,]+\s+[\d,]+\s+\d+$", out, re.M), out
    assert "recovery of a 5,000-event journal" in out
    assert re.search(r"from scratch: read\+decode\+handle\s+[\d.]+ s\s+5,000 events, 5,000 queued",
                     out), out
    assert re.search(r"from snapshot: restore \+ tail\s+[\d.]+ s\s+50 tail events", out), out
    assert list(tmp_path.iterdir()) == []  # the bench cleaned up after itself
