"""engine.shaping: KumoMTA's shaping.toml loaded, merged and resolved per path."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import EnableTls, make_egress_path
from engine.errors import ConfigError
from engine.shaping import Action
from engine.shaping_load import load_shaping
from engine.throttle import parse_throttle

DATA = Path(__file__).parent / "data"
KUMO = DATA / "kumomta_shaping.toml"
COMMUNITY = DATA / "kumomta_community_shaping.toml"
GOOGLE_MX = ["gmail-smtp-in.l.google.com.", "alt1.gmail-smtp-in.l.google.com."]


def _load(*texts: str):  # type: ignore[no-untyped-def]
    return load_shaping([(f"f{i}.toml", t) for i, t in enumerate(texts)])


def test_kumomtas_shipped_files_load_unchanged() -> None:
    sh = load_shaping([(str(p), p.read_text()) for p in (KUMO, COMMUNITY)])
    assert {"default", "comcast.net", "example.com", "mail.com"} <= set(sh.entries)
    assert {"google", "yahoo", "outlook", "office365", "apple", "orange"} <= set(sh.providers)
    # remember_broken_tls acts since KumoMTA's TLS rows were closed: applied, not ignored
    assert sh.entries["default"].params["remember_broken_tls"] == 3 * 86400
    assert not any("remember_broken_tls" in i for i in sh.ignored)
    # connection_limit = "local:5" (a LimitSpec) is egress's int
    assert sh.entries["http://127.0.0.1:8008.tsa.kumomta"].params["connection_limit"] == 5
    assert sh.entries["example.com"].mx_rollup is False
    assert sh.entries["example.com"].sources["my source name"] == {"connection_limit": 5}


def test_shipped_rules_every_construct() -> None:
    sh = load_shaping([(str(KUMO), KUMO.read_text())])
    [default_rule] = sh.entries["default"].automation
    assert len(default_rule.regex) == 5 and default_rule.duration == 90 * 60
    assert default_rule.actions == (
        Action("SetConfig", "max_message_rate", parse_throttle("1/minute")),
        Action("SetConfig", "connection_limit", 1))
    assert default_rule.matches("421 4.7.0 [TS01] Messages from 192.0.2.7 temporarily deferred")
    rate, suspend = sh.entries["comcast.net"].automation
    assert rate.threshold == parse_throttle("2/hr") and rate.duration == 7200
    assert suspend.threshold is None and suspend.actions == (Action("SuspendTenant"),)
    # the negative lookahead of the shipped regex works with Python's re
    assert suspend.matches("421 RL000010 throttled")
    assert not suspend.matches("KumoMTA internal: RL000010")
    [yahoo] = sh.providers["yahoo"].automation
    assert yahoo.matches("421 4.7.0 [TSS04] Messages from 192.0.2.1 deferred")
    assert yahoo.rule_id == "provider:yahoo#0"


def test_merge_order_default_provider_site_domain_sources() -> None:
    sh = load_shaping([(str(KUMO), KUMO.read_text())])
    vals = sh.values("gmail.com", "s1", "gmail-site", GOOGLE_MX)
    assert vals["enable_tls"] is EnableTls.Required  # provider over default
    assert vals["max_deliveries_per_connection"] == 50
    assert vals["idle_timeout"] == 60.0  # default
    assert vals["provider_name"] == "google"
    assert vals["additional_connection_limits"] == {"shaping-provider-google-s1-limit": 5}
    # no MX known: the MXSuffix provider cannot match
    assert "provider_name" not in sh.values("gmail.com", "s1", "gmail-site", None)
    assert sh.values("example.com", "my source name", "x")["connection_limit"] == 5
    assert sh.values("example.com", "other", "x")["connection_limit"] == 3


def test_every_scope_in_kumomtas_order() -> None:
    sh = _load('''
["default"]
connection_limit = 1
max_ready = 1
[provider."p"]
match = [{DomainSuffix = ".test"}]
connection_limit = 2
max_ready = 2
idle_timeout = "2s"
[provider."p".sources."s"]
connection_limit = 3
[provider."p".sources."s2"]
idle_timeout = "9s"
["rolled.test"]
connection_limit = 4
smtp_port = 4
[["rolled.test".automation]]
regex = "x"
action = "Suspend"
duration = "1m"
["exact.test"]
mx_rollup = false
connection_limit = 5
["exact.test".sources."s"]
connection_limit = 7
["rolled.test".sources."s"]
max_ready = 6
''')
    # a rolled-up domain is a site entry: for its own name, and for its site once known
    assert sh.values("rolled.test", "s", "site-r") == {
        "connection_limit": 4, "max_ready": 6, "idle_timeout": 2.0, "smtp_port": 4,
        "provider_name": "p"}
    assert sh.values("other.test", "s", "site-r", site_of={"rolled.test": "site-r"}.get)[
        "smtp_port"] == 4
    assert "smtp_port" not in sh.values("other.test", "s", "site-x",
                                        site_of={"rolled.test": "site-r"}.get)
    # site+source comes before domain+source; domain beats provider+source
    assert sh.values("exact.test", "s", "z")["connection_limit"] == 7
    assert sh.values("exact.test", "s2", "z") == {
        "connection_limit": 5, "max_ready": 2, "idle_timeout": 9.0, "provider_name": "p"}
    assert [r.rule_id for r in sh.rules("rolled.test", "site-r")] == ["rolled.test#0"]
    assert sh.rules("exact.test", "z") == []


def test_later_file_merges_or_replaces_base() -> None:
    a = '["d.test"]\nconnection_limit = 2\nmax_ready = 9\n'
    assert _load(a, '["d.test"]\nconnection_limit = 3\n').values("d.test", "s", "x") == {
        "connection_limit": 3, "max_ready": 9}
    assert _load(a, '["d.test"]\nreplace_base = true\nconnection_limit = 3\n').values(
        "d.test", "s", "x") == {"connection_limit": 3}


def test_overlay_keeps_the_policys_other_keys() -> None:
    sh = _load('["default"]\nconnection_limit = 2\n'
               '[provider."p"]\nmatch=[{HostName="mx.p.test"}]\nprovider_connection_limit = 4\n')
    base = make_egress_path(smtp_port=2525, additional_connection_limits={"mine": 7})
    cfg = sh.overlay(base, "d.test", "s", "site", ["mx.p.test."])
    assert cfg.smtp_port == 2525 and cfg.connection_limit == 2
    assert dict(cfg.additional_connection_limits) == {"mine": 7, "shaping-provider-p-s-limit": 4}
    assert _load("").overlay(base, "d.test", "s", "site") is base


@pytest.mark.parametrize(("text", "message"), [
    ('["d.test"]\nconection_limit = 2\n',
     "f0.toml: [\"d.test\"]: make_egress_path: unknown key 'conection_limit'; "
     "did you mean 'connection_limit'?"),
    ('["d.test"]\nconnection_limit = 0\n', 'f0.toml: ["d.test"]: connection_limit: 0'),
    ('["d.test".sources."s"]\nidle_timeout = "soon"\n', 'f0.toml: ["d.test".sources."s"]: '),
    ('[[provider."p".automation]]\nregex = "x"\naction = "Suspend"\n',
     "f0.toml: [provider.\"p\"]: automation: missing field 'duration'"),
    ('[["d.test".automation]]\nregex = "x"\naction = "Suspend"\nduration = "1m"\nfoo = 1\n',
     "automation: unknown field 'foo'"),
    ('[["d.test".automation]]\nregex = "(x"\naction = "Suspend"\nduration = "1m"\n',
     "regex: '(x'"),
    ('[["d.test".automation]]\nregex = "x"\naction = "Explode"\nduration = "1m"\n',
     "action: 'Explode' is not one of"),
    ('[["d.test".automation]]\nregex = "x"\naction = {SetConfig={name="max_redy", value=1}}\n'
     'duration = "1m"\n', "did you mean 'max_ready'?"),
    ('[["d.test".automation]]\nregex = "x"\naction = {SetConfig={name="connection_limit", '
     'value="many"}}\nduration = "1m"\n', '[\"d.test\" action SetConfig]: connection_limit'),
    ('[["d.test".automation]]\nregex = "x"\naction = "Bounce"\nduration = "1m"\n'
     'trigger = {Threshold = "often"}\n', "trigger Threshold"),
    ('[["d.test".automation]]\nregex = "x"\naction = "Bounce"\nduration = "1m"\n'
     'trigger = "Sometimes"\n', "trigger: 'Sometimes'"),
    ('[provider."p"]\nmatch = [{MXPrefix = "mx."}]\n', 'match: {\'MXPrefix\': \'mx.\'}'),
    ('["d.test"]\nmx_rollup = "no"\n', "mx_rollup: 'no' is not true or false"),
    ('["d.test"\n', "f0.toml: not valid TOML"),
])
def test_bad_input_names_file_table_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(text)
    assert message in str(err.value)


def test_egress_check_shows_the_shaping_values_and_rules(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from engine.cli import main

    pol = tmp_path / "policy.py"
    pol.write_text("from engine.policy import Policy\npolicy = Policy()\n")
    assert main(["check", str(pol), "--domain", "comcast.net", "--json",
                 "--shaping", str(KUMO)]) == 0
    [path] = json.loads(capsys.readouterr().out)["domains"][0]["paths"]
    assert path["egress_path"]["connection_limit"] == 25
    assert "connection_limit" in path["shaping"]["values"]
    assert path["shaping"]["rules"][1] == (
        "comcast.net#0: Threshold 2/3600s -> SetConfig max_connection_rate for 7200s")
    assert main(["check", str(pol), "--json"]) == 0
    assert "shaping" not in json.loads(capsys.readouterr().out)["domains"][0]["paths"][0]
    bad = tmp_path / "bad.toml"
    bad.write_text('["default"]\nconnection_limt = 1\n')
    assert main(["check", str(pol), "--shaping", str(bad)]) != 0
    assert "bad.toml: [\"default\"]: make_egress_path: unknown key 'connection_limt'; " \
        "did you mean 'connection_limit'?" in capsys.readouterr().err
