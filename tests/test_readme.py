"""README.md's commands, run as a new user would: a fresh clone, README's own
install step, then every shell and Python block in order.

The clone is of this checkout's committed HEAD.  The install step is the
first block (`bash scripts/quickstart.sh`: a new ``.venv`` with ``pip install
-e .``, nothing else), so a command that needs a package the plain install
does not bring fails here.  Every later block runs from the clone's root with
that ``.venv/bin`` first on PATH (what ``source .venv/bin/activate`` does);
a block preceded by ``<!-- readme-test: skip (why) -->`` is not run.  A block
fails the test by a non-zero status or a traceback on stderr; a few blocks'
outputs are checked against what README says of them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK_TIMEOUT = 600  # seconds; the install step is the longest (pip), then lab --run

_FENCE = re.compile(r"(?:<!-- readme-test: (?P<mark>\w+)[^>]*-->\n)?```(?P<lang>sh|python)\n"
                    r"(?P<body>.*?)\n```", re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    skip: bool


def blocks(text: str) -> list[Block]:
    """README's fenced sh and python blocks in order, with their skip marks."""
    return [Block(m["lang"], m["body"], m["mark"] == "skip") for m in _FENCE.finditer(text)]


def test_blocks_are_found_and_marks_are_known() -> None:
    text = README.read_text(encoding="utf-8")
    marks = re.findall(r"<!-- readme-test: (\w+)", text)
    assert set(marks) <= {"run", "skip"}
    found = blocks(text)
    assert found[0].body == "bash scripts/quickstart.sh" and not found[0].skip
    skipped = [b.body.split()[:2] for b in found if b.skip]
    assert skipped == [["bash", "scripts/test.sh"], ["egress", "deliver"]]
    assert sum(b.lang == "python" for b in found) >= 2


def _run(block: Block, clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if block.lang == "sh":
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.body]
    else:
        argv = [str(clone / ".venv" / "bin" / "python"), "-c", block.body]
    return subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT, check=False)


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet waited for, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _stop_processes_of(clone: Path) -> list[int]:
    """Kill every process whose command line names the clone (README's own
    servers, run from its .venv); returns those that were still running."""
    mine = str(clone)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if mine in cmdline:
            found.append(int(entry.name))
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in found):
        time.sleep(0.1)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


def test_the_cleanup_stops_what_a_clone_left_running(tmp_path: Path) -> None:
    clone = tmp_path / "egress"
    clone.mkdir()
    script = clone / "server.py"
    script.write_text("import time\nwhile True:\n    time.sleep(1)\n")
    child = subprocess.Popen([sys.executable, str(script)])
    try:
        cmdline = Path(f"/proc/{child.pid}/cmdline")
        deadline = time.monotonic() + 30
        while str(script).encode() not in cmdline.read_bytes():  # until it has exec'd
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        assert _stop_processes_of(clone) == [child.pid]
        assert child.wait(timeout=15) != 0
    finally:
        child.kill()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_every_readme_command_runs_from_a_fresh_clone(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("needs git to clone the checkout")
    clone = tmp_path / "egress"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    outputs: list[str] = []
    try:
        for i, block in enumerate(blocks(README.read_text(encoding="utf-8"))):
            if block.skip:
                continue
            done = _run(block, clone, env)
            where = (f"README block {i} ({block.lang}):\n{block.body}\n"
                     f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
            assert done.returncode == 0, where
            assert "Traceback" not in done.stderr, where
            outputs.append(done.stdout)
    finally:
        # README starts servers in the background (`&`) and stops them in a later
        # block; when a block fails first, nothing may be left running.
        _stop_processes_of(clone)
    text = "\n".join(outputs)
    # What README says the commands print.
    assert re.search(r"submitted\s+│\s+2,996 │", text), "quickstart no longer submits 2,996"
    assert '"type":"Delivery"' in text and '"recipient":"someone@local.test"' in text
    # the plain sink on loopback, reached through the smart host of localhost's queue
    assert '"recipient":"someone@localhost"' in text
    assert '"site":"unspecified->mx_list:[127.0.0.1]@smtp_client"' in text
    assert "wrote out/compare.png" in text
    assert (clone / "out" / "compare.png").is_file()
    assert not (clone / "out" / "lab" / "compare.png").exists()
    assert (clone / "out" / "quickstart" / "plot.png").is_file()
