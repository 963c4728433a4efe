"""The notebooks under notebooks/ run top to bottom and say what they claim.

Each notebook is executed once per test session with nbclient on a real
Jupyter kernel (the project's own interpreter), in memory: the committed
files stay output-free, which one test checks.  A notebook's last cell prints
one JSON line with the figures its conclusion rests on; the tests parse that
line and check the claims (drain time falls with connection_limit and never
beats the closed-form bound; an outage's transient failures sit inside its
window, leave a backlog, and everything is delivered in the end), so a
simulator that starts giving nonsense fails here and not only in a reader's
eyes.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("capacity_planning", "outage", "shaping")
# nbclient's limit per cell: a hang fails the run, but speed is not asserted
# here (the notebooks take about 20 s each on a quiet machine; bench/ measures).
CELL_TIMEOUT = 300.0
SCENARIO = ROOT / "scenarios" / "capacity_notebook.toml"

# jupyter_client runs a spec whose argv[0] is one of these with sys.executable.
_SELF_NAMES = {
    "python",
    f"python{sys.version_info[0]}",
    f"python{sys.version_info[0]}.{sys.version_info[1]}",
}


def _runs_this_interpreter(argv: list[str]) -> bool:
    if not argv:
        return False
    if argv[0] in _SELF_NAMES:
        return True
    return Path(argv[0]).resolve() == Path(sys.executable).resolve()


@functools.cache
def _kernel_name() -> str:
    """A kernel spec that runs this interpreter (the project's .venv): the
    stock "python3" when it does, else an "egress" spec installed for it."""
    manager = KernelSpecManager()
    for name in ("python3", "egress"):
        try:
            spec = manager.get_kernel_spec(name)
        except NoSuchKernel:
            continue
        if _runs_this_interpreter(spec.argv):
            return name
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "egress"],
        check=True,
        capture_output=True,
    )
    return "egress"


@functools.cache
def _executed(name: str) -> tuple[Any, float]:
    """Execute notebooks/<name>.ipynb once; return the notebook and its wall time."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=_kernel_name(),
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    started = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - started


def _code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _json_line(nb: Any) -> dict[str, Any]:
    """The last JSON object the notebook's final code cell printed."""
    last = _code_cells(nb)[-1]
    text = "".join(
        o.get("text", "")
        for o in last.outputs
        if o.output_type == "stream" and o.get("name") == "stdout"
    )
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"the final cell printed no JSON line; it printed {text!r}"
    return json.loads(lines[-1])


# -- the committed files ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    assert cells, f"{name}.ipynb has no code cells"
    dirty = [i for i, c in enumerate(cells) if c.outputs or c.execution_count is not None]
    assert dirty == [], f"{name}.ipynb: code cells {dirty} carry outputs; clear them"


def test_readme_names_every_notebook() -> None:
    text = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    missing = [n for n in NAMES if f"{n}.ipynb" not in text]
    assert missing == []


# -- execution ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NAMES)
def test_runs_top_to_bottom_and_draws(name: str) -> None:
    nb, _ = _executed(name)
    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert errors == []
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 1, f"{name}.ipynb drew no image/png output"


@pytest.mark.slow
@pytest.mark.timeout(900)
def _seconds(text: str) -> float:
    """'20ms' / '1.5s': the plain durations the capacity scenario uses."""
    for unit, scale in (("ms", 1e-3), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise AssertionError(f"not a plain duration: {text!r}")


def _bound_drain(limit: int, rate: str) -> float:
    """The drain time no run can beat, computed here from the scenario file (read
    with tomllib, not egress's parser), not taken from the notebook.

    Each message takes tau = command + data latency on its connection (the world
    is constant-latency, no bandwidth cap), so `limit` connections need at least
    N * tau / limit.  A max_message_rate of R/s admits its burst at once (KumoMTA:
    max_burst defaults to the limit, crates/throttle/src/lib.rs) and then one
    message per 1/R s, and the last one still takes tau: (N - R) / R + tau.
    """
    data = tomllib.loads(SCENARIO.read_text())
    (host,) = data["hosts"].values()
    (stream,) = data["traffic"]
    assert "data_bandwidth" not in host
    tau = _seconds(host["command_latency"]) + _seconds(host["data_latency"])
    n = stream["messages"]
    floor = n * tau / limit
    if rate != "none":
        per, unit = rate.split("/")
        assert unit == "s", rate
        r = int(per)
        floor = max(floor, max(n - r, 0) / r + tau)
    return floor


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_capacity_drain_falls_with_connections_and_respects_the_bound() -> None:
    nb, _ = _executed("capacity_planning")
    out = _json_line(nb)
    assert out["notebook"] == "capacity_planning"
    limits = out["connection_limits"]
    assert limits == sorted(limits) and len(limits) >= 3
    assert out["rates"][0] == "none" and len(out["rates"]) == 3
    n = out["messages"]
    assert n == tomllib.loads(SCENARIO.read_text())["traffic"][0]["messages"]
    for rate in out["rates"]:
        assert out["delivered"][rate] == [n] * len(limits), rate
        drains = out["drain_time"][rate]
        bounds = [_bound_drain(c, rate) for c in limits]
        # The notebook draws the same bound it was written to draw.
        assert out["bound_drain"][rate] == pytest.approx(bounds), rate
        assert None not in drains, f"{rate}: a run did not drain"
        below = [(c, d, b) for c, d, b in zip(limits, drains, bounds, strict=True) if d < b]
        assert below == [], f"{rate}: runs beat the closed-form bound: {below}"
        # The scenario is a clean world: the simulator should sit close to the bound.
        slack = [(c, d / b) for c, d, b in zip(limits, drains, bounds, strict=True) if d > 1.1 * b]
        assert slack == [], f"{rate}: runs more than 10 % above the bound: {slack}"
    free = out["drain_time"]["none"]
    assert all(b <= a for a, b in itertools.pairwise(free)), f"unthrottled drain times rise: {free}"
    assert free[-1] < free[0] / 4  # 2 -> 32 connections must buy a real speed-up
    # A throttled line flattens once the throttle binds: its last two points agree.
    for rate in out["rates"][1:]:
        last, prev = out["drain_time"][rate][-1], out["drain_time"][rate][-2]
        if _bound_drain(limits[-1], rate) == _bound_drain(limits[-2], rate):
            assert abs(last - prev) <= 0.01 * prev, (rate, prev, last)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_outage_failures_sit_in_the_window_and_the_backlog_clears() -> None:
    nb, _ = _executed("outage")
    out = _json_line(nb)
    assert out["notebook"] == "outage"
    assert (out["outage_start"], out["outage_end"]) == (1800.0, 3000.0)
    assert out["transient_failures"] > 0
    assert out["share_in_window"] > 0.8
    assert out["transient_failures_in_window"] / out["transient_failures"] == pytest.approx(
        out["share_in_window"]
    )
    assert out["backlog_at_outage_end"] > 0
    assert out["backlog_at_outage_end"] > 10 * out["baseline_backlog"]
    assert out["affected_outstanding_at_outage_end"]["yahoo.com"] > 0
    assert out["still_queued"] == 0
    assert out["delivered"] == out["submitted"] > 0
    assert out["recovery_seconds"] is not None and out["recovery_seconds"] > 0
    assert out["deferrals"].get("TransientFailure 451 4.3.0", 0) > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_shaping_answer_is_the_fastest_configuration_within_the_providers_limits() -> None:
    """The notebook's answer, re-derived here from its figures: of the runs
    that delivered everything with limit replies under the stated share, the
    one that drained first; and shaping must beat sending blind."""
    nb, _ = _executed("shaping")
    out = _json_line(nb)
    assert out["notebook"] == "shaping"
    configs = out["configurations"]
    assert configs == ["no shaping", "KumoMTA rule", "ramp-up"]
    n = out["messages"]
    assert n == tomllib.loads((ROOT / "scenarios" / "shaping_pushback.toml").read_text()
                              )["traffic"][0]["messages"]
    assert all(out["delivered"][c] == n for c in configs)
    within = [c for c in configs if out["limit_replies"][c] < out["within_share"] * n]
    assert within, "no configuration stayed within the provider's limits"
    assert out["answer"] == min(within, key=lambda c: out["drain_time"][c])
    # Sending blind trips the provider over and over and ruins the reputation.
    assert "no shaping" not in within
    assert out["limit_replies"]["no shaping"] > 50 * max(1, out["limit_replies"]["KumoMTA rule"])
    assert out["reputation_deferrals"]["no shaping"] > out["reputation_deferrals"]["KumoMTA rule"]
    assert out["drain_time"]["no shaping"] > out["drain_time"][out["answer"]]
    # A rule acted only where there was one, and after the provider spoke.
    assert out["first_rule_fired"]["no shaping"] is None
    assert all(out["first_rule_fired"][c] is not None for c in configs[1:])


# -- from the repository root, and what they cite ---------------------------------------

ALL = (*NAMES, "sim_vs_lab")


def _setup_cells(nb: Any) -> list[Any]:
    """The code cells up to the first that reads a scenario file: the part that
    depends on the working directory."""
    cells = []
    for cell in _code_cells(nb):
        cells.append(cell)
        if "from_toml(" in cell.source or "SCENARIO" in cell.source:
            return cells
    raise AssertionError("no cell reads a scenario file")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ALL)
def test_finds_its_files_from_the_repository_root(name: str) -> None:
    """notebooks/README.md says they run from the root too (nbclient with the
    root as working directory, as `jupyter lab` started there would)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells = _setup_cells(nb)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=_kernel_name(),
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert errors == []


@pytest.mark.parametrize("name", ALL)
def test_cites_only_files_in_the_repository(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    cited = re.findall(r"`([\w./-]+/[\w.-]+\.(?:md|toml|py|ipynb|csv|json))`", text)
    missing = [p for p in cited if not (ROOT / p).exists()]
    assert missing == [], f"{name}.ipynb cites files not in the repository: {missing}"
