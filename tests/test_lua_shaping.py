"""KumoMTA's ``policy-extras.shaping`` helper in a Lua policy (engine/lua_shaping.py).

The helper's interface is KumoMTA's assets/policy-extras/shaping.lua
(``shaping:setup(files)``, ``shaping:setup_with_automation { ... }`` returning
``get_egress_path_config`` and ``setup_publish``); the implementation is
egress's: the files load into the policy's shaping and the automation runs in
the engine.  The twin of a Lua policy using the helper is the same files given
to a Python policy as ``shaping = [...]``: both must simulate identically.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import EnableTls, make_egress_path
from engine.errors import PolicyError
from engine.lua_shaping import DEFAULT_FILE
from engine.policy import Policy
from engine.shaping_load import load_shaping
from sim.result import run
from sim.scenario import Scenario

pytest.importorskip("lupa")

SHAPING = r'''
["default"]
connection_limit = 8

["push.test"]
mx_rollup = false
max_deliveries_per_connection = 40

[["default".automation]]
regex = 'Messages from \d+\.\d+\.\d+\.\d+ temporarily deferred'
action = [{SetConfig={name="connection_limit", value=1}}]
duration = "20m"
'''

HELPER_POLICY = '''
local kumo = require 'kumo'
local shaping = require 'policy-extras.shaping'
local shaper = shaping:setup_with_automation {
  publish = { 'http://127.0.0.1:8008' },
  subscribe = { 'http://127.0.0.1:8008' },
  no_default_files = true,
  extra_files = { 'shaping.toml' },
}
kumo.on('init', function() shaper.setup_publish() end)
kumo.on('get_egress_path_config', shaper.get_egress_path_config)
'''

SCENARIO = '''
name = "pushback"
seed = 3
horizon = "2h"
sample_interval = "10s"
{policy}

[[traffic]]
domain = "push.test"
rate = "5/s"
duration = "40m"

[domains."push.test"]
mx = ["mx.push.test"]

[hosts."mx.push.test"]
max_connections = 50

[[hosts."mx.push.test".outages]]
start = "10m"
end = "20m"
mode = "tempfail"
probability = 0.3
reply = "421 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred"
'''


def _write(tmp: Path, policy: str = HELPER_POLICY, shaping: str = SHAPING) -> Path:
    (tmp / "shaping.toml").write_text(shaping)
    (tmp / "init.lua").write_text(policy)
    return tmp / "init.lua"


def test_helper_simulates_as_its_python_twin_with_the_rule_firing(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "lua.toml").write_text(SCENARIO.format(policy='policy = "init.lua"'))
    (tmp_path / "py.toml").write_text(SCENARIO.format(policy='shaping = ["shaping.toml"]'))
    lua = run(Scenario.from_toml(tmp_path / "lua.toml"))
    py = run(Scenario.from_toml(tmp_path / "py.toml"))
    fired = [r for r in lua.records if r["type"] == "Shaping" and r["event"] == "fired"]
    assert fired, "the automation rule loaded through the helper never fired"
    assert lua.records == py.records
    differ = {k for k in lua.summary if lua.summary[k] != py.summary.get(k)}
    assert differ == {"scenario_hash"}  # the two scenario files differ by one line


def test_setup_without_automation_loads_values_but_no_rule_acts(tmp_path: Path) -> None:
    _write(tmp_path, policy='''
local kumo = require 'kumo'
local shaping = require 'policy-extras.shaping'
kumo.on('get_egress_path_config', shaping:setup { 'shaping.toml' })
''')
    policy = Policy.from_file(tmp_path / "init.lua")
    # KumoMTA's setup keeps its shipped default file: its [default] values apply
    assert policy.shaping.files == (DEFAULT_FILE, "shaping.toml")
    cfg = policy.egress_path_config("push.test", "s", "mx.push.test")
    assert cfg.connection_limit == 8 and cfg.max_deliveries_per_connection == 40
    assert cfg.enable_tls is EnableTls.Opportunistic  # from the shipped default file
    assert policy.shaping.rules("push.test", "mx.push.test") == []
    (tmp_path / "s.toml").write_text(SCENARIO.format(policy='policy = "init.lua"'))
    result = run(Scenario.from_toml(tmp_path / "s.toml"))
    assert not [r for r in result.records if r["type"] == "Shaping"]


def test_the_shipped_default_file_is_kumomtas() -> None:
    here = Path(__file__).resolve().parent
    ours = (here.parent / "engine" / "data" / "kumomta_shaping.toml").read_text().splitlines()
    copy = (here / "data" / "kumomta_shaping.toml").read_text().splitlines()
    assert ours[4:] == copy[4:]  # past the attribution header, byte for byte


def test_skip_make_lets_the_policy_change_a_value_and_the_change_wins(tmp_path: Path) -> None:
    """KumoMTA's helper takes skip_make to hand back the parameters; a value the
    hook changes must survive the values the engine adds once the MX is known
    (a provider matched by MXSuffix)."""
    provider = SHAPING + '''
[provider."pushy"]
match = [{MXSuffix = ".push.test"}]
max_message_rate = "5/s"
idle_timeout = "7s"
'''
    _write(tmp_path, shaping=provider, policy='''
local kumo = require 'kumo'
local shaping = require 'policy-extras.shaping'
local shaper = shaping:setup_with_automation {
  no_default_files = true, publish = { 'http://127.0.0.1:8008' }, extra_files = { 'shaping.toml' },
}
kumo.on('get_egress_path_config', function(domain, source, site)
  local params = shaper.get_egress_path_config(domain, source, site, true)
  params.connection_limit = 2
  params.max_message_rate = '50/s'
  return kumo.make_egress_path(params)
end)
''')
    policy = Policy.from_file(tmp_path / "init.lua")
    cfg = policy.egress_path_config("push.test", "s", "mx.push.test")
    assert (cfg.connection_limit, str(cfg.max_message_rate)) == (2, "50/s")
    assert cfg.max_deliveries_per_connection == 40
    # the engine's view, with the MX known: the provider adds idle_timeout, the
    # hook's own values stay (its max_message_rate is not the provider's 5/s)
    shaped = policy.shaping.overlay(cfg, "push.test", "s", "mx.push.test", ["mx.push.test"])
    assert shaped.idle_timeout == 7.0
    assert (shaped.connection_limit, str(shaped.max_message_rate)) == (2, "50/s")
    # a plain overlay (shaping given with --shaping) lays every value on
    plain = load_shaping([("shaping.toml", provider)])
    over = plain.overlay(make_egress_path(connection_limit=2, max_message_rate="50/s"),
                         "push.test", "s", "mx.push.test", ["mx.push.test"])
    assert (over.connection_limit, str(over.max_message_rate)) == (8, "5/s")


def test_a_json_shaping_file_loads_as_kumomtas_usage_note_shows(tmp_path: Path) -> None:
    (tmp_path / "shaping.json").write_text('''{
  // comments are allowed, as KumoMTA's JSON
  "gmail.com": { "connection_limit": 3, "sources": { "source-0": { "connection_limit": 5 } } }
}''')
    (tmp_path / "init.lua").write_text('''
local kumo = require 'kumo'
local shaping = require 'policy-extras.shaping'
kumo.on('get_egress_path_config', shaping:setup('shaping.json'))
''')
    policy = Policy.from_file(tmp_path / "init.lua")
    assert policy.egress_path_config("gmail.com", "source-1", "gmail.com").connection_limit == 3
    assert policy.egress_path_config("gmail.com", "source-0", "gmail.com").connection_limit == 5


@pytest.mark.parametrize(("lua", "expected"), [
    ("shaping:setup_with_automation { extra_filez = { 'shaping.toml' } }",
     r"init.lua:3: .*unknown option 'extra_filez'; did you mean 'extra_files'\?"),
    ("shaping:setup_with_automation { extra_files = { 'missing.toml' } }",
     r"init.lua:3: .*missing.toml"),
    ("shaping:setup 'shaping.toml'\nshaping:setup 'shaping.toml'",
     r"init.lua:4: shaping module has already been configured"),
    ("shaping:setup_with_automation 'shaping.toml'",
     r"init.lua:3: shaping:setup_with_automation: expected a table of options"),
])
def test_helper_errors_name_the_line(tmp_path: Path, lua: str, expected: str) -> None:
    _write(tmp_path, policy=f"local kumo = require 'kumo'\nlocal shaping = require "
                            f"'policy-extras.shaping'\n{lua}\n")
    with pytest.raises(PolicyError, match=expected):
        Policy.from_file(tmp_path / "init.lua")


def test_other_policy_extras_modules_are_refused_by_name(tmp_path: Path) -> None:
    _write(tmp_path, policy="local sources = require 'policy-extras.sources'\n")
    with pytest.raises(PolicyError, match=r"policy-extras\.sources"):
        Policy.from_file(tmp_path / "init.lua")


def test_check_shows_the_helpers_files_and_merges_cli_shaping(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "more.toml").write_text('["push.test"]\nmx_rollup = false\nconnection_limit = 4\n')
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check", str(tmp_path / "init.lua"),
         "--domain", "push.test", "--shaping", str(tmp_path / "more.toml"), "--json"],
        capture_output=True, text=True, timeout=120, check=True)
    path = json.loads(out.stdout)["domains"][0]["paths"][0]
    assert path["shaping"]["files"] == ["shaping.toml", str(tmp_path / "more.toml")]
    assert path["egress_path"]["connection_limit"] == 4  # --shaping merged over the helper's
    assert path["egress_path"]["max_deliveries_per_connection"] == 40
