"""sim.overrides: KEY=VALUE assignments on a scenario's raw tables."""

from __future__ import annotations

from typing import Any

import pytest

from sim import ScenarioError, apply_overrides
from sim.overrides import parse_key_path, parse_value

RAW: dict[str, Any] = {
    "seed": 1,
    "egress_path": {"connection_limit": 32},
    "hosts": {"mx1.example.com": {"tempfail_rcpt": 0.0}},
    "traffic": [{"domain": "a.example", "messages": 5}],
}


def test_overrides_set_values_as_toml_scalars_without_touching_the_input() -> None:
    out = apply_overrides(RAW, [
        "egress_path.connection_limit=16",
        'hosts."mx1.example.com".tempfail_rcpt=0.1',
        "seed=3",
        "egress_path.max_message_rate=10/s",
        "egress_path.enable_pipelining=false",
        'egress_path.ehlo_domain="mta.example"',
        "traffic[0].messages=50000",
        'egress_path.domains."gmail.com".connection_limit=4',
        "hosts.\"mx1.example.com\".connect_latency={ median = \"20ms\", p99 = \"200ms\" }",
        "horizon = 2h",
    ])
    assert out == {
        "seed": 3,
        "horizon": "2h",
        "egress_path": {
            "connection_limit": 16, "max_message_rate": "10/s", "enable_pipelining": False,
            "ehlo_domain": "mta.example", "domains": {"gmail.com": {"connection_limit": 4}},
        },
        "hosts": {"mx1.example.com": {
            "tempfail_rcpt": 0.1, "connect_latency": {"median": "20ms", "p99": "200ms"}}},
        "traffic": [{"domain": "a.example", "messages": 50000}],
    }
    assert RAW["seed"] == 1 and RAW["egress_path"] == {"connection_limit": 32}


def test_key_path_and_value_parsing() -> None:
    assert parse_key_path('hosts."mx1.example.com".tempfail_rcpt') == [
        "hosts", "mx1.example.com", "tempfail_rcpt"]
    assert parse_key_path("traffic[2].rate") == ["traffic", 2, "rate"]
    assert parse_key_path('a."b\\"c"') == ["a", 'b"c']
    with pytest.raises(ScenarioError, match="unterminated quoted key"):
        parse_key_path('hosts."mx1')
    assert [parse_value(v) for v in ("16", "0.5", "true", '"x"', "10/s", "[1, 2]")] == [
        16, 0.5, True, "x", "10/s", [1, 2]]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("seed", "--set: 'seed': expected KEY=VALUE"),
        ("=3", "--set: '=3': expected KEY=VALUE"),
        ("egress path.x=1", "--set: 'egress path.x': expected '.' or '[N]' at position 7"),
        ("a..b=1", "--set: 'a..b': expected a key at position 3"),
        ("a.=1", "--set: 'a.': the key path is empty or ends with '.'"),
        ('hosts."mx1=1', "--set: 'hosts.\"mx1=1': expected KEY=VALUE"),
        ('hosts."mx"x=1', "--set: 'hosts.\"mx\"x': expected '.' or '[N]' at position 11, got 'x'"),
        ("seed.x=1", "--set: seed.x: seed is 1, not a table, so it has no field 'x'"),
        ("traffic[3].messages=1", "--set: traffic[3].messages: traffic[3]: index out of range "
                                  "(the array has 1 elements)"),
        ("egress_path[0]=1", "--set: egress_path[0]: egress_path[0]: no such array element"),
    ],
)
def test_bad_key_paths_are_named(assignment: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        apply_overrides(RAW, [assignment])
    assert str(info.value).startswith(message)


def test_unknown_field_is_caught_by_scenario_validation() -> None:
    from sim.scenario import Scenario

    raw = {"traffic": [{"domain": "a.example", "messages": 1}], "host_defaults": {}}
    with pytest.raises(ScenarioError, match=r"host_defaults\.tempfail_rcpts: unknown field"):
        Scenario.from_dict(apply_overrides(raw, ["host_defaults.tempfail_rcpts=0.1"]))
