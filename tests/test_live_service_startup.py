"""`egress deliver` refusing to start, and what it leaves on disk.

A port in use, an address that cannot be bound, a spool that cannot be
written: one line on stderr naming it, exit status 1, no traceback.  The
spool and log files it writes are 0600 in 0700 directories.
"""

from __future__ import annotations

import asyncio
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine.live.service import Service
from engine.policy import Policy
from tests.support.live_harness import LOOPBACK_POLICY_FILE

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def deliver(tmp: Path, *extra: str, spool: Path | None = None) -> subprocess.CompletedProcess[str]:
    policy = tmp / "policy.py"
    policy.write_text(LOOPBACK_POLICY_FILE.format(port=25))
    args = [sys.executable, "-m", "engine.cli", "deliver", "--policy", str(policy),
            "--spool", str(spool or tmp / "spool"), "--resolver", "127.0.0.1:53", *extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=40)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(deliver(tmp_path, "--listen", f"127.0.0.1:{port}"))
    assert line == (f"egress deliver: error: --listen 127.0.0.1:{port}: cannot listen there: "
                    "address already in use")


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(deliver(tmp_path, "--listen", "127.0.0.1:0", "--metrics-port",
                                str(port)))
    assert f"--metrics-port {port}: cannot listen there" in line


def test_an_address_that_cannot_be_bound_is_one_line(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never a local address, so bind() fails (nothing is sent).
    line = one_line(deliver(tmp_path, "--listen", "192.0.2.7:2525"))
    assert line == ("egress deliver: error: --listen 192.0.2.7:2525: cannot listen there: "
                    "cannot assign requested address")


def test_a_spool_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    line = one_line(deliver(tmp_path, "--listen", "127.0.0.1:0", spool=blocker / "spool"))
    assert line.startswith(f"egress deliver: error: spool {str(blocker / 'spool')!r}: "
                           "cannot write: ")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_spool_and_log_files_are_private(tmp_path: Path) -> None:
    spool, logs = tmp_path / "spool", tmp_path / "logs"

    async def go() -> None:
        async with Service(Policy(), spool, listen=None, log_dir=logs,
                           resolver=_Silent()) as svc:
            await svc.submit("s@sender.test", ["a@example.com"], b"Subject: x\r\n\r\nhi\r\n")
            assert svc.logs is not None
            svc.logs.flush()
            wal = spool / "journal.sqlite-wal"
            assert wal.exists()
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600

    asyncio.run(go())
    for directory in (spool, logs):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    files = [p for p in (*spool.iterdir(), *logs.iterdir()) if p.is_file()]
    assert any(p.name == "journal.sqlite" for p in files)
    assert any(p.parent == logs for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


class _Silent:
    """Lookups that never answer: delivery is not under test."""

    async def resolve_mx(self, domain: str, now: float) -> object:
        await asyncio.Event().wait()

    async def resolve_tlsa(self, host: str, port: int, now: float) -> object:
        await asyncio.Event().wait()
