"""make_queue_config's `protocol` (KumoMTA's smart host): accepted, stored, refused."""

from __future__ import annotations

import pickle

import pytest

from engine.errors import ConfigError
from engine.policy import Policy
from engine.protocol import SmartHost, SmtpProtocol
from engine.queue_config import make_queue_config

# The example of KumoMTA's make_queue_config/protocol page, in Python.
KUMO_EXAMPLE = {"smtp": {"mx_list": ["smart.host.local",
                                     {"name": "mx.example.com", "addr": "10.0.0.1"}]}}


def test_kumomta_example_is_accepted_and_stored_in_order() -> None:
    q = make_queue_config(protocol=KUMO_EXAMPLE)
    assert q.mx_list == (SmartHost("smart.host.local"), SmartHost("mx.example.com", "10.0.0.1"))
    assert q.to_dict()["protocol"] == KUMO_EXAMPLE


def test_address_literals_and_names_are_normalised() -> None:
    q = make_queue_config(protocol={"smtp": {"mx_list": ["[127.0.0.1]", "[::1]", "MX.Example."]}})
    assert q.mx_list == (SmartHost("[127.0.0.1]", "127.0.0.1"), SmartHost("[::1]", "::1"),
                         SmartHost("mx.example"))
    assert q.to_dict()["protocol"]["smtp"]["mx_list"] == ["[127.0.0.1]", "[::1]", "mx.example"]


def test_without_protocol_the_mx_set_is_resolved() -> None:
    q = make_queue_config()
    assert q.protocol is None and q.mx_list is None
    assert "protocol" not in q.to_dict()


def test_a_queue_config_with_protocol_stays_a_value() -> None:
    q = make_queue_config(protocol=KUMO_EXAMPLE, retry_interval="1min")
    same = make_queue_config(retry_interval="1min", protocol=KUMO_EXAMPLE)
    assert q == same and hash(q) == hash(same)
    assert pickle.loads(pickle.dumps(q)) == q
    changed = q.replace(max_age="1d")
    assert changed.mx_list == q.mx_list and changed.max_age == 86400.0
    assert isinstance(changed.protocol, SmtpProtocol)


def test_a_policy_returns_it_from_get_queue_config() -> None:
    policy = Policy()

    @policy.on("get_queue_config")
    def queue(domain: str, tenant: str, campaign: str, routing_domain: str):
        if domain == "localhost":
            return make_queue_config(protocol={"smtp": {"mx_list": ["[127.0.0.1]"]}})
        return make_queue_config()

    assert policy.queue_config("localhost", "", "", "").mx_list == (
        SmartHost("[127.0.0.1]", "127.0.0.1"),)
    assert policy.queue_config("example.com", "", "", "").mx_list is None


@pytest.mark.parametrize(("protocol", "message"), [
    ({"maildir": {"maildir_path": "/tmp"}}, "protocol: protocol 'maildir' is not supported"),
    ({"smtp": {"mx_list": []}}, "protocol.smtp.mx_list: empty"),
    ({"smtp": {}}, "protocol.smtp: {} is not valid (no mx_list)"),
    ({"smtp": {"mx_list": ["a.example"], "port": 25}}, "(unknown key 'port')"),
    ({"smtp": {"mx_list": "smart.host"}}, "protocol.smtp.mx_list: 'smart.host' is not valid"),
    ({"smtp": {"mx_list": ["127.0.0.1"]}},
     "mx_list[0]: '127.0.0.1' is not a valid host name (enclose an address in [])"),
    ({"smtp": {"mx_list": ["ok.example", "[10.0.0.300]"]}},
     "protocol.smtp.mx_list[1]: '[10.0.0.300]' is not valid; expected an IPv4 or IPv6"),
    ({"smtp": {"mx_list": [{"name": "mx.example"}]}},
     "mx_list[0]: {'name': 'mx.example'} is not valid; expected {'name': NAME, 'addr'"),
    ({"smtp": {"mx_list": [{"name": "mx.example", "addr": "nope"}]}},
     "protocol.smtp.mx_list[0].addr: 'nope' is not valid"),
    ({"smtp": {"mx_list": [{"name": "bad name", "addr": "10.0.0.1"}]}},
     "protocol.smtp.mx_list[0].name: 'bad name' is not a valid host name"),
    ({"smtp": {"mx_list": [42]}}, "protocol.smtp.mx_list[0]: 42 is not valid"),
    ("smtp", "protocol: 'smtp' is not valid"),
])
def test_bad_protocols_are_refused_naming_the_value(protocol: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_queue_config(protocol=protocol)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_misspelt_key_suggests_protocol() -> None:
    with pytest.raises(ConfigError, match="did you mean 'protocol'"):
        make_queue_config(protocoll=KUMO_EXAMPLE)
