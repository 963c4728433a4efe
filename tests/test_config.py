"""make_egress_path: every key's default and validation, immutability,
replace/to_dict, unknown keys, secrets masked, the TLS key checks."""

from __future__ import annotations

import dataclasses
import pickle
from types import MappingProxyType

import pytest

from engine.cidr import CidrSet
from engine.config import (
    EgressPathConfig,
    EnableTls,
    IpLookupStrategy,
    ReconnectStrategy,
    make_egress_path,
)
from engine.errors import ConfigError
from engine.keysource import KeySource
from engine.live.keysource_resolve import resolve_keysource
from engine.path_keys import RefreshStrategy
from engine.throttle import Throttle

DEFAULTS = {
    "connection_limit": 32,
    "consecutive_connection_failures_before_delay": 100,
    "ehlo_domain": None,
    "enable_tls": EnableTls.Opportunistic,
    "enable_mta_sts": True,
    "enable_dane": False,
    "connect_timeout": 60.0,
    "banner_timeout": 60.0,
    "starttls_timeout": 5.0,
    "ehlo_timeout": 300.0,
    "mail_from_timeout": 300.0,
    "rcpt_to_timeout": 300.0,
    "data_timeout": 30.0,
    "data_dot_timeout": 60.0,
    "rset_timeout": 5.0,
    "idle_timeout": 60.0,
    "auth_timeout": 60.0,
    "max_connection_rate": None,
    "max_message_rate": None,
    "max_deliveries_per_connection": 1024,
    "max_ready": 1024,
    "prohibited_hosts": CidrSet(["127.0.0.0/8", "::1", "0.0.0.0", "::"]),
    "skip_hosts": CidrSet([]),
    "smtp_port": 25,
    "smtp_auth_plain_username": None,
    "smtp_auth_plain_password": None,
    "allow_smtp_auth_plain_without_tls": False,
    "suspended": False,
    "aggressive_connection_opening": False,
    "tls_prefer_openssl": False,
    "openssl_cipher_list": None,
    "openssl_cipher_suites": None,
    "openssl_options": None,
    "rustls_cipher_suites": None,
    "enable_pipelining": True,
    "enable_rset": True,
    "max_recipients_per_batch": 100,
    "additional_connection_limits": {},
    "additional_message_rate_throttles": {},
    "ip_lookup_strategy": IpLookupStrategy.Ipv4AndIpv6,
    "reconnect_strategy": ReconnectStrategy.ConnectNextHost,
    "opportunistic_tls_reconnect_on_failed_handshake": False,
    "provider_name": None,
    "source_selection_rate": None,
    "additional_source_selection_rates": {},
    "try_next_host_on_transport_error": False,
    "remember_broken_tls": None,
    "tls_certificate": None,
    "tls_private_key": None,
    "refresh_interval": 60.0,
    "refresh_strategy": RefreshStrategy.Ttl,
    "dispatcher_progress_watchdog_timeout": None,
}

# Keys egress parses but refuses away from their default (tests/test_kumomta_config.py).
INERT = {"aggressive_connection_opening", "try_next_host_on_transport_error"}
TIMEOUTS = [k for k in DEFAULTS if k.endswith("_timeout") and k not in INERT]
BOOLS = [k for k, v in DEFAULTS.items() if isinstance(v, bool) and k not in INERT]


def test_keys_are_exactly_the_table() -> None:
    assert set(EgressPathConfig.KEYS) == set(DEFAULTS)
    assert len(EgressPathConfig.KEYS) == 52
    assert {f.name for f in dataclasses.fields(EgressPathConfig)} == set(DEFAULTS)


@pytest.mark.parametrize(("key", "default"), DEFAULTS.items())
def test_default(key: str, default: object) -> None:
    value = getattr(make_egress_path(), key)
    assert value == default
    assert type(value) is type(default) or (default == {} and isinstance(value, MappingProxyType))


# key -> [(given, stored), ...]
VALID = {
    # KumoMTA's string forms: digits with separators, and local: (kept per process)
    "connection_limit": [(1, 1), (500, 500), ("32", 32), ("1,000", 1000), ("1_000", 1000),
                         ("local:20", 20)],
    "consecutive_connection_failures_before_delay": [(0, 0), (5, 5)],
    "ehlo_domain": [("mta.example.org", "mta.example.org"), ("[192.0.2.1]", "[192.0.2.1]")],
    "enable_tls": [(m.value, m) for m in EnableTls] + [(EnableTls.Required, EnableTls.Required)],
    "max_connection_rate": [("100/min", Throttle(100, 60.0)), (None, None)],
    "max_message_rate": [("1,000/hr", Throttle(1000, 3600.0)),
                         (Throttle(5, 1.0), Throttle(5, 1.0))],
    "max_deliveries_per_connection": [(1, 1)],
    "max_ready": [(10, 10)],
    "prohibited_hosts": [(["10.0.0.0/8"], CidrSet(["10.0.0.0/8"])), ([], CidrSet())],
    "skip_hosts": [(["192.0.2.1", "2001:db8::/32"], CidrSet(["192.0.2.1/32", "2001:db8::/32"])),
                   ("192.0.2.1", CidrSet(["192.0.2.1"]))],
    "smtp_port": [(587, 587), (65535, 65535)],
    "smtp_auth_plain_username": [("scott", "scott")],
    "openssl_cipher_list": [("ECDHE+AESGCM:!aNULL", "ECDHE+AESGCM:!aNULL"), ("HIGH", "HIGH")],
    "openssl_cipher_suites": [("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
                               "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")],
    "openssl_options": [("NO_TLSV1 | NO_TLSV1_1", "NO_TLSV1|NO_TLSV1_1"), ("ALL", "ALL")],
    "rustls_cipher_suites": [(["TLS13_AES_256_GCM_SHA384"], ("TLS13_AES_256_GCM_SHA384",))],
    "max_recipients_per_batch": [(1, 1)],
    "additional_connection_limits": [({"shared-ip": 100}, {"shared-ip": 100})],
    "additional_message_rate_throttles": [({"tenant-a": "10/s"}, {"tenant-a": Throttle(10, 1.0)})],
    "source_selection_rate": [("100/day,max_burst=1", Throttle(100, 86400.0, 1))],
    "additional_source_selection_rates": [({"warm": "10/h"}, {"warm": Throttle(10, 3600.0)})],
    "ip_lookup_strategy": [(m.value, m) for m in IpLookupStrategy],
    "refresh_interval": [("5m", 300.0), (10, 10.0)],
    "refresh_strategy": [("Epoch", RefreshStrategy.Epoch), ("Ttl", RefreshStrategy.Ttl)],
    "dispatcher_progress_watchdog_timeout": [("10m", 600.0), (None, None)],
    "reconnect_strategy": [(m.value, m) for m in ReconnectStrategy],
    "provider_name": [("google", "google")],
    "remember_broken_tls": [("15m", 900.0), (None, None)],
    **{k: [("2min", 120.0), (45, 45.0), ("500ms", 0.5), (1.5, 1.5)] for k in TIMEOUTS},
    **{k: [(True, True), (False, False)] for k in BOOLS},
}

INVALID = {
    "connection_limit": [(0, "an integer >= 1"), (-3, "an integer >= 1"), (True, "integer"),
                         ("32x", "integer"), ("local:0", "integer"), ("lots", "integer"),
                         (3.0, "integer")],
    "consecutive_connection_failures_before_delay": [(-1, "an integer >= 0")],
    "ehlo_domain": [("", "a domain name"), ("a b", "a domain name"),
                    ("x\r\nRCPT TO:<a@b>", "a domain name"), (5, "a domain name")],
    "enable_tls": [("required", "did you mean 'Required'?"), ("TLS", "expected one of"),
                   (True, "expected one of")],
    "max_connection_rate": [("100", "[local:]N/[k]unit"), (100, "is not a throttle")],
    "max_message_rate": [("0/s", "limit of 0"), ("5/fortnight", "unknown unit")],
    "max_deliveries_per_connection": [(0, "an integer >= 1")],
    "max_ready": [(0, "an integer >= 1"), (None, "an integer >= 1")],
    "prohibited_hosts": [(["10.0.0.1/8"], "host bits set"), (["nope"], "not a CIDR network"),
                         (5, "not a CIDR list")],
    "skip_hosts": [(["300.1.1.1"], "not a CIDR network")],
    "smtp_port": [(0, "between 1 and 65535"), (65536, "between 1 and 65535"),
                  ("25", "between 1 and 65535")],
    "smtp_auth_plain_username": [("", "non-empty string"), ("a\nb", "without NUL, CR or LF")],
    "smtp_auth_plain_password": [({"key_dta": "x"}, "is not a keysource"), (5, "not a keysource")],
    "openssl_cipher_list": [("", "non-empty"), ("HIGH::MEDIUM", "empty entry"),
                            ("HIGH:$x", "malformed entry")],
    "openssl_cipher_suites": [("TLS_AES_512_GCM", "unknown TLS 1.3 suite 'TLS_AES_512_GCM'"),
                              ("", "not a TLS 1.3 suite list")],
    "openssl_options": [("NO_TLSV1|NOPE", "unknown option 'NOPE'"), (3, "not a string")],
    "rustls_cipher_suites": [(["TLS13_FOO"], "not a known rustls cipher suite"),
                             ([], "empty list"), ("TLS13_AES_256_GCM_SHA384", "not a list")],
    "max_recipients_per_batch": [(0, "an integer >= 1")],
    "additional_connection_limits": [({"a": 0}, "an integer >= 1"), ([1], "expected a mapping"),
                                     ({"": 3}, "entry name")],
    "additional_message_rate_throttles": [({"a": "fast"}, "not a valid throttle"),
                                          ("10/s", "expected a mapping")],
    "source_selection_rate": [("fast", "not a valid throttle")],
    "additional_source_selection_rates": [({"a": "fast"}, "not a valid throttle"),
                                          ("10/s", "expected a mapping")],
    "ip_lookup_strategy": [("ipv4only", "did you mean 'Ipv4Only'?")],
    "reconnect_strategy": [("Retry", "expected one of 'TerminateSession'")],
    "refresh_interval": [(None, "a duration above 0"), ("soon", "not a valid duration")],
    "refresh_strategy": [("Lazy", "expected one of 'Ttl', 'Epoch'")],
    "dispatcher_progress_watchdog_timeout": [("soon", "not a valid duration"),
                                             (0, "a duration above 0")],
    "provider_name": [("", "non-empty string")],
    "remember_broken_tls": [("soon", "not a valid duration"), (0, "above 0")],
    # a client certificate needs both keys (tests/test_kumomta_tls.py)
    "tls_certificate": [({"key_dta": "x"}, "keysource"), ("/etc/c.pem", "tls_private_key")],
    "tls_private_key": [({"key_dta": "x"}, "keysource"), ("/etc/k.pem", "tls_certificate")],
    **{k: [(-1, "must not be negative"), (0, "above 0"), ("soon", "not a valid duration"),
           (True, "a bool is not a duration")] for k in TIMEOUTS},
    **{k: [(1, "(a bool)"), ("true", "(a bool)"), (None, "(a bool)")] for k in BOOLS},
}


def test_every_key_has_valid_and_invalid_cases() -> None:
    paired = {"smtp_auth_plain_password", "tls_certificate", "tls_private_key"}
    assert set(VALID) | paired | INERT == set(DEFAULTS)
    assert set(INVALID) | {"suspended"} | INERT >= set(DEFAULTS) - {"suspended"}


@pytest.mark.parametrize(
    ("key", "given", "stored"), [(k, g, s) for k, cases in VALID.items() for g, s in cases]
)
def test_valid_value(key: str, given: object, stored: object) -> None:
    assert getattr(make_egress_path(**{key: given}), key) == stored


@pytest.mark.parametrize(
    ("key", "given", "expected"), [(k, g, e) for k, cases in INVALID.items() for g, e in cases]
)
def test_invalid_value_names_key_and_expectation(key: str, given: object, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_egress_path(**{key: given})
    msg = str(err.value)
    assert msg.startswith(key), msg
    assert expected in msg, msg
    if key != "smtp_auth_plain_password" and not isinstance(given, dict | list):
        assert repr(given) in msg or str(given) in msg, msg


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        make_egress_path(connection_limit=0)


def test_design_examples() -> None:
    cfg = make_egress_path(connection_limit=32, max_message_rate="1,000/hr",
                           connect_timeout="2min", enable_tls="Required")
    assert cfg.connect_timeout == 120.0
    assert cfg.max_message_rate == Throttle(limit=1000, period=3600.0)
    assert cfg.enable_tls == "Required"
    assert isinstance(cfg.enable_tls, EnableTls)


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("conection_limit", "connection_limit"), ("max_mesage_rate", "max_message_rate"),
     ("idle_timout", "idle_timeout"), ("enable_tsl", "enable_tls")],
)
def test_unknown_key_suggests_closest(typo: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_egress_path(**{typo: 3})
    assert str(err.value) == f"make_egress_path: unknown key {typo!r}; did you mean {suggestion!r}?"


def test_unknown_key_without_close_match_lists_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'; valid keys are: connection_limit, "):
        make_egress_path(zzz=1)


def test_immutable() -> None:
    cfg = make_egress_path(additional_connection_limits={"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.connection_limit = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.additional_connection_limits["b"] = 2  # type: ignore[index]
    source = {"a": 1}
    cfg2 = make_egress_path(additional_connection_limits=source)
    source["a"] = 99
    assert cfg2.additional_connection_limits["a"] == 1
    assert not hasattr(cfg, "__dict__")


def test_replace_validates_and_keeps_the_rest() -> None:
    cfg = make_egress_path(connection_limit=8, idle_timeout="30s")
    new = cfg.replace(connection_limit=16)
    assert (new.connection_limit, new.idle_timeout) == (16, 30.0)
    assert cfg.connection_limit == 8
    with pytest.raises(ConfigError, match="connection_limit: 0 is not valid"):
        cfg.replace(connection_limit=0)
    with pytest.raises(ConfigError, match="did you mean 'connection_limit'"):
        cfg.replace(conection_limit=3)


def test_equality_and_hash() -> None:
    a = make_egress_path(max_message_rate="10/s", additional_message_rate_throttles={"x": "1/s"})
    b = make_egress_path(max_message_rate=Throttle(10, 1.0),
                         additional_message_rate_throttles={"x": Throttle(1, 1.0)})
    assert a == b and hash(a) == hash(b)
    assert a != a.replace(max_ready=5)
    assert len({a, b, make_egress_path()}) == 2


def test_to_dict_is_plain_and_masked() -> None:
    cfg = make_egress_path(
        enable_tls="Required", max_message_rate="1,000/hr", connect_timeout="2min",
        smtp_auth_plain_username="scott", smtp_auth_plain_password={"key_data": "tiger"},
        additional_message_rate_throttles={"t": "10/5m"}, rustls_cipher_suites=[
            "TLS13_AES_128_GCM_SHA256"],
    )
    d = cfg.to_dict()
    assert list(d) == list(EgressPathConfig.KEYS)
    assert d["enable_tls"] == "Required" and type(d["enable_tls"]) is str
    assert d["max_message_rate"] == "1000/h"
    assert d["connect_timeout"] == 120.0
    assert d["prohibited_hosts"] == ["0.0.0.0/32", "127.0.0.0/8", "::/128", "::1/128"]
    assert d["smtp_auth_plain_password"] == "KeySource(key_data=***)"
    assert d["additional_message_rate_throttles"] == {"t": "10/5m"}
    assert d["rustls_cipher_suites"] == ["TLS13_AES_128_GCM_SHA256"]
    assert "tiger" not in repr(d)
    assert cfg.non_default() == {
        "enable_tls": "Required", "max_message_rate": "1000/h", "connect_timeout": 120.0,
        "smtp_auth_plain_username": "scott", "smtp_auth_plain_password": "KeySource(key_data=***)",
        "additional_message_rate_throttles": {"t": "10/5m"},
        "rustls_cipher_suites": ["TLS13_AES_128_GCM_SHA256"],
    }
    # everything but the password can be fed back in
    plain = {k: v for k, v in d.items() if k != "smtp_auth_plain_password"}
    assert make_egress_path(**plain) == cfg.replace(smtp_auth_plain_password=None)


def test_password_is_lazy_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EGRESS_PW", raising=False)
    cfg = make_egress_path(smtp_auth_plain_username="scott",
                           smtp_auth_plain_password={"env": "EGRESS_PW"})
    assert isinstance(cfg.smtp_auth_plain_password, KeySource)  # built without the variable
    monkeypatch.setenv("EGRESS_PW", "tiger-pw")
    assert resolve_keysource(cfg.smtp_auth_plain_password) == "tiger-pw"  # the driver reads it
    inline = make_egress_path(smtp_auth_plain_username="scott",
                              smtp_auth_plain_password={"key_data": "tiger-pw"})
    for text in (repr(inline), str(inline), repr(inline.to_dict())):
        assert "tiger-pw" not in text
        assert "KeySource(key_data=***)" in text


def test_password_without_username_is_refused() -> None:
    with pytest.raises(ConfigError, match="smtp_auth_plain_password is set but "
                       "smtp_auth_plain_username is not"):
        make_egress_path(smtp_auth_plain_password={"key_data": "tiger"})


def test_pickle_round_trip() -> None:
    cfg = make_egress_path(max_message_rate="5/s", skip_hosts=["192.0.2.0/24"],
                           smtp_auth_plain_username="u", smtp_auth_plain_password={"env": "X"})
    assert pickle.loads(pickle.dumps(cfg)) == cfg
