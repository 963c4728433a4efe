"""`egress deliver --loop`: the service on asyncio's own loop and on uvloop
(engine/live/loops.py), each taking a message over SMTP and delivering it end
to end on loopback (a real DNS server, an aiosmtpd sink); a missing uvloop is
one line with ``--loop uvloop`` and asyncio's loop with ``--loop auto``.

The subprocess prints the loop it runs on in its start line, so the test sees
which loop delivered, not only that something did.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.live import loops
from tests.support.dns_server import DnsServer
from tests.support.live_harness import LOOPBACK_POLICY_FILE, free_port, message, zone_for
from tests.support.smtp_servers import SinkServer
from tests.support.waiting import until_sync

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent


def _start(tmp: Path, sink_port: int, dns_port: int, loop: str,
           env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int, Path]:
    policy = tmp / "policy.py"
    policy.write_text(LOOPBACK_POLICY_FILE.format(port=sink_port))
    port = free_port()
    out = tmp / "deliver.out"
    args = [sys.executable, "-m", "engine.cli", "deliver", "--policy", str(policy),
            "--spool", str(tmp / "spool"), "--listen", f"127.0.0.1:{port}",
            "--resolver", f"127.0.0.1:{dns_port}", "--loop", loop]
    with open(out, "wb") as sink:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                env=env)
    return proc, port, out


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_deliver_runs_and_delivers_on_each_loop(tmp_path: Path, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    with DnsServer(zone_for()) as dns, SinkServer() as sink:
        proc, port, out = _start(tmp_path, sink.port, dns.port, loop)
        try:
            until_sync(lambda: "egress deliver: smtp" in out.read_text() or proc.poll() is not None,
                     what="the start line", timeout=30)
            assert proc.poll() is None, out.read_text()
            assert f"loop {loop}" in out.read_text()
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                assert client.sendmail("s@sender.test", ["a@example.com"], message(1)) == {}
            until_sync(lambda: len(sink.messages) == 1, what="the delivery", timeout=30)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, out.read_text()
            assert "stopped cleanly" in out.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_uvloop_missing_is_one_line_and_auto_falls_back(tmp_path: Path) -> None:
    # a directory on PYTHONPATH whose `uvloop` cannot be imported: the machine without it
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "uvloop.py").write_text("raise ImportError('uvloop hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{ROOT}"}
    (tmp_path / "p.py").write_text(LOOPBACK_POLICY_FILE.format(port=1))
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", "deliver", "--policy", str(tmp_path / "p.py"),
         "--spool", str(tmp_path / "spool"), "--listen", "127.0.0.1:0", "--loop", "uvloop"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    assert "--loop uvloop: uvloop is not installed" in lines[0]
    (tmp_path / "auto").mkdir()
    with DnsServer(zone_for()) as dns, SinkServer() as sink:
        proc, _port, out = _start(tmp_path / "auto", sink.port, dns.port, "auto", env=env)
        try:
            until_sync(lambda: "egress deliver: smtp" in out.read_text()
                       or proc.poll() is not None, what="the start line", timeout=30)
            assert "loop asyncio" in out.read_text(), out.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_resolve_loop_names_the_option() -> None:
    assert loops.resolve_loop("asyncio") == "asyncio"
    with pytest.raises(ConfigError, match="--loop: 'trio' is not one of auto, asyncio, uvloop"):
        loops.resolve_loop("trio")
