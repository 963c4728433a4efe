"""A new user's mistakes: each is one line naming the flag, the address or the
field, with the subcommand's own usage where argparse is the one refusing;
`--version`; a description on every subcommand; `egress compare` refusing
runs of different scenarios and never writing into its inputs; one duration
format in every command's output.  Subprocesses, as a user runs them."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.cli import build_parser
from engine.durations import show_duration

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(ROOT / "scenarios" / "quickstart.toml")

TINY = textwrap.dedent(
    """
    name = "tiny"
    seed = 3
    horizon = "1h"
    sample_interval = "1s"

    [[traffic]]
    domain = "example.com"
    messages = 50
    at = "0s"

    [domains."example.com"]
    mx = [{ host = "mx.example.com", preference = 10 }]

    [hosts."mx.example.com"]
    command_latency = "2ms"
    data_latency = "10ms"
    """
)


def egress(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def one_line_error(run: subprocess.CompletedProcess[str], command: str) -> str:
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"egress {command}: error: "), lines[0]
    return lines[0]


# -- the program and its subcommands ------------------------------------------------------


def test_version() -> None:
    run = egress("--version")
    assert run.returncode == 0
    assert re.fullmatch(r"egress \d+\.\d+\.\d+\S*\n", run.stdout), run.stdout


def test_every_subcommand_has_a_description() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    missing = [name for name, p in sub.choices.items() if not p.description]
    assert missing == []


@pytest.mark.parametrize(("command", "args"), [
    ("simulate", ["x"]), ("sweep", ["x", "--vary", "a=1"]), ("compare", ["x", "y"]),
    ("lab", ["x"]), ("check", ["x"]), ("replay", ["x", "--policy", "y"]),
])
def test_an_unknown_flag_prints_the_subcommands_usage(command: str, args: list[str]) -> None:
    run = egress(command, *args, "--no-such-flag")
    assert run.returncode == 2
    assert run.stderr.startswith(f"usage: egress {command} "), run.stderr
    assert f"egress {command}: error: unrecognized arguments: --no-such-flag" in run.stderr


def test_a_missing_argument_prints_the_subcommands_usage() -> None:
    run = egress("sweep", QUICKSTART)
    assert run.returncode == 2
    assert run.stderr.startswith("usage: egress sweep ")
    assert "the following arguments are required: --vary" in run.stderr


# -- one line for each mistake -------------------------------------------------------------


def test_sweep_vary_without_equals_names_the_flag() -> None:
    line = one_line_error(egress("sweep", QUICKSTART, "--vary", "egress_path.connection_limit"),
                          "sweep")
    assert "--vary 'egress_path.connection_limit': expected KEY=V1,V2,..." in line


def test_sweep_seeds_below_one_names_the_flag() -> None:
    line = one_line_error(egress("sweep", QUICKSTART, "--vary", "egress_path.connection_limit=4",
                                 "--seeds", "0"), "sweep")
    assert "--seeds 0: expected at least 1" in line


@pytest.fixture
def busy_tcp() -> object:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_deliver_on_a_port_in_use_names_the_flag_and_address(busy_tcp: int,
                                                             tmp_path: Path) -> None:
    run = egress("deliver", "--policy", str(ROOT / "examples" / "live_policy.py"),
                 "--spool", str(tmp_path / "spool"), "--listen", f"127.0.0.1:{busy_tcp}")
    line = one_line_error(run, "deliver")
    assert f"--listen 127.0.0.1:{busy_tcp}: cannot listen there: address already in use" in line


def test_lab_dns_port_in_use_names_the_flag_and_address() -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        run = egress("lab", str(ROOT / "examples" / "local_world.toml"), "--dns-port", str(port),
                     "--duration", "1")
    finally:
        busy.close()
    line = one_line_error(run, "lab")
    assert f"--dns-port {port}: 127.0.0.1:{port} (UDP): address already in use" in line


def test_a_missing_optional_package_is_one_line(tmp_path: Path) -> None:
    # dask is an extra; hide it if it is installed, so the test means the same everywhere.
    (tmp_path / "dask").mkdir()
    (tmp_path / "dask" / "__init__.py").write_text("raise ModuleNotFoundError("
                                                   "\"No module named 'dask'\", name='dask')\n")
    run = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from engine.cli import main; sys.exit(main(sys.argv[2:]))", str(tmp_path),
         "sweep", QUICKSTART, "--vary", "egress_path.connection_limit=4",
         "--scheduler", "tcp://127.0.0.1:1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = one_line_error(run, "sweep")
    assert "pip install 'egress[dask]'" in line


# -- compare ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("runs")
    (d / "tiny.toml").write_text(TINY)
    (d / "other.toml").write_text(TINY.replace('name = "tiny"', 'name = "other"'))
    for out, args in (("a", ["tiny.toml"]), ("b", ["tiny.toml", "--seed", "9"]),
                      ("c", ["tiny.toml", "--set", "egress_path.connection_limit=2"]),
                      ("d", ["other.toml"])):
        run = egress("simulate", *args, "--out", out, "--quiet", "--no-plot", cwd=d)
        assert run.returncode == 0, run.stderr
    return d


def test_compare_accepts_two_seeds_of_one_scenario(runs: Path) -> None:
    a, b = (json.loads((runs / x / "summary.json").read_text()) for x in "ab")
    assert a["scenario"] == "tiny" and a["scenario_hash"] == b["scenario_hash"]
    run = egress("compare", "a", "b", "--plot", "charts/ab.png", cwd=runs)
    assert run.returncode == 0, run.stderr
    assert (runs / "charts" / "ab.png").stat().st_size > 10_000
    assert "wrote charts/ab.png" in run.stdout
    assert not list(runs.glob("[ab]/*.png"))


def test_compare_refuses_another_scenario_unless_forced(runs: Path) -> None:
    line = one_line_error(egress("compare", "a", "d", cwd=runs), "compare")
    assert "not the same scenario: a is a run of 'tiny', d of 'other'" in line
    assert "--force" in line
    forced = egress("compare", "a", "d", "--force", cwd=runs)
    assert forced.returncode == 0, forced.stderr
    assert not list(runs.glob("*/compare.png"))


def test_compare_refuses_the_same_name_with_other_values(runs: Path) -> None:
    line = one_line_error(egress("compare", "a", "c", cwd=runs), "compare")
    assert "runs of 'tiny' with different values (scenario_hash" in line


def test_compare_never_plots_into_an_input(runs: Path) -> None:
    line = one_line_error(egress("compare", "a", "b", "--plot", "b/compare.png", cwd=runs),
                          "compare")
    assert "--plot b/compare.png: inside the input directory b" in line
    assert not (runs / "b" / "compare.png").exists()


# -- one duration format ------------------------------------------------------------------------

# What show_duration prints, and nothing else that looks like a bare span.
DURATION = r"(?:\d+ms|\d+(?:\.\d+)?s|\d+m\d\ds|\d+h\d\dm\d\ds|\d+d\d\dh\d\dm\d\ds)"


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0, "0s"), (0.35, "350ms"), (0.0004, "0.4ms"), (1, "1s"), (20.06, "20.06s"),
    (59.999, "1m00s"), (599.4, "9m59s"), (3723, "1h02m03s"), (2 * 86400 + 3, "2d00h00m03s"),
])
def test_show_duration(seconds: float | None, text: str) -> None:
    assert show_duration(seconds) == text


def test_simulate_sweep_and_compare_print_durations_alike(runs: Path) -> None:
    sim = egress("simulate", "tiny.toml", "--quiet", cwd=runs)
    (drain,) = [line for line in sim.stdout.splitlines() if "drain time" in line]
    assert re.search(rf"│\s+{DURATION} │", drain), drain
    sweep = egress("sweep", "tiny.toml", "--vary", "egress_path.connection_limit=2,4",
                   "--seeds", "2", "--workers", "1", cwd=runs)
    assert sweep.returncode == 0, sweep.stderr
    rows = [line for line in sweep.stdout.splitlines() if line.startswith("│ 2 ")]
    assert rows and re.search(rf"│\s+{DURATION} ± {DURATION}\s+│", rows[0]), sweep.stdout
    compare = egress("compare", "a", "b", cwd=runs)
    (drain,) = [line for line in compare.stdout.splitlines() if "drain time" in line]
    assert re.fullmatch(rf"│ drain time\s+│\s+{DURATION} │\s+{DURATION} │\s+\S+ │", drain), drain


def test_sweep_headers_are_never_cut(runs: Path) -> None:
    run = egress("sweep", "tiny.toml", "--vary", "egress_path.connection_limit=2",
                 "--workers", "1", cwd=runs)
    assert run.returncode == 0, run.stderr
    assert "…" not in run.stdout
    rows = [line.strip("┃").split("┃") for line in run.stdout.splitlines()
            if line.startswith("┃")]
    columns = ["".join(row[i].strip() for row in rows) for i in range(len(rows[0]))]
    assert columns[0] == "egress_path.connection_limit"
    assert columns[-1].replace(" ", "") == "maxpeakconnections"
