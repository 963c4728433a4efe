"""make_egress_path keys as KumoMTA spells and types them.

Follows crates/kumo-api-types/src/egress_path.rs (EgressPathConfig: its keys,
types and defaults), crates/dns-resolver/src/lib.rs (IpLookupStrategy's
spellings and its default, Ipv4AndIpv6) and crates/throttle/src/lib.rs
(LimitSpec: an integer or ``"[local:]N"`` with ``,``/``_`` separators).
"""

from __future__ import annotations

import pytest

from engine.config import IpLookupStrategy, ReconnectStrategy, make_egress_path
from engine.errors import ConfigError
from engine.path_keys import RefreshStrategy
from engine.ready import CONFIG_REFRESH
from engine.throttle import Throttle


def test_ip_lookup_strategy_spellings_and_default() -> None:
    # crates/dns-resolver/src/lib.rs: #[default] Ipv4AndIpv6
    assert [m.value for m in IpLookupStrategy] == [
        "Ipv4Only", "Ipv6Only", "Ipv4AndIpv6", "Ipv6ThenIpv4", "Ipv4ThenIpv6"]
    assert make_egress_path().ip_lookup_strategy is IpLookupStrategy.Ipv4AndIpv6
    assert make_egress_path(ip_lookup_strategy="Ipv4ThenIpv6").ip_lookup_strategy == "Ipv4ThenIpv6"
    with pytest.raises(ConfigError, match="did you mean 'Ipv4ThenIpv6'"):
        make_egress_path(ip_lookup_strategy="Ipv4thenIpv6")


def test_reconnect_strategy_values_and_default() -> None:
    # egress_path.rs: enum ReconnectStrategy, #[default] ConnectNextHost
    assert [m.value for m in ReconnectStrategy] == [
        "TerminateSession", "ReconnectSameHost", "ConnectNextHost"]
    assert make_egress_path().reconnect_strategy is ReconnectStrategy.ConnectNextHost


@pytest.mark.parametrize(("given", "limit"),
                         [(20, 20), ("20", 20), ("local:20", 20), ("1_000", 1000),
                          ("local:1,000", 1000)])
def test_connection_limit_takes_limit_spec_strings(given: object, limit: int) -> None:
    cfg = make_egress_path(connection_limit=given,
                           additional_connection_limits={"shared": given})
    assert cfg.connection_limit == limit
    assert cfg.additional_connection_limits["shared"] == limit


@pytest.mark.parametrize("bad", ["local:0", "0", "local:", "20/s", "-1"])
def test_connection_limit_refuses_what_limit_spec_refuses(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^connection_limit: .*\"local:20\""):
        make_egress_path(connection_limit=bad)


def test_newer_keys_parse_with_kumomta_defaults() -> None:
    cfg = make_egress_path()
    assert cfg.source_selection_rate is None
    assert dict(cfg.additional_source_selection_rates) == {}
    assert cfg.try_next_host_on_transport_error is False
    assert cfg.remember_broken_tls is None
    assert cfg.tls_certificate is None and cfg.tls_private_key is None
    # default_refresh_interval() is 60 s, the period egress re-asks the policy at
    assert cfg.refresh_interval == 60.0 == CONFIG_REFRESH
    assert cfg.refresh_strategy is RefreshStrategy.Ttl
    assert cfg.dispatcher_progress_watchdog_timeout is None
    # the defaults, spelled out, are accepted
    assert make_egress_path(refresh_interval="1m", refresh_strategy="Ttl",
                            try_next_host_on_transport_error=False,
                            additional_source_selection_rates={}) == cfg


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("aggressive_connection_opening", True, "True"),
    ],
)
def test_keys_egress_does_not_act_on_are_refused_not_ignored(
    key: str, value: object, shown: str
) -> None:
    with pytest.raises(ConfigError) as err:
        make_egress_path(**{key: value})
    msg = str(err.value)
    assert msg.startswith(f"{key}: ") and "is not supported by egress" in msg, msg
    assert shown in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("source_selection_rate", "fast", "not a valid throttle"),
        ("additional_source_selection_rates", ["10/s"], "expected a mapping"),
        ("try_next_host_on_transport_error", "yes", "(a bool)"),
        ("remember_broken_tls", "soon", "not a valid duration"),
        ("refresh_interval", None, "expected a duration above 0"),
        ("refresh_strategy", "Lazy", "expected one of 'Ttl', 'Epoch'"),
        ("tls_certificate", {"key_dta": "x"}, "keysource"),
    ],
)
def test_newer_keys_validate_their_type(key: str, value: object, why: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        make_egress_path(**{key: value})
    assert why in str(err.value)


def test_source_selection_throttle_type() -> None:
    from engine.path_keys import NEWER_CHECKS
    assert NEWER_CHECKS["source_selection_rate"]("10/s", "k") == Throttle(10, 1.0)
