"""`egress deliver` as a child process of a test, started and waited for.

Tests that need a real process (a SIGKILL, two processes sharing Redis, a
restart) start ``python -m engine.cli deliver`` with its output in a file and
must wait until its SMTP listener accepts connections: recovery, imports and a
loaded machine make that take seconds.  `start_deliver` does both; when the
process dies first or never listens, the test fails with the process's output
(the only place its one-line error or traceback is), and a process that never
listened is not left running.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ROOT", "deliver_argv", "start_deliver", "wait_listening"]

ROOT = Path(__file__).resolve().parents[2]
POLL = 0.05  # seconds between connection attempts


def deliver_argv(*args: str) -> list[str]:
    """The command line of ``egress deliver ARGS`` from this checkout."""
    return [sys.executable, "-m", "engine.cli", "deliver", *args]


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path,
                   timeout: float = 60.0) -> None:
    """Return once 127.0.0.1:`port` accepts a connection.  The test fails with the
    output in `log` if `proc` exits first; after `timeout` seconds (a process
    start on a loaded machine) `proc` is killed and TimeoutError carries it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, _output(log)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(POLL)
    proc.kill()
    proc.wait(10)
    raise TimeoutError(f"egress deliver did not listen within {timeout:g}s\n{_output(log)}")


def start_deliver(argv: Sequence[str], port: int, log: Path,
                  timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start `argv` (see `deliver_argv`) from the checkout's root, stdout and
    stderr into `log` (replaced), and wait until it listens on `port`."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(argv), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    wait_listening(proc, port, log, timeout)
    return proc


def _output(log: Path) -> str:
    return log.read_text(errors="replace")
