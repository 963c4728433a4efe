"""`egress deliver` as a subprocess, operated with `egress ctl` as an operator would.

The service gets every operating flag: an admin HTTP API, STARTTLS with a
trustme certificate, an --auth-file of bcrypt hashes (made with `egress ctl
hash-password`), relaying allowed to no network (so only an authenticated
user may relay), zstd logs.  Then: the startup line names every endpoint; a
submission over STARTTLS + AUTH is accepted and one without AUTH refused;
`ctl suspend` holds it, `ctl queue-summary` / `qshape` / `suspend-list` show
it, `ctl resume` lets it go to the sink; `ctl bounce` / `bounce-list` /
`bounce-cancel` round-trip; SIGHUP installs a policy with another
connection_limit, seen by `ctl resolve-egress-path`; SIGTERM stops cleanly
and the logs are zstd segments that read back.
"""

from __future__ import annotations

import json
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from engine.live.logfile import read_records
from tests.support.dns_server import DnsServer
from tests.support.live_harness import LIMITED_POLICY_FILE, free_port, message, zone_for
from tests.support.smtp_servers import SinkServer

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")]

ROOT = Path(__file__).resolve().parent.parent



def egress(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=30)


def wait_until(cond: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} not met after {timeout}s"
        time.sleep(0.05)


def test_operating_egress_deliver_with_ctl(tmp_path: Path, ca: trustme.CA) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    made = egress("ctl", "hash-password", "alice", "--password-stdin", stdin="wonderland\n")
    assert made.returncode == 0, made.stderr
    (tmp_path / "users").write_text("# submission users\n" + made.stdout)
    assert made.stdout.startswith("alice:$2b$")

    with DnsServer(zone_for()) as dns, SinkServer() as sink:
        policy = tmp_path / "policy.py"
        policy.write_text(LIMITED_POLICY_FILE.format(port=sink.port, limit=2))
        smtp, http = free_port(), free_port()
        endpoint = f"http://127.0.0.1:{http}"
        out = tmp_path / "deliver.out"
        args = ["deliver", "--policy", str(policy), "--spool", str(tmp_path / "spool"),
                "--listen", f"127.0.0.1:{smtp}", "--resolver", f"127.0.0.1:{dns.port}",
                "--http-listen", f"127.0.0.1:{http}", "--tls-cert", str(tmp_path / "cert.pem"),
                "--tls-key", str(tmp_path / "key.pem"), "--auth-file", str(tmp_path / "users"),
                "--allow-network", "192.0.2.0/24", "--log-dir", str(tmp_path / "logs"),
                "--log-compress", "zstd", "--log-retention", "7d"]
        with open(out, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                                    stdout=fh, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "egress deliver: smtp" in out.read_text() or
                       proc.poll() is not None, "the startup line")
            line = out.read_text()
            assert f"smtp 127.0.0.1:{smtp} (STARTTLS)" in line, line
            assert f"http http://127.0.0.1:{http}" in line and "spool " in line

            def ctl(*verb: str) -> Any:
                done = egress("ctl", "--endpoint", endpoint, *verb, "--json")
                assert done.returncode == 0, done.stderr
                return json.loads(done.stdout)

            hold = ctl("suspend", "--domain", "example.com", "--reason", "night",
                       "--duration", "1h")
            # relaying needs AUTH (no network is allowed); AUTH after STARTTLS
            with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
                client.ehlo()
                with pytest.raises(smtplib.SMTPRecipientsRefused):
                    client.sendmail("s@sender.test", ["a@example.com"], message(0))
            tls = ssl.create_default_context()
            ca.configure_trust(tls)
            with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
                client.starttls(context=tls)
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    client.login("alice", "queen of hearts")
            with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
                client.starttls(context=tls)
                client.login("alice", "wonderland")
                assert client.sendmail("s@sender.test", ["a@example.com"], message(1)) == {}

            wait_until(lambda: ctl("queue-summary")["scheduled_queues"], "held")
            assert ctl("queue-summary")["scheduled_queues"][0]["scheduled"] == 1
            assert ctl("qshape")["rows"][1]["domain"] == "example.com"
            assert ctl("suspend-list")["suspend"][0]["held"] == 1
            shown = egress("ctl", "--endpoint", endpoint, "qshape")
            assert "example.com" in shown.stdout
            top = egress("ctl", "--endpoint", endpoint, "top", "--count", "2", "--interval",
                         "0.1")
            assert top.returncode == 0 and "egress top" in top.stdout, top.stderr
            assert sink.messages == []
            sched = ctl("inspect-sched-q", "example.com")
            assert sched["num_scheduled"] == 1
            [held] = sched["messages"]
            seen = ctl("inspect-message", held["id"])
            assert seen["message"]["recipient"] == ["a@example.com"]
            ctl("resume", "--id", hold["id"])
            wait_until(lambda: len(sink.messages) == 1, "delivered after resume")

            bounce = ctl("bounce", "--campaign", "gone", "--reason", "r", "--duration", "5m")
            assert bounce["total_bounced"] == 0
            assert [b["id"] for b in ctl("bounce-list")] == [bounce["id"]]
            ctl("bounce-cancel", "--id", bounce["id"])
            assert ctl("bounce-list") == []

            ready = ctl("inspect-ready-q", "unspecified->mx1.example.com@smtp_client")
            assert ready["state"]["ready_count"] == 0 and ready["egress_source"] == "unspecified"
            path = ctl("resolve-egress-path", "--domain", "example.com",
                       "--time-per-message", "0.5")
            assert path["path_config"]["connection_limit"] == 2
            assert path["connection_ceiling"]["value"] == 4.0
            assert path["drain_estimate"]["estimate"] == "lower_bound"
            policy.write_text(LIMITED_POLICY_FILE.format(port=sink.port, limit=7))
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: ctl("resolve-egress-path", "--domain", "example.com")
                       ["path_config"]["connection_limit"] == 7, "the reloaded policy")
            # a broken policy on SIGHUP: refused with one line, the service goes on
            policy.write_text("raise SystemError('broken')\n")
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload: policy" in out.read_text(), "the refusal line")
            assert ctl("resolve-egress-path", "--domain", "example.com"
                       )["path_config"]["connection_limit"] == 7

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, out.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    logs = tmp_path / "logs"
    assert list(logs.glob("*.jsonl.zst")) and not list(logs.glob("*.jsonl"))
    kinds = [r["type"] for r in read_records(logs)]
    assert kinds.count("Reception") == 1 and kinds.count("Delivery") == 1


def test_ctl_names_an_unreachable_endpoint() -> None:
    done = egress("ctl", "--endpoint", f"http://127.0.0.1:{free_port()}", "queue-summary")
    assert done.returncode == 1 and "cannot reach" in done.stderr
