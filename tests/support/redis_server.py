"""A real redis-server (Debian's package) on a free loopback port, for the tests.

Started with no persistence (``--save '' --appendonly no``), so a restart
starts empty, as a Redis that lost its data would; always stopped on exit.
`stop` and `start` let a test take it away mid-run and bring it back on the
same port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

import pytest

from tests.support.live_harness import free_port


def redis_server_path() -> str:
    """The redis-server binary; the test is skipped without it (failed under CI)."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if found is None:
        if os.environ.get("EGRESS_REQUIRE_BENCH_TOOLS"):
            pytest.fail("redis-server is missing (Debian package redis-server)")
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    return found


class RedisServer:
    """``with RedisServer() as r: r.url``; `stop()` / `start()` mid-test."""

    def __init__(self) -> None:
        self.binary = redis_server_path()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="egress-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "redis-server exited at start"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
