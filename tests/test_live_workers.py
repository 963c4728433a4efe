"""`egress deliver --workers 2`: two processes on one port, one spool each, limits in Redis."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.cli import main
from tests.support.deliver_process import ROOT
from tests.support.dns_server import DnsServer
from tests.support.live_harness import free_port, zone_for
from tests.support.redis_server import RedisServer
from tests.test_live_shared_e2e import POLICY, CountingSink, submit

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def test_workers_share_one_port_and_one_connection_limit(tmp_path: Path) -> None:
    with RedisServer() as redis, CountingSink(0.02) as sink, DnsServer(zone_for()) as dns:
        policy = tmp_path / "policy.py"
        policy.write_text(POLICY.format(port=sink.port, limit=4, extra=""))
        port = free_port()
        spool = tmp_path / "spool"
        log = open(tmp_path / "workers.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "deliver", "--policy", str(policy),
             "--spool", str(spool), "--listen", f"127.0.0.1:{port}", "--resolver",
             f"127.0.0.1:{dns.port}", "--redis", redis.url, "--workers", "2", "--grace", "2"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while len(list(spool.glob("worker-*/journal.sqlite"))) < 2 or not _listening(port):
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "workers.log").read_text()
                time.sleep(0.1)
            time.sleep(1.0)  # both workers listening
            threads = [threading.Thread(target=submit, args=(port, f"c{i}", 10))
                       for i in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            deadline = time.monotonic() + 60
            while sink.count() < 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sink.count() == 200
            assert sink.peak <= 4
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        text = (tmp_path / "workers.log").read_text()
        assert code == 0, text
        # one SIGTERM to the supervisor stops both workers cleanly
        assert text.count("stopped cleanly") == 2, text
        assert len(list(spool.glob("worker-*/journal.sqlite"))) == 2


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_workers_need_redis_and_a_fixed_port(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.py"
    policy.write_text("from engine import Policy\npolicy = Policy()\n")
    assert main(["deliver", "--policy", str(policy), "--spool", str(tmp_path / "s"),
                 "--workers", "2"]) == 1
    assert "needs --redis" in capsys.readouterr().err
    assert main(["deliver", "--policy", str(policy), "--spool", str(tmp_path / "s"),
                 "--workers", "2", "--redis", "redis://127.0.0.1:1/0",
                 "--listen", "127.0.0.1:0"]) == 1
    assert "fixed port" in capsys.readouterr().err
