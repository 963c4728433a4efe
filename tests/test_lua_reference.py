"""Every Lua example of the make_egress_path reference page, run as a policy,
gives the EgressPathConfig its Python spelling gives.

The page (shared/seed/000_981d81465d766780.txt) shows each example cut after
its key; here each is completed (closing braces) and wrapped in its
``kumo.on(...)`` exactly as written there, including the AUTH examples'
two-argument ``function(domain, site_name)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Policy, make_egress_path
from engine.throttle import parse_throttle

HEAD = "local kumo = require 'kumo'\n"


def lua_policy(tmp_path: Path, body: str) -> Policy:
    path = tmp_path / "init.lua"
    path.write_text(HEAD + body)
    return Policy.from_file(path)


def path_hook(keys: str) -> str:
    return (
        "kumo.on('get_egress_path_config', function(domain, source_name, site_name)\n"
        "  return kumo.make_egress_path {\n"
        f"    {keys}\n"
        "  }\n"
        "end)\n"
    )


AUTH_INLINE = """
kumo.on('get_egress_path_config', function(domain, site_name)
  return kumo.make_egress_path {
    enable_tls = 'Required',
    smtp_auth_plain_username = 'scott',
    -- The password can be any keysource value
    smtp_auth_plain_password = {
      key_data = 'tiger',
    },
  }
end)
"""

AUTH_VAULT = """
kumo.on('get_egress_path_config', function(domain, site_name)
  return kumo.make_egress_path {
    enable_tls = 'Required',
    smtp_auth_plain_username = 'scott',
    -- The password can be any keysource value.
    -- Here we are loading the credential for the domain
    -- from HashiCorp vault
    smtp_auth_plain_password = {
      vault_mount = 'secret',
      vault_path = 'smtp-auth/' .. domain,
    },
  }
end)
"""

# (id, Lua policy body, the Python config it must equal for domain example.com)
EXAMPLES = [
    ("connection_limit", path_hook("connection_limit = 32,"),
     make_egress_path(connection_limit=32)),
    ("enable_tls", path_hook("enable_tls = 'Opportunistic',"),
     make_egress_path(enable_tls="Opportunistic")),
    ("idle_timeout", path_hook("idle_timeout = 60,"), make_egress_path(idle_timeout=60)),
    ("max_connection_rate", path_hook("max_connection_rate = '100/min',"),
     make_egress_path(max_connection_rate="100/min")),
    ("smtp_auth_plain_password key_data", AUTH_INLINE,
     make_egress_path(enable_tls="Required", smtp_auth_plain_username="scott",
                      smtp_auth_plain_password={"key_data": "tiger"})),
    ("smtp_auth_plain_password vault", AUTH_VAULT,
     make_egress_path(enable_tls="Required", smtp_auth_plain_username="scott",
                      smtp_auth_plain_password={"vault_mount": "secret",
                                                "vault_path": "smtp-auth/example.com"})),
]


@pytest.mark.parametrize(("body", "expected"), [(b, e) for _, b, e in EXAMPLES],
                         ids=[i for i, _, _ in EXAMPLES])
def test_reference_example_gives_the_python_config(
    tmp_path: Path, body: str, expected: object
) -> None:
    policy = lua_policy(tmp_path, body)
    got = policy.egress_path_config("example.com", "unspecified", "mx.example.com")
    assert got == expected
    assert got.to_dict() == expected.to_dict()  # type: ignore[attr-defined]


def test_the_dane_example_init_runs_and_its_resolver_call_is_recorded(tmp_path: Path) -> None:
    # The page's enable_dane section configures the resolver in init; egress
    # maps that call to the deliver command's --resolver and records it.
    body = """
kumo.on('init', function()
    kumo.dns.configure_unbound_resolver {
        options = {
            -- Enable DNSSEC
            validate = true,
        },
        -- By default, if you omit `name_servers`, unbound will
        -- resolve via the root resolvers.
        -- We strongly recommend deploying local caching nameservers
        -- and referencing them here:
        -- name_servers = { '' },
    }
end)
""" + path_hook("enable_dane = true,")
    policy = lua_policy(tmp_path, body)
    assert policy.settings == {
        "dns.configure_unbound_resolver": [{"options": {"validate": True}}]
    }
    got = policy.egress_path_config("example.com", "unspecified", "x")
    assert got == make_egress_path(enable_dane=True)


THROTTLES = ["10/s", "10/sec", "10/second", "50/m", "50/min", "50/minute", "1,000/hr",
             "1_000/h", "1000/hour", "10_000/d", "10,000/day"]


@pytest.mark.parametrize("spelling", THROTTLES)
def test_every_throttle_spelling_of_the_page_reads_as_in_python(
    tmp_path: Path, spelling: str
) -> None:
    policy = lua_policy(tmp_path, path_hook(
        f"max_connection_rate = '{spelling}', max_message_rate = '{spelling}',"))
    got = policy.egress_path_config("example.com", "unspecified", "x")
    assert got.max_connection_rate == got.max_message_rate == parse_throttle(spelling)
    assert got == make_egress_path(max_connection_rate=spelling, max_message_rate=spelling)


@pytest.mark.parametrize(("lua", "python"), [
    ("connect_timeout = '2min'", {"connect_timeout": "2min"}),
    ("data_timeout = 45", {"data_timeout": 45}),
    ("rset_timeout = 2.5", {"rset_timeout": 2.5}),
    ("ehlo_timeout = '5 minutes'", {"ehlo_timeout": "5 minutes"}),
    ("prohibited_hosts = {}", {"prohibited_hosts": []}),
    ("skip_hosts = { '10.0.0.0/8', '192.0.2.7' }", {"skip_hosts": ["10.0.0.0/8", "192.0.2.7"]}),
    ("additional_connection_limits = { ['shared-ip'] = 100 }",
     {"additional_connection_limits": {"shared-ip": 100}}),
    ("additional_message_rate_throttles = { x = '10/s' }",
     {"additional_message_rate_throttles": {"x": "10/s"}}),
    ("rustls_cipher_suites = { 'TLS13_AES_256_GCM_SHA384' }",
     {"rustls_cipher_suites": ["TLS13_AES_256_GCM_SHA384"]}),
    ("openssl_options = 'NO_TICKET|NO_COMPRESSION'",
     {"openssl_options": "NO_TICKET|NO_COMPRESSION"}),
    ("smtp_auth_plain_username = 'u', smtp_auth_plain_password = '/etc/pw'",
     {"smtp_auth_plain_username": "u", "smtp_auth_plain_password": "/etc/pw"}),
    ("smtp_auth_plain_username = 'u', smtp_auth_plain_password = { key = '/etc/pw' }",
     {"smtp_auth_plain_username": "u", "smtp_auth_plain_password": "/etc/pw"}),
    ("suspended = true, enable_mta_sts = false", {"suspended": True, "enable_mta_sts": False}),
])
def test_lua_values_map_to_the_python_values(
    tmp_path: Path, lua: str, python: dict[str, object]
) -> None:
    policy = lua_policy(tmp_path, path_hook(lua + ","))
    assert policy.egress_path_config("example.com", "s", "x") == make_egress_path(**python)
