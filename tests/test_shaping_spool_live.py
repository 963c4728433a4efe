"""The shaping files in force are kept in the spool, and everything that folds
the journal again uses them: a live `egress deliver --shaping` on loopback where
a rule fires; `egress replay` of its spool gives the live run's records exactly
(with the spool's copies, and with ``--shaping`` given again; without shaping
they differ); a restart without ``--shaping``, the original file gone, says
which files it took from the spool and keeps enforcing the rule; `egress check
--spool` shows the files and the rule in force without being told them."""

from __future__ import annotations

import io
import json
import signal
import smtplib
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from bridge.replay import ReplayError, actual_outcome
from engine.cli import main
from engine.live.logfile import read_records
from engine.policy import Policy
from tests.support.deliver_process import deliver_argv, start_deliver
from tests.support.dns_server import DnsServer
from tests.support.live_harness import free_port, message, zone_for
from tests.support.smtp_servers import SinkServer
from tests.support.waiting import until_sync
from tests.test_shaping_live import POLICY, PUSH, PUSHBACK, RULE  # the rule that fires live

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")]

RESOLVE = "/api/admin/resolve-egress-path/v1?domain=example.com"


class Run:
    """`egress deliver` of one spool, started and stopped as a test needs."""

    def __init__(self, tmp: Path, policy: Path, dns: int) -> None:
        self.tmp, self.policy, self.dns = tmp, policy, dns
        self.spool, self.logs = tmp / "spool", tmp / "logs"
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *flags: str) -> None:
        self.runs += 1
        self.smtp, self.http = free_port(), free_port()
        argv = deliver_argv("--policy", str(self.policy), "--spool", str(self.spool),
                            "--listen", f"127.0.0.1:{self.smtp}",
                            "--http-listen", f"127.0.0.1:{self.http}",
                            "--resolver", f"127.0.0.1:{self.dns}",
                            "--log-dir", str(self.logs), "--grace", "2", *flags)
        self.proc = start_deliver(argv, self.smtp, self.log_path)
        # the HTTP API starts after the SMTP listener; the start line after both
        until_sync(lambda: "egress deliver: smtp" in self.log_path.read_text(), 30,
                   "the start line")

    @property
    def log_path(self) -> Path:
        return self.tmp / f"deliver-{self.runs}.log"

    def submit(self, recipients: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as client:
            for n, rcpt in enumerate(recipients):
                client.sendmail("s@sender.test", [rcpt], message(n, rcpt))

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.log_path.read_text()
        return self.log_path.read_text()

    def kill_if_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[Run, SinkServer, Path]]:
    with DnsServer(zone_for()) as dns, SinkServer(reject_recipients={PUSH: PUSHBACK}) as sink:
        policy = tmp_path / "policy.py"
        policy.write_text(POLICY.format(port=sink.port))
        r = Run(tmp_path, policy, dns.port)
        try:
            yield r, sink, policy
        finally:
            r.kill_if_alive()


def _fired(r: Run) -> bool:
    return bool(r.api(RESOLVE)["shaping"]["in_force"])


def _replayed(spool: Path, policy: Path, out: Path, *flags: str) -> list[dict[str, Any]]:
    with redirect_stdout(io.StringIO()):
        assert main(["replay", str(spool), "--policy", str(policy), "--out", str(out),
                     "--json", *flags]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["shaping"]["files"], comparison["shaping"]
    lines = (out / "actual_records.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _check_text(*args: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["check", *args]) == 0
    return out.getvalue()


def _check(*args: str) -> dict[str, Any]:
    return json.loads(_check_text(*args, "--json"))  # type: ignore[no-any-return]


def test_replay_restart_and_check_use_the_shaping_the_spool_keeps(
        run: tuple[Run, SinkServer, Path], tmp_path: Path) -> None:
    r, sink, policy = run
    shaping = tmp_path / "shaping.toml"
    shaping.write_text(RULE)
    r.start("--shaping", str(shaping))
    r.submit([PUSH])
    until_sync(lambda: _fired(r), 30, "the rule fired")
    r.submit([f"u{i}@example.com" for i in range(6)])
    until_sync(lambda: len(sink.messages) >= 6, 30, "6 delivered")
    r.stop()
    live = list(read_records(r.logs))
    assert [x["event"] for x in live if x["type"] == "Shaping"] == ["fired"]

    # the spool keeps a private copy of the file and the list of what is in force
    folder = r.spool / "shaping"
    manifest = json.loads((folder / "files.json").read_text())
    assert [e["file"] for e in manifest["files"]] == [str(shaping)]
    assert (folder / manifest["files"][0]["copy"]).read_text() == RULE
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {f.stat().st_mode & 0o777 for f in folder.iterdir()} == {0o600}

    # replay: the live records exactly, from the spool's copies and from --shaping
    assert _replayed(r.spool, policy, tmp_path / "r1") == live
    assert _replayed(r.spool, policy, tmp_path / "r2", "--shaping", str(shaping)) == live
    try:  # the control: without the shaping files the journal tells another story
        unshaped = actual_outcome(r.spool, Policy.from_file(policy))[1]
    except ReplayError as exc:  # refusing to replay is another story too
        unshaped = [{"refused": str(exc)}]
    assert unshaped != live

    # a restart without --shaping, the original file gone: the spool's copies
    shaping.unlink()
    r.start()
    said = r.log_path.read_text()
    assert (f"shaping files from the spool (no --shaping given): {shaping} "
            f"(copies in {folder})") in said
    shown = r.api(RESOLVE)
    assert shown["path_config"]["connection_limit"] == 1
    assert [e["rule"] for e in shown["shaping"]["in_force"]] == ["default#0"]
    r.submit([PUSH])  # the rule still watches: a new match extends the firing
    until_sync(lambda: r.api(RESOLVE)["shaping"]["in_force"][0]["until"]
               > shown["shaping"]["in_force"][0]["until"], 30, "the firing extended")

    # egress check --spool finds the files in the spool, and the rule in force
    report = _check(str(policy), "--spool", str(r.spool))
    assert report["spool_shaping"]["files"] == [str(shaping)]
    assert report["spool_shaping"]["used"] is True
    [p] = report["domains"][0]["paths"]
    assert p["egress_path"]["connection_limit"] == 1
    assert [e["rule"] for e in p["in_force"]] == ["default#0"]
    text = _check_text(str(policy), "--spool", str(r.spool))
    assert f"shaping files kept in the spool: {shaping}\n" in text
    copy = str(folder / manifest["files"][0]["copy"])
    text = _check_text(str(policy), "--spool", str(r.spool), "--shaping", copy)
    assert f"shaping files kept in the spool (not used: --shaping given): {shaping}\n" in text
    r.stop()

    # both runs, one journal: the replay still gives every record the logs hold
    everything = list(read_records(r.logs))
    assert [x["event"] for x in everything if x["type"] == "Shaping"] == ["fired", "extended"]
    assert _replayed(r.spool, policy, tmp_path / "r3") == everything
