"""engine.lua_policy / engine.lua_kumo: a KumoMTA init.lua loaded as a Policy.

Hooks and their arguments, makers and plain tables, ``require`` beside the
file, the helpers (memoize, serde), the mapped and refused ``kumo`` calls,
errors naming the file and the line, and the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import ConfigError, Policy, PolicyError, make_egress_path
from engine.lua_kumo import listen_address
from engine.queue_config import EgressPool, make_egress_source, make_queue_config

HEAD = "local kumo = require 'kumo'\n"


def load(tmp_path: Path, body: str, name: str = "init.lua") -> Policy:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return Policy.from_file(path)


def refused(tmp_path: Path, body: str, *, call: bool = False) -> str:
    with pytest.raises(PolicyError) as info:
        policy = load(tmp_path, body)
        if call:
            policy.egress_path_config("example.com", "ip-1", "mx.example.com")
    return str(info.value)


def test_hooks_get_the_python_hooks_arguments_and_build_the_same_values(tmp_path: Path) -> None:
    policy = load(tmp_path, """
calls = {}
kumo.on('get_egress_path_config', function(domain, source_name, site_name)
  table.insert(calls, domain .. '|' .. source_name .. '|' .. site_name)
  return kumo.make_egress_path { connection_limit = #calls }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    egress_pool = tenant .. '-' .. campaign .. '-' .. routing_domain, max_age = '1d' }
end)
kumo.on('get_egress_source', function(name)
  return kumo.make_egress_source { name = name, source_address = '192.0.2.1', remote_port = 2525 }
end)
kumo.on('get_egress_pool', function(name)
  return kumo.make_egress_pool {
    name = name, entries = { { name = 'a', weight = 3 }, { name = 'b' } } }
end)
""")
    assert policy.egress_path_config("a.com", "ip-1", "mx.a.com") == make_egress_path(
        connection_limit=1)
    assert policy.egress_path_config("b.com", "ip-2", "mx.b.com").connection_limit == 2
    assert policy.queue_config("a.com", "t", "c", "r") == make_queue_config(
        egress_pool="t-c-r", max_age="1d")
    assert policy.egress_source("ip-1") == make_egress_source(
        "ip-1", source_address="192.0.2.1", remote_port=2525)
    assert policy.egress_pool("p") == EgressPool(name="p", entries=(("a", 3), ("b", 1)))
    assert policy.source is not None and policy.source.endswith("init.lua")


def test_a_plain_table_is_built_with_the_hooks_maker(tmp_path: Path) -> None:
    policy = load(tmp_path, """
kumo.on('get_egress_path_config', function() return { connection_limit = 3 } end)
kumo.on('get_queue_config', function() return { retry_interval = '5min' } end)
""")
    assert policy.egress_path_config("a", "b", "c") == make_egress_path(connection_limit=3)
    assert policy.queue_config("a", "", "", "").retry_interval == 300.0


def test_init_runs_once_after_the_file_and_mapped_calls_are_recorded(tmp_path: Path) -> None:
    policy = load(tmp_path, """
local order = {}
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '0.0.0.0:2526', relay_hosts = { '127.0.0.1' } }
  kumo.define_spool { name = 'data', path = '/var/spool/kumo/data' }
  kumo.configure_local_logs { log_dir = '/var/log/kumo' }
  kumo.start_http_listener { listen = '127.0.0.1:8000' }
  kumo.configure_redis_throttles { node = 'redis://localhost/' }
  table.insert(order, 'init')
end)
table.insert(order, 'file')
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path { connection_limit = #order }
end)
""")
    assert policy.egress_path_config("a", "b", "c").connection_limit == 2
    assert set(policy.settings) == {"start_esmtp_listener", "define_spool",
                                    "configure_local_logs", "start_http_listener",
                                    "configure_redis_throttles"}
    assert policy.settings["start_esmtp_listener"] == [
        {"listen": "0.0.0.0:2526", "relay_hosts": ["127.0.0.1"]}]
    assert listen_address(policy.settings) == "0.0.0.0:2526"
    assert listen_address({}) is None


def test_require_finds_the_policys_own_modules_beside_it(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "limits.lua").write_text("return { gmail = 7 }\n")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "init.lua").write_text("return { pool = 'bulk' }\n")
    policy = load(tmp_path, """
local limits = require 'lib.limits'
local shared = require 'shared'
kumo.on('get_egress_path_config', function() return kumo.make_egress_path {
  connection_limit = limits.gmail } end)
kumo.on('get_queue_config', function() return kumo.make_queue_config {
  egress_pool = shared.pool } end)
""")
    assert policy.egress_path_config("a", "b", "c").connection_limit == 7
    assert policy.queue_config("a", "", "", "").egress_pool == "bulk"
    # what a copy of the policy needs beside it
    assert policy.files == ("lib/limits.lua", "shared/init.lua")


def test_serde_helpers_and_their_older_spellings(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text('{"limit": 4, /* a comment */ "list": [1, 2]} # end\n')
    (tmp_path / "data.toml").write_text('limit = 5\n[nested]\nrate = "10/s"\n')
    policy = load(tmp_path, """
local j = kumo.serde.json_load 'data.json'
local j2 = kumo.json_load 'data.json'
local t = kumo.serde.toml_load 'data.toml'
local t2 = kumo.toml_load 'data.toml'
local p = kumo.json_parse('{"x": "a // not a comment"}')
local p2 = kumo.serde.toml_parse('y = 3')
assert(j.limit == 4 and #j.list == 2 and j2.limit == 4 and t2.limit == 5)
assert(p.x == 'a // not a comment' and p2.y == 3)
encoded = kumo.serde.json_encode { a = 1 }
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path {
    connection_limit = j.limit + t.limit, max_message_rate = t.nested.rate }
end)
""")
    cfg = policy.egress_path_config("a", "b", "c")
    assert cfg == make_egress_path(connection_limit=9, max_message_rate="10/s")
    assert policy.files == ("data.json", "data.toml")


def test_memoize_caches_per_arguments_within_its_capacity(tmp_path: Path) -> None:
    policy = load(tmp_path, """
local calls = 0
local lookup = kumo.memoize(function(domain)
  calls = calls + 1
  return calls
end, { name = 'x', ttl = '5 minutes', capacity = 2 })
kumo.on('get_egress_path_config', function(domain)
  lookup(domain)
  return kumo.make_egress_path { connection_limit = calls }
end)
""")
    limits = [policy.egress_path_config(d, "s", "x").connection_limit
              for d in ["a", "a", "b", "a", "c", "b", "b"]]
    # a b miss; a hit; c evicts b (a was used last); b misses again.
    assert limits == [1, 1, 2, 2, 3, 4, 4]
    msg = refused(tmp_path, "kumo.memoize(function() end, { name = 'x', ttl = '1m' })")
    assert "init.lua:2: memoize: the parameters table has no 'capacity'" in msg


def test_a_wrong_key_is_the_python_config_error_with_the_lua_line(tmp_path: Path) -> None:
    msg = refused(tmp_path, """
kumo.on('get_egress_path_config', function(domain, source_name, site_name)
  return kumo.make_egress_path {
    conection_limit = 3,
  }
end)
""", call=True)
    python = ""
    try:
        make_egress_path(conection_limit=3)
    except ConfigError as exc:
        python = str(exc)
    assert python == "make_egress_path: unknown key 'conection_limit'; did you mean " \
        "'connection_limit'?"
    assert f"raised ConfigError: init.lua:4: {python}" in msg
    assert "hook 'get_egress_path_config' (Lua function at init.lua:3)" in msg
    with pytest.raises(PolicyError) as info:
        load(tmp_path, "kumo.on('get_egress_path_config', function() "
             "return kumo.make_egress_path { connection_limit = 0 } end)"
             ).egress_path_config("a", "b", "c")
    assert isinstance(info.value.__cause__, ConfigError)


@pytest.mark.parametrize(("body", "expected"), [
    ("local x = kumo.glob('/etc/*')",
     "init.lua:2: kumo.glob is not supported by egress"),
    ("kumo.dns.lookup_mx('example.com')",
     "init.lua:2: kumo.dns.lookup_mx is not supported by egress"),
    ("local v = kumo.serde.yaml_load('x.yaml')",
     "init.lua:2: kumo.serde.yaml_load is not supported by egress"),
    ("kumo.on('smtp_server_message_received', function() end)",
     "init.lua:2: kumo.on: event \"smtp_server_message_received\" is not supported by egress"),
    ("kumo.on('get_queue_config', 7)", "kumo.on(\"get_queue_config\", ...): expected a function"),
    ("local x = = 2", "init.lua:2: unexpected symbol near '='"),
    ("\nlocal t = nil\nprint(t.field)", "init.lua:4: attempt to index a nil value (local 't')"),
    ("error('policy says no')", "init.lua:2: policy says no"),
    ("require 'policy-extras.policy_utils'",
     "require 'policy-extras.policy_utils': KumoMTA's policy-extras helpers are not provided "
     "by egress"),
    ("require 'missing_module'", "module 'missing_module' not found"),
    ("kumo.make_egress_pool { entries = {} }", "make_egress_pool: the table has no 'name'"),
])
def test_errors_name_the_file_the_line_and_what_was_wrong(
    tmp_path: Path, body: str, expected: str
) -> None:
    msg = refused(tmp_path, body)
    assert expected in msg
    assert msg.startswith("policy file ") and "init.lua" in msg and "\n" not in msg


def test_a_lua_error_in_a_hook_names_the_hook_file_and_line(tmp_path: Path) -> None:
    msg = refused(tmp_path, """
kumo.on('get_egress_path_config', function(domain)
  if domain == 'example.com' then error('no paths for ' .. domain) end
end)
""", call=True)
    assert msg == ("hook 'get_egress_path_config' (Lua function at init.lua:3) called with "
                   "('example.com', 'ip-1', 'mx.example.com') raised PolicyError: init.lua:4: "
                   "no paths for example.com")


def test_a_module_error_names_the_module_file(tmp_path: Path) -> None:
    (tmp_path / "helpers.lua").write_text("local M = {}\nM.x = nil .. 'y'\nreturn M\n")
    msg = refused(tmp_path, "local h = require 'helpers'")
    assert "helpers.lua:2: attempt to concatenate a nil value" in msg


@pytest.mark.parametrize("body", [
    "os.execute('touch /tmp/egress-lua-escape')",
    "io.popen('id')",
    "os.remove('/tmp/x')",
    "os.rename('/tmp/x', '/tmp/y')",
    "os.exit(1)",
    "local f = io.open('/tmp/egress-lua-escape', 'w')",
    "local f = io.open('/tmp/egress-lua-escape', 'a+')",
    "io.output('/tmp/egress-lua-escape')",
    "io.write('x')",
    "local t = os.time()",
    "local c = os.clock()",
    "package.loadlib('libc.so.6', 'system')",
    "debug.getinfo(1)",
    "python.eval('1')",
    "local f = load(string.dump(function() return 1 end))()",
    "local f = load(string.dump(function() return 1 end), 'x', 'b')()",
    "require 'policy-extras.queue'",
    "local cfg = kumo.make_egress_path {}; local c = cfg.__class__",
])
def test_the_sandbox_has_no_process_file_writing_clock_or_python_access(
    tmp_path: Path, body: str
) -> None:
    refused(tmp_path, body)
    assert not Path("/tmp/egress-lua-escape").exists()


def test_reading_files_and_random_stay_available_and_repeatable(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("6\n")
    body = f"""
local f = io.open('{tmp_path / "n.txt"}')
local n = tonumber(f:read('l'))
f:close()
local r = math.random(1, 1000000)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path {{ connection_limit = n, max_ready = r }}
end)
"""
    first = load(tmp_path, body).egress_path_config("a", "b", "c")
    second = load(tmp_path, body, "again.lua").egress_path_config("a", "b", "c")
    assert first.connection_limit == 6 and first.max_ready == second.max_ready


def test_print_and_log_calls_do_not_write_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load(tmp_path, "print('hello')\nkumo.log_info('x', 1)\nkumo.log_warn('y')")
    assert capsys.readouterr().out == ""


def test_two_loads_do_not_share_state(tmp_path: Path) -> None:
    body = """
counter = (counter or 0) + 1
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path { connection_limit = counter } end)
"""
    a, b = load(tmp_path, body), load(tmp_path, body, "b.lua")
    assert a.egress_path_config("x", "y", "z").connection_limit == 1
    assert b.egress_path_config("x", "y", "z").connection_limit == 1


def test_json_encode_round_trips(tmp_path: Path) -> None:
    policy = load(tmp_path, """
local s = kumo.serde.json_encode_pretty { b = 2, a = { 1, 2 } }
local back = kumo.serde.json_parse(s)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path { connection_limit = back.b + back.a[2],
                                 provider_name = kumo.serde.json_encode { 'x' } } end)
""")
    cfg = policy.egress_path_config("x", "y", "z")
    assert cfg.connection_limit == 4 and json.loads(cfg.provider_name or "") == ["x"]
