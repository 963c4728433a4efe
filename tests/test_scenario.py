"""sim.scenario: reading, validation messages, the policy a scenario builds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from engine.errors import EgressError
from engine.throttle import Throttle
from sim import ScenarioError
from sim.distributions import Constant, LogNormal, Uniform
from sim.scenario import DEFAULT_START_EPOCH, Scenario

MX1 = "mx1.example.com"


def base() -> dict[str, Any]:
    return {
        "name": "t",
        "seed": 3,
        "horizon": "2h",
        "traffic": [{"domain": "example.com", "messages": 10}],
        "domains": {"example.com": {"mx": [{"host": MX1, "preference": 10}]}},
        "hosts": {MX1: {}},
    }


def load(d: dict[str, Any]) -> Scenario:
    return Scenario.from_dict(d)


def test_minimal_scenario_fills_in_defaults() -> None:
    s = load(base())
    assert (s.name, s.seed, s.horizon) == ("t", 3, 7200.0)
    assert s.start_epoch == DEFAULT_START_EPOCH == 1_767_225_600
    assert s.sample_interval == 7.2
    h = s.hosts[MX1]
    assert h.addresses == ("192.0.2.1",)
    assert h.connect_latency == Constant(0.02)
    assert (h.starttls, h.pipelining, h.auth, h.max_connections) == (True, True, False, None)
    assert s.domains["example.com"].mx[0].host == MX1
    assert s.traffic[0].messages == 10
    assert s.message_count == 10
    assert s.egress_path is None and s.queue is None and s.policy_file is None


def test_full_host_table_is_read() -> None:
    d = base()
    d["hosts"][MX1] = {
        "addresses": ["198.51.100.7", "2001:db8::7"],
        "connect_latency": {"median": "20ms", "p99": "200ms"},
        "command_latency": {"min": "5ms", "max": "15ms"},
        "data_latency": 0.1,
        "tls_latency": "30ms",
        "data_bandwidth": "10MB/s",
        "max_connections": 5,
        "refuse_connections": 0.1,
        "tempfail_mail": 0.01,
        "tempfail_rcpt": 0.02,
        "permfail_rcpt": 0.03,
        "tempfail_data": 0.04,
        "permfail_data": 0.05,
        "starttls": False,
        "tls_failure": 0.5,
        "pipelining": False,
        "auth": True,
        "outages": [{"start": "20m", "end": "40m", "mode": "tempfail"},
                    {"start": "5m", "end": "10m"}],
    }
    h = load(d).hosts[MX1]
    assert h.addresses == ("198.51.100.7", "2001:db8::7")
    assert isinstance(h.connect_latency, LogNormal) and h.connect_latency.median == 0.02
    assert h.command_latency == Uniform(0.005, 0.015)
    assert h.data_latency == Constant(0.1)
    assert h.data_bandwidth == 10_000_000.0
    assert (h.max_connections, h.refuse_connections, h.tempfail_mail) == (5, 0.1, 0.01)
    assert (h.tempfail_rcpt, h.permfail_rcpt, h.tempfail_data, h.permfail_data) == (
        0.02, 0.03, 0.04, 0.05)
    assert (h.starttls, h.tls_failure, h.pipelining, h.auth) == (False, 0.5, False, True)
    assert [(o.start, o.end, o.mode) for o in h.outages] == [
        (300.0, 600.0, "refuse"), (1200.0, 2400.0, "tempfail")]


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        node = d
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return mutate


H = ("hosts", MX1)
T0 = ("traffic", 0)
D = ("domains", "example.com")
HP = 'hosts."mx1.example.com"'
DP = 'domains."example.com"'

BAD: list[tuple[Any, str]] = [
    # hosts
    (_set((*H, "tempfail_rcpt"), 1.5),
     f"{HP}.tempfail_rcpt: expected a probability between 0 and 1, got 1.5"),
    (_set((*H, "refuse_connections"), "x"),
     f"{HP}.refuse_connections: expected a probability between 0 and 1, got 'x'"),
    (_set((*H, "permfail_rcpt"), -0.1), f"{HP}.permfail_rcpt: expected a probability"),
    (_set((*H, "tempfail_data"), True), f"{HP}.tempfail_data: expected a probability"),
    (_set((*H, "permfail_data"), 2), f"{HP}.permfail_data: expected a probability"),
    (_set((*H, "tempfail_mail"), 1.01), f"{HP}.tempfail_mail: expected a probability"),
    (_set((*H, "tls_failure"), -1), f"{HP}.tls_failure: expected a probability"),
    (_set((*H, "connect_latency"), "fast"), f"{HP}.connect_latency: expected a duration"),
    (_set((*H, "command_latency"), {"median": "20ms"}),
     f"{HP}.command_latency: expected a duration, or a table {{median, p99}} or {{min, max}}"),
    (_set((*H, "data_latency"), {"median": "20ms", "p99": "10ms"}),
     f"{HP}.data_latency.p99: expected a duration above the median ('20ms'), got '10ms'"),
    (_set((*H, "data_latency"), {"median": "x", "p99": "10ms"}),
     f"{HP}.data_latency.median: expected a duration"),
    (_set((*H, "tls_latency"), {"min": "2s", "max": "1s"}),
     f"{HP}.tls_latency.max: expected a duration >= min ('2s'), got '1s'"),
    (_set((*H, "max_connections"), 0), f"{HP}.max_connections: expected an integer >= 1, got 0"),
    (_set((*H, "starttls"), "yes"), f"{HP}.starttls: expected true or false, got 'yes'"),
    (_set((*H, "pipelining"), 1), f"{HP}.pipelining: expected true or false, got 1"),
    (_set((*H, "auth"), "no"), f"{HP}.auth: expected true or false"),
    (_set((*H, "outages"), [{"start": "10m", "end": "5m"}]),
     f"{HP}.outages[0].end: expected a time after start ('10m'), got '5m'"),
    (_set((*H, "outages"), [{"start": "1m", "end": "5m", "mode": "down"}]),
     f"{HP}.outages[0].mode: expected one of 'refuse', 'tempfail', 'blackhole', got 'down'"),
    (_set((*H, "outages"), [{"start": "1m", "stop": "5m"}]), f"{HP}.outages[0].end: this field"),
    (_set((*H, "outages"), [{"start": "1m", "end": "5m", "stop": 1}]),
     f"{HP}.outages[0].stop: unknown field"),
    (_set((*H, "outages"), "never"), f"{HP}.outages: expected an array of tables"),
    (_set((*H, "address"), "not-an-ip"), f"{HP}.address: expected an IPv4 or IPv6 address"),
    (_set((*H, "addresses"), []), f"{HP}.addresses: expected a non-empty array"),
    (_set((*H, "tempfail_rcpts"), 0.1), f"{HP}.tempfail_rcpts: unknown field; expected one of:"),
    (_set((*H, "data_bandwidth"), "fast"),
     f"{HP}.data_bandwidth: expected bytes per second above 0"),
    (_set(H, {"tempfail_rcpt": 0.6, "permfail_rcpt": 0.6}),
     f"{HP}.permfail_rcpt: expected tempfail_rcpt + permfail_rcpt to be at most 1, got 1.2"),
    (_set(("hosts",), {MX1: 3}), f"{HP}: expected a table, got 3"),
    (_set(("host_defaults",), {"address": "192.0.2.9"}), "host_defaults.address: unknown field"),
    (_set(("host_defaults",), {"tempfail_rcpt": 7}), "host_defaults.tempfail_rcpt: expected a"),
    # domains
    (_set((*D, "mx"), "mx1"), f"{DP}.mx: expected an array"),
    (_set((*D, "mx"), [{"host": MX1, "preference": -1}]),
     f"{DP}.mx[0].preference: expected an integer between 0 and 65535, got -1"),
    (_set((*D, "mx"), [{"host": MX1, "weight": 1}]), f"{DP}.mx[0].weight: unknown field"),
    (_set((*D, "mx"), [{"host": "mx9.example.com"}]),
     f"{DP}.mx: [0] names the host 'mx9.example.com', which is not declared in [hosts]"),
    (_set((*D, "null_mx"), True), f"{DP}.mx: null_mx and mx cannot both be given"),
    (_set(D, {"nxdomain": True, "servfail": True}), f"{DP}.servfail: nxdomain and servfail"),
    (_set(D, {}), f"{DP}: has no mx, so its mail goes to the host 'example.com'"),
    (_set((*D, "mxx"), []), f"{DP}.mxx: unknown field"),
    (_set((*D, "mta_sts"), {"mode": "strict"}), f"{DP}.mta_sts.mode: expected one of"),
    (_set((*D, "dns_outages"), [{"start": 0, "end": 10, "kind": "BROKEN"}]),
     f"{DP}.dns_outages[0].kind: expected one of 'SERVFAIL', 'TIMEOUT', 'NXDOMAIN'"),
    (_set((*D, "ttl"), "long"), f"{DP}.ttl: expected a duration"),
    # traffic
    (_set((*T0, "messages"), -1), "traffic[0].messages: expected an integer >= 0, got -1"),
    (_set((*T0, "rate"), 5), "traffic[0]: give either messages"),
    (_set(T0, {"domain": "example.com"}), "traffic[0]: give either messages"),
    (_set(T0, {"domain": "example.com", "rate": "fast", "duration": "1h"}),
     "traffic[0].rate: expected a rate: a number per second or a string such as \"600/min\""),
    (_set(T0, {"domain": "example.com", "rate": 0, "duration": "1h"}),
     "traffic[0].rate: expected a rate"),
    (_set(T0, {"domain": "example.com", "rate": "10/s"}),
     "traffic[0].duration: this field is required"),
    (_set(T0, {"domain": "example.com", "rate": "10/s", "duration": "1h", "at": 0}),
     "traffic[0].at: a Poisson stream"),
    (_set((*T0, "duration"), "1h"), "traffic[0].duration: only Poisson streams"),
    (_set((*T0, "domain"), "other.com"),
     "traffic[0].domain: domain 'other.com' is not declared in [domains]"),
    (_set((*T0, "domain"), 5), "traffic[0].domain: expected a non-empty string, got 5"),
    (_set(T0, {"messages": 1}), "traffic[0].domain: this field is required"),
    (_set(T0, {"messages": 1, "domains": {"example.com": 0}}),
     "traffic[0].domains: 'example.com': expected a weight above 0, got 0"),
    (_set(T0, {"messages": 1, "domains": {"example.com": 1}, "domain": "example.com"}),
     "traffic[0].domains: give either domain or domains"),
    (_set((*T0, "size"), "big"), "traffic[0].size: expected a size in bytes"),
    (_set((*T0, "size"), {"median": "2KB", "p99": "1KB"}),
     "traffic[0].size.p99: expected a size above the median ('2KB'), got '1KB'"),
    (_set((*T0, "recipients"), 0),
     "traffic[0].recipients: expected an integer between 1 and 1000, got 0"),
    (_set((*T0, "sender"), "nobody"), "traffic[0].sender: expected an address"),
    (_set((*T0, "tenant"), 5), "traffic[0].tenant: expected a string, got 5"),
    (_set((*T0, "domian"), "x"), "traffic[0].domian: unknown field"),
    (_set(("traffic",), {"domain": "x"}), "traffic: expected an array of tables"),
    # top level
    (_set(("horizon",), "forever"), "horizon: expected a duration"),
    (_set(("horizon",), 0), "horizon: expected a duration above 0, got 0"),
    (_set(("seed",), -1), "seed: expected an integer >= 0, got -1"),
    (_set(("seed",), "x"), "seed: expected an integer >= 0, got 'x'"),
    (_set(("start_epoch",), -5), "start_epoch: expected a number >= 0, got -5"),
    (_set(("sample_interval",), "0s"), "sample_interval: expected a duration above 0"),
    (_set(("name",), ""), "name: expected a non-empty string"),
    (_set(("horizn",), "1h"), "horizn: unknown field; expected one of:"),
    # egress path and queue (validated by the engine's constructors)
    (_set(("egress_path",), {"connection_limit": 0}),
     "egress_path.connection_limit: 0 is not valid; expected an integer >= 1"),
    (_set(("egress_path",), {"conection_limit": 3}),
     "egress_path: make_egress_path: unknown key 'conection_limit'"),
    (_set(("egress_path",), {"domains": {"example.com": {"max_message_rate": "fast"}}}),
     "egress_path.domains.\"example.com\".max_message_rate: 'fast' is not a valid throttle"),
    (_set(("egress_path",), {"domains": {"nowhere.com": {"connection_limit": 2}}}),
     "egress_path.domains.\"nowhere.com\": overrides the egress path of domain 'nowhere.com', "
     "which is not in [domains]"),
    (_set(("egress_path",), {"domains": {"example.com": 3}}),
     'egress_path.domains."example.com": expected a table, got 3'),
    (_set(("queue",), {"retry_interval": "soon"}), "queue.retry_interval: 'soon' is not"),
    (_set(("queue",), 3), "queue: expected a table, got 3"),
    (_set(("policy",), "policy.py"), "policy: expected the path of a policy file, but"),
]


@pytest.mark.parametrize(("mutate", "expected"), BAD, ids=[e for _, e in BAD])
def test_every_wrong_field_names_file_path_and_expectation(mutate: Any, expected: str) -> None:
    d = base()
    mutate(d)
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(d, source="x.toml")
    message = str(info.value)
    assert message.startswith("x.toml: ")
    assert expected in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, EgressError)


def test_from_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nseed = 1\nhorizon = = "1h"\n')
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert "line 3" in message


def test_from_toml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.toml: cannot read the scenario"):
        Scenario.from_toml(tmp_path / "nope.toml")


def test_from_toml_reads_file_defaults_name_and_applies_overrides(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'seed = 5\n[[traffic]]\ndomain = "example.com"\nmessages = 3\n'
        '[domains."example.com"]\nmx = ["mx1.example.com"]\n[hosts."mx1.example.com"]\n'
    )
    s = Scenario.from_toml(path, ["seed=9", 'hosts."mx1.example.com".tempfail_rcpt=0.25'])
    assert (s.name, s.seed, s.source) == ("mine", 9, str(path))
    assert s.hosts[MX1].tempfail_rcpt == 0.25
    again = s.with_overrides(["traffic[0].messages=7"])
    assert (again.seed, again.traffic[0].messages, again.name) == (9, 7, "mine")


def test_host_defaults_fill_undeclared_hosts_and_fields() -> None:
    d = base()
    d["host_defaults"] = {"tempfail_rcpt": 0.05, "max_connections": 9}
    d["hosts"][MX1] = {"max_connections": 2}
    d["domains"]["example.com"]["mx"].append({"host": "mx2.example.com", "preference": 20})
    d["traffic"].append({"domain": "undeclared.org", "messages": 1})
    s = load(d)
    assert (s.hosts[MX1].max_connections, s.hosts[MX1].tempfail_rcpt) == (2, 0.05)
    assert s.hosts["mx2.example.com"].max_connections == 9
    assert s.domains["undeclared.org"].implicit
    assert s.hosts["undeclared.org"].tempfail_rcpt == 0.05
    assert [s.hosts[h].addresses for h in (MX1, "mx2.example.com", "undeclared.org")] == [
        ("192.0.2.1",), ("192.0.2.2",), ("192.0.2.3",)]


def test_made_up_addresses_skip_declared_ones() -> None:
    d = base()
    d["hosts"]["mx0.example.com"] = {"address": "192.0.2.1"}
    s = load(d)
    assert s.hosts[MX1].addresses == ("192.0.2.2",)


def test_egress_path_tables_and_per_domain_policy() -> None:
    d = base()
    d["domains"]["other.com"] = {"mx": [{"host": MX1, "preference": 5}]}
    d["egress_path"] = {"connection_limit": 16, "max_message_rate": "100/s",
                        "domains": {"example.com": {"connection_limit": 4}}}
    d["queue"] = {"retry_interval": "5min", "max_age": "1h"}
    s = load(d)
    assert s.egress_path is not None and s.egress_path.connection_limit == 16
    dom = s.egress_path_domains["example.com"]
    assert (dom.connection_limit, dom.max_message_rate) == (4, Throttle(limit=100, period=1.0))
    policy = s.policy()
    assert policy.egress_path_config("example.com", "unspecified", "site").connection_limit == 4
    assert policy.egress_path_config("other.com", "unspecified", "site").connection_limit == 16
    q = policy.queue_config("example.com", "", "", "")
    assert (q.retry_interval, q.max_age) == (300.0, 3600.0)


def test_policy_file_is_loaded_relative_to_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(
        "from engine import Policy, make_egress_path\n"
        "policy = Policy()\n"
        "@policy.on('get_egress_path_config')\n"
        "def path(domain, source_name, site_name):\n"
        "    return make_egress_path(connection_limit=3)\n"
    )
    d = base()
    d["policy"] = "p.py"
    s = Scenario.from_dict(d, source="s.toml", base_dir=tmp_path)
    assert s.policy_file == tmp_path / "p.py"
    assert s.policy().egress_path_config("example.com", "a", "b").connection_limit == 3
    d["egress_path"] = {"connection_limit": 2}
    with pytest.raises(ScenarioError, match=r"s.toml: egress_path: cannot be given together "
                       r"with policy = 'p.py'"):
        Scenario.from_dict(d, source="s.toml", base_dir=tmp_path)


def test_from_dict_does_not_keep_a_reference_to_the_callers_dict() -> None:
    d = base()
    s = load(d)
    before = copy.deepcopy(d)
    d["seed"] = 99
    assert s.raw["seed"] == 3 and before["seed"] == 3
