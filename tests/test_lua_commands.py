"""A Lua policy through every command that takes a policy, and its Python twin.

``egress check``, ``egress simulate`` of a scenario naming ``policy =
"init.lua"``, ``egress lab --run``, and ``egress deliver`` (a subprocess,
listening where the policy's ``kumo.start_esmtp_listener`` says) followed by
``egress replay`` of its spool.  examples/kumomta/init.lua and its twin
examples/kumomta/twin.py give identical records, summaries and hook calls.
"""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.policy import Policy
from sim.scenario import Scenario
from tests.support.deliver_process import wait_listening
from tests.support.dns_server import DnsServer
from tests.support.live_harness import free_port, message, zone_for
from tests.support.smtp_servers import SinkServer

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "kumomta" / "init.lua"
TWIN = ROOT / "examples" / "kumomta" / "twin.py"
SCENARIO = ROOT / "scenarios" / "kumomta_policy.toml"


def check_json(policy: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(["check", str(policy), "--json", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    out.pop("policy")
    return out


def test_check_prints_the_same_as_for_the_python_twin(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--domain", "gmail.com", "--domain", "yahoo.com", "--tenant", "acme",
                  "--campaign", "spring-news"],
                 ["--domain", "example.org", "--tenant", "shop", "--campaign", "receipts"],
                 ["--domain", "hotmail.com", "--source", "ip-2"]):
        lua = check_json(EXAMPLE, capsys, *args)
        assert lua == check_json(TWIN, capsys, *args)
    assert lua["domains"][0]["paths"], lua


def test_simulating_the_lua_policy_and_its_twin_gives_identical_output(tmp_path: Path) -> None:
    lua_dir, py_dir = tmp_path / "lua", tmp_path / "py"
    assert main(["simulate", str(SCENARIO), "--out", str(lua_dir), "--quiet", "--no-plot"]) == 0
    assert main(["simulate", str(SCENARIO), "--out", str(py_dir), "--quiet", "--no-plot",
                 "--set", "policy=../examples/kumomta/twin.py"]) == 0
    lua_records = (lua_dir / "records.jsonl").read_bytes()
    assert lua_records == (py_dir / "records.jsonl").read_bytes()
    summary = json.loads((lua_dir / "summary.json").read_text())
    twin = json.loads((py_dir / "summary.json").read_text())
    # The scenario's hash covers its tables, policy file included, so the twin
    # run (another policy file) differs there by design, and only there.
    assert summary.pop("scenario_hash") != twin.pop("scenario_hash")
    assert summary == twin
    assert summary["delivered"] > 3000 and summary["still_queued"] == 0
    # Both sources of the weighted pool carried traffic.
    sources = {json.loads(line)["egress_source"] for line in lua_records.splitlines()
               if b'"Delivery"' in line}
    assert sources == {"ip-1", "ip-2"}


def counted(policy: Policy, calls: list[tuple[Any, ...]]) -> Policy:
    hooks: dict[str, Callable[..., Any]] = policy._hooks  # the test looks inside on purpose
    for name, fn in list(hooks.items()):
        def wrapper(*args: Any, _fn: Callable[..., Any] = fn, _name: str = name) -> Any:
            calls.append((_name, *args))
            return _fn(*args)
        hooks[name] = wrapper
    return policy


def test_hooks_are_called_with_the_same_arguments_as_often_as_python_hooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sim

    scenario = Scenario.from_toml(SCENARIO, ["traffic[0].messages=300"])
    runs: dict[Path, list[tuple[Any, ...]]] = {EXAMPLE: [], TWIN: []}
    for path, calls in runs.items():
        monkeypatch.setattr(Scenario, "policy",
                            lambda self, p=path, c=calls: counted(Policy.from_file(p), c))
        sim.run(scenario)
    assert runs[EXAMPLE] == runs[TWIN]
    assert {c[0] for c in runs[EXAMPLE]} == {"get_egress_path_config", "get_queue_config",
                                             "get_egress_source", "get_egress_pool"}


TINY_LUA = """
local kumo = require 'kumo'
kumo.on('get_egress_path_config', function(domain, source_name, site_name)
  return kumo.make_egress_path { connection_limit = 2, enable_tls = 'Disabled' }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { retry_interval = '1s' }
end)
"""

TINY = """
name = "tiny_lua"
seed = 5
horizon = "30s"
policy = "tiny.lua"

[[traffic]]
domains = { "one.test" = 1, "other.test" = 1 }
messages = 20
size = "1KB"

[domains."one.test"]
mx = ["mx.one.test"]

[domains."other.test"]
mx = ["mx.one.test"]

[host_defaults]
command_latency = "1ms"
data_latency = "3ms"

[hosts."mx.one.test"]
"""


def test_the_lab_delivers_a_scenario_whose_policy_is_lua(tmp_path: Path) -> None:
    (tmp_path / "tiny.lua").write_text(TINY_LUA)
    (tmp_path / "tiny.toml").write_text(TINY)
    out = tmp_path / "lab"
    assert main(["lab", str(tmp_path / "tiny.toml"), "--run", "--out", str(out),
                 "--no-plot"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["delivered"] == 20 and summary["realisation"] == "lab"


DELIVER_LUA = """
local kumo = require 'kumo'
local limits = require 'limits'
local data = kumo.serde.toml_load 'data/limits.toml'
kumo.on('init', function()
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:{listen}' }}
  kumo.define_spool {{ name = 'data', path = '/var/spool/kumomta/data' }}
end)
kumo.on('get_egress_path_config', function(domain, source_name, site_name)
  return kumo.make_egress_path {{
    smtp_port = {port}, prohibited_hosts = {{}}, enable_tls = 'Disabled',
    enable_mta_sts = false, connection_limit = limits.connections + data.extra,
  }}
end)
"""


def test_deliver_listens_where_the_lua_policy_says_and_replay_reads_its_spool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listen = free_port()
    spool = tmp_path / "spool"
    with DnsServer(zone_for()) as dns, SinkServer() as sink:
        policy = tmp_path / "init.lua"
        policy.write_text(DELIVER_LUA.format(listen=listen, port=sink.port))
        (tmp_path / "limits.lua").write_text("return { connections = 3 }\n")
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "limits.toml").write_text("extra = 1\n")
        out = tmp_path / "deliver.out"
        args = [sys.executable, "-m", "engine.cli", "deliver", "--policy", str(policy),
                "--spool", str(spool), "--resolver", f"127.0.0.1:{dns.port}"]
        with open(out, "wb") as log:
            proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_listening(proc, listen, out, timeout=20)
            with smtplib.SMTP("127.0.0.1", listen, timeout=5) as client:
                for i in range(3):
                    client.sendmail("s@sender.test", [f"r{i}@example.com"], message(i))
            sink.wait_for(3, timeout=10)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0, out.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert f"smtp 127.0.0.1:{listen}" in out.read_text()
    assert (spool / "policy.lua").read_text() == policy.read_text()
    assert not (spool / "policy.py").exists()
    # the files beside it that the policy read are kept with it
    assert (spool / "limits.lua").read_text() == "return { connections = 3 }\n"
    assert (spool / "data" / "limits.toml").read_text() == "extra = 1\n"
    assert Policy.from_file(spool / "policy.lua").files == ("limits.lua", "data/limits.toml")
    other = tmp_path / "other.lua"
    other.write_text(DELIVER_LUA.format(listen=listen, port=25))
    capsys.readouterr()
    assert main(["replay", str(spool), "--policy", str(other), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["original_policy"].endswith("policy.lua")
    assert data["actual"]["delivered"] == data["simulated"]["delivered"] == 3
