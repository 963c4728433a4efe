"""bench.lua runs: its ``--quick`` mode prints a row of figures per hook.

The figures are not asserted (they go in BENCHMARKS.md); every row must be
there with its numbers.
"""

from __future__ import annotations

import re

import pytest

from bench import lua


def test_lua_bench_quick_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert lua.main(["--quick"]) == 0
    out = capsys.readouterr().out
    labels = re.findall(r"^  (.+?)\s+[\d.]+\s+[\d.]+\s+[\d.]+x$", out, re.M)
    assert labels == [
        "minimal get_egress_path_config",
        "changing table get_egress_path_config",
        "example get_egress_path_config",
        "example get_queue_config",
        "example get_egress_source",
        "example get_egress_pool",
        "simulation kumomta_policy.toml (s)",
    ], out
