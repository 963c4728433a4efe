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

README's sessions name fixed ports (127.0.0.1:2525, ``--dns-port 10053``, ...)
because a reader types them.  Two suite runs on one machine would then fight
over them, so the test gives each literal port a free one of its own (one
mapping per run) and rewrites the commands it runs and the files they read
(examples/live_policy.py's ``smtp_port``) with it; README itself keeps the
readable ports.  Each block runs in a process group of its own, and every
group is stopped at the end whatever happened, so the servers a block starts
in the background never outlive the test.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.live.ctl import DEFAULT_ENDPOINT

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK_TIMEOUT = 600  # seconds; the install step is the longest (pip), then lab --run
STOP_GRACE = 30  # seconds a stopped group has to exit before SIGKILL

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


# -- README's ports, remapped ------------------------------------------------------------
#
# A literal port is a number where a port is written: after a loopback address
# and a colon, after ``--port``/``--dns-port``/``port``/``port=``, or after a
# quoted loopback address and a comma (``smtplib.SMTP("127.0.0.1", 2525)``).

_PORT = re.compile(r"(?P<pre>127\.0\.0\.\d{1,3}:|localhost:|--(?:dns-)?port[ =]|port ?= ?|port "
                   r"|[\"']127\.0\.0\.\d{1,3}[\"'],\s*)(?P<port>\d{2,5})\b")


def literal_ports(text: str) -> set[int]:
    return {int(m["port"]) for m in _PORT.finditer(text)}


def remap(text: str, ports: dict[int, int]) -> str:
    """`text` with each literal port in `ports` written as its mapped port."""
    def one(m: re.Match[str]) -> str:
        port = int(m["port"])
        return m["pre"] + str(ports.get(port, port))
    return _PORT.sub(one, text)


def _bindable(port: int) -> bool:
    """Nothing listens on `port` on loopback, by TCP (SMTP, HTTP) or UDP (DNS)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(wanted: set[int]) -> dict[int, int]:
    """A distinct free loopback port for each of `wanted`, drawn at random below the
    kernel's ephemeral range (so no outgoing connection takes it meanwhile) and
    well apart from the fixed ports themselves."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    pool = range(20000, max(low, 20001))
    draw = random.SystemRandom()
    out: dict[int, int] = {}
    for port in sorted(wanted):
        for _ in range(1000):
            candidate = draw.choice(pool)
            if candidate not in wanted and candidate not in out.values() and _bindable(candidate):
                out[port] = candidate
                break
        else:
            raise RuntimeError(f"no free loopback port found for README's {port}")
    return out


def test_remap_rewrites_every_kind_of_literal_port() -> None:
    text = ('egress lab w.toml --dns-port 10053 --port 2526 --duration 5min &\n'
            'egress deliver --listen 127.0.0.1:2525 --http-listen 127.0.0.1:8000 &\n'
            'smtplib.SMTP("127.0.0.1", 2525); socket.create_connection(("127.0.0.10", 2526))\n'
            'curl -s http://127.0.0.1:8000/metrics.json  # seq 600, 2,996 messages\n'
            '    smtp_port=2526,  # a sink on port 2526\n')
    assert literal_ports(text) == {2525, 2526, 8000, 10053}
    ports = {2525: 21001, 2526: 21002, 8000: 21003, 10053: 21004}
    assert remap(text, ports) == (
        'egress lab w.toml --dns-port 21004 --port 21002 --duration 5min &\n'
        'egress deliver --listen 127.0.0.1:21001 --http-listen 127.0.0.1:21003 &\n'
        'smtplib.SMTP("127.0.0.1", 21001); socket.create_connection(("127.0.0.10", 21002))\n'
        'curl -s http://127.0.0.1:21003/metrics.json  # seq 600, 2,996 messages\n'
        '    smtp_port=21002,  # a sink on port 21002\n')
    mapped = free_ports(set(ports))
    assert len(set(mapped.values())) == 4 and not set(mapped.values()) & set(ports)


def _remap_run(found: list[Block], clone: Path) -> tuple[list[Block], dict[int, int]]:
    """The blocks to run and the files they name, on free ports (see the module doc).
    A fixed port the rewrite would miss fails here, before anything binds it."""
    run = [b for b in found if not b.skip]
    wanted = set().union(*(literal_ports(b.body) for b in run)) | literal_ports(DEFAULT_ENDPOINT)
    ports = free_ports(wanted)
    blocks_out = []
    for block in run:
        body = remap(block.body, ports)
        left = sorted(p for p in ports if re.search(rf"\b{p}\b", body))
        assert not left, f"README block keeps fixed port(s) {left} the test cannot remap:\n{body}"
        blocks_out.append(Block(block.lang, body, block.skip))
        for word in re.findall(r"[\w./-]+", block.body):
            path = clone / word
            if not word.startswith(("/", "..")) and path.is_file():
                text = path.read_text(encoding="utf-8")
                if remap(text, ports) != text:
                    path.write_text(remap(text, ports), encoding="utf-8")
    return blocks_out, ports


# -- running blocks, and stopping what they leave ---------------------------------------


def _run(block: Block, clone: Path, env: dict[str, str],
         groups: list[int]) -> subprocess.CompletedProcess[str]:
    """Run `block` in a new session (its own process group, recorded in `groups`,
    which the servers it starts with ``&`` share).  Its output goes to files, not
    pipes: a server a failing block left running would hold a pipe open, and
    reading it to its end would wait for that server."""
    if block.lang == "sh":
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.body]
    else:
        argv = [str(clone / ".venv" / "bin" / "python"), "-c", block.body]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=clone, env=env, stdout=out, stderr=err,
                                start_new_session=True)
        groups.append(proc.pid)
        try:
            status = proc.wait(timeout=BLOCK_TIMEOUT)
            late = ""
        except subprocess.TimeoutExpired:
            _stop_groups([proc.pid])
            status = proc.wait()
            late = f"\n(the block was stopped after {BLOCK_TIMEOUT} s)"
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, status, out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace") + late)


def _group_members(pgid: int) -> list[int]:
    """The running (not zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _stop_groups(pgids: list[int]) -> list[int]:
    """SIGTERM each process group in `pgids` that still has a process, SIGKILL what
    is left after STOP_GRACE s; returns the groups that had to be stopped.  A
    group's id is not reused while any process of it lives, so this reaches only
    the blocks' own processes."""
    live = [g for g in pgids if _group_members(g)]
    _terminate(live, os.killpg, lambda g: bool(_group_members(g)))
    return live


def _terminate(ids: list[int], send: Callable[[int, int], None],
               running: Callable[[int], bool]) -> None:
    """SIGTERM each of `ids` through `send` (os.kill or os.killpg), wait up to
    STOP_GRACE s until none is `running`, then SIGKILL."""
    for one in ids:
        with contextlib.suppress(ProcessLookupError):
            send(one, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(running(one) for one in ids):
        time.sleep(0.1)
    for one in ids:
        with contextlib.suppress(ProcessLookupError):
            send(one, signal.SIGKILL)


def test_stopping_a_blocks_group_stops_what_it_left_in_the_background(tmp_path: Path) -> None:
    # a block that fails with its server still running (and holding its output open)
    groups: list[int] = []
    pidfile = tmp_path / "server.pid"
    block = Block("sh", f"sleep 600 & echo $! > {pidfile}; echo started; false", False)
    done = _run(block, tmp_path, dict(os.environ), groups)
    assert done.returncode == 1 and done.stdout == "started\n"
    server = int(pidfile.read_text())
    assert _alive(server) and _group_members(groups[0]) == [server]
    assert _stop_groups(groups) == groups
    assert not _alive(server) and _group_members(groups[0]) == []
    assert _stop_groups(groups) == []


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
    _terminate(found, os.kill, _alive)
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
    to_run, ports = _remap_run(blocks(README.read_text(encoding="utf-8")), clone)
    env["EGRESS_ENDPOINT"] = remap(DEFAULT_ENDPOINT, ports)  # `egress ctl` without --endpoint
    outputs: list[str] = []
    groups: list[int] = []
    try:
        for i, block in enumerate(to_run):
            done = _run(block, clone, env, groups)
            where = (f"README block {i} ({block.lang}, ports {ports}):\n{block.body}\n"
                     f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
            assert done.returncode == 0, where
            assert "Traceback" not in done.stderr, where
            outputs.append(done.stdout)
    finally:
        # README starts servers in the background (`&`) and stops them in a later
        # block; when a block fails first, nothing may be left running: each
        # block's process group, then anything else run from the clone.
        _stop_groups(groups)
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
