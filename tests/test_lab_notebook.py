"""notebooks/sim_vs_lab.ipynb runs top to bottom, draws its chart and says what it claims.

Executed once with nbclient on a real Jupyter kernel (the project's own
interpreter), in memory, as tests/test_notebooks.py does for the others; the
committed file must stay output-free.  The last cell prints one JSON line
with the figures the notebook's conclusion rests on: both runs finish every
message, their drain times agree within 5 % and their peak connections are
equal.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "sim_vs_lab.ipynb"
# nbclient's limit per cell: a hang fails, speed is not asserted (about 15 s on
# a quiet machine; a loaded one takes longer, which is not a failure).
CELL_TIMEOUT = 300.0


def _kernel_name() -> str:
    """"python3" when that spec runs this interpreter, else an "egress" spec for it."""
    manager = KernelSpecManager()
    for name in ("python3", "egress"):
        try:
            argv = manager.get_kernel_spec(name).argv
        except NoSuchKernel:
            continue
        if argv and (argv[0].startswith("python") or
                     Path(argv[0]).resolve() == Path(sys.executable).resolve()):
            return name
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "egress"],
        check=True, capture_output=True,
    )
    return "egress"


@functools.cache
def _executed() -> tuple[Any, float]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=_kernel_name(),
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    started = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - started


def _code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(_code_cells(nb)) if c.outputs or c.execution_count]
    assert dirty == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_runs_both_ways_and_draws_one_chart() -> None:
    nb, _ = _executed()
    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_two_runs_agree() -> None:
    nb, _ = _executed()
    last = _code_cells(nb)[-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    out = json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
    assert out["notebook"] == "sim_vs_lab"
    assert out["submitted"] == [620, 620]
    assert out["still_queued"] == [0, 0]
    sim_drain, lab_drain = out["drain_time"]
    assert 10.0 < sim_drain < 12.0  # 20 at once, then 200 at 20/s
    assert abs(out["drain_rel_diff"]) <= 0.05
    assert out["drain_rel_diff"] == pytest.approx((lab_drain - sim_drain) / sim_drain)
    assert out["peak_connections"][0] == out["peak_connections"][1]
