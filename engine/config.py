"""`make_egress_path`: KumoMTA's egress path configuration, validated once.

An `EgressPathConfig` is a frozen, slotted dataclass with one attribute per
key of the reference page (plus the keys KumoMTA users expect, see
docs/CONTRACT.md).  Every value is checked and normalised in
``__post_init__``, so a bad configuration cannot exist: durations become float
seconds, throttles `Throttle`s, CIDR lists `CidrSet`s, the password a lazy
`KeySource`, mappings read-only `MappingProxyType`s.  The engine reads the
attributes directly and never re-validates.

One table, `_CHECKS`, maps each key to its checker; the checkers raise
`ConfigError` naming the key, the value and what was expected.  Unknown keys
are refused with the closest valid key suggested (difflib), because a typo in
a policy must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from engine.cidr import CidrSet
from engine.durations import duration_above_zero
from engine.errors import ConfigError
from engine.keysource import KeySource
from engine.path_keys import NEWER_CHECKS, RefreshStrategy, limit_spec, refuse_inert
from engine.throttle import Throttle, format_throttle, parse_throttle
from engine.tls_options import (
    check_cipher_list,
    check_cipher_suites,
    check_openssl_options,
    check_rustls_cipher_suites,
)

__all__ = [
    "EgressPathConfig",
    "EnableTls",
    "IpLookupStrategy",
    "ReconnectStrategy",
    "check_keys",
    "make_egress_path",
    "to_plain",
]


class EnableTls(enum.StrEnum):
    """The five TLS modes of the reference page."""

    Opportunistic = "Opportunistic"
    OpportunisticInsecure = "OpportunisticInsecure"
    Required = "Required"
    RequiredInsecure = "RequiredInsecure"
    Disabled = "Disabled"


class IpLookupStrategy(enum.StrEnum):
    """Which address families to resolve for an MX host, and in which order:
    KumoMTA's spellings (crates/dns-resolver/src/lib.rs); A and AAAA in
    parallel by default."""

    Ipv4Only = "Ipv4Only"
    Ipv6Only = "Ipv6Only"
    Ipv4AndIpv6 = "Ipv4AndIpv6"
    Ipv6ThenIpv4 = "Ipv6ThenIpv4"
    Ipv4ThenIpv6 = "Ipv4ThenIpv6"


class ReconnectStrategy(enum.StrEnum):
    """What a session does after its connection is lost mid-way."""

    TerminateSession = "TerminateSession"
    ReconnectSameHost = "ReconnectSameHost"
    ConnectNextHost = "ConnectNextHost"


# -- checkers: (value, key) -> normalised value, or ConfigError --------------

Check = Callable[[Any, str], Any]
_PRINTABLE = re.compile(r"[^\s\x00-\x1f\x7f]+")


def _int(minimum: int, maximum: int | None = None) -> Check:
    def check(value: Any, key: str) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum else f">= {minimum}"
            raise ConfigError(f"{key}: {value!r} is not valid; expected an integer {bound}")
        return int(value)

    return check


class LocalLimit(int):
    """A connection limit written ``"local:N"``: kept in this process even when
    limits are shared through Redis (KumoMTA's ``local:`` prefix).  An `int`,
    so every comparison and sum treats it as N."""

    __slots__ = ()
    local = True

    def __repr__(self) -> str:
        return f"'local:{int(self)}'"


def _conn_limit(value: Any, key: str) -> int:
    """An int >= 1, or KumoMTA's string forms ``"1,000"``, ``"1_000"``, ``"local:20"``."""
    if isinstance(value, str):
        text = value.strip()
        local = text.startswith("local:")
        digits = text.removeprefix("local:").strip().replace(",", "").replace("_", "")
        if digits.isdigit() and int(digits) >= 1:
            return LocalLimit(int(digits)) if local else int(digits)
        raise ConfigError(f"{key}: {value!r} is not valid; expected an integer >= 1 "
                          "or a string such as \"local:20\" or \"1,000\"")
    if isinstance(value, LocalLimit):
        return value
    return _int(1)(value, key)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not valid; expected true or false (a bool)")
    return value


_timeout = duration_above_zero  # a span above 0 s, named by its key


def _opt(check: Check) -> Check:
    def optional(value: Any, key: str) -> Any:
        return None if value is None else check(value, key)

    return optional


def _token(what: str) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
            raise ConfigError(
                f"{key}: {value!r} is not valid; expected {what} (a non-empty string without "
                "spaces or control characters)"
            )
        return value

    return check


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "\0\r\n"):
        raise ConfigError(
            f"{key}: {value!r} is not valid; expected a non-empty string without NUL, CR or LF"
        )
    return value


def _enum(kind: type[enum.StrEnum]) -> Check:
    def check(value: Any, key: str) -> enum.StrEnum:
        if isinstance(value, kind):
            return value
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        choices = ", ".join(repr(m.value) for m in kind)
        hint = ""
        if isinstance(value, str):
            same = [m.value for m in kind if m.value.lower() == value.lower()]
            hint = f" (did you mean {same[0]!r}? names are case-sensitive)" if same else ""
        raise ConfigError(f"{key}: {value!r} is not valid; expected one of {choices}{hint}")

    return check


def _throttle(value: Any, key: str) -> Throttle:
    return parse_throttle(value, key=key)


def _cidr(value: Any, key: str) -> CidrSet:
    return CidrSet.coerce(value, key=key)


def _keysource(value: Any, key: str) -> KeySource:
    return KeySource.coerce(value, key=key)


def _mapping_of(check: Check, what: str) -> Check:
    def mapping(value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{key}: {value!r} is not valid; expected a mapping of name -> {what}"
            )
        out: dict[str, Any] = {}
        for name, item in value.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{key}: entry name {name!r} is not a non-empty string")
            out[name] = check(item, f"{key}[{name!r}]")
        return MappingProxyType(out)

    return mapping


_CHECKS: dict[str, Check] = {
    "connection_limit": _conn_limit,
    "consecutive_connection_failures_before_delay": _int(0),
    "ehlo_domain": _opt(_token("a domain name or address literal")),
    "enable_tls": _enum(EnableTls),
    "enable_mta_sts": _bool,
    "enable_dane": _bool,
    "connect_timeout": _timeout,
    "banner_timeout": _timeout,
    "starttls_timeout": _timeout,
    "ehlo_timeout": _timeout,
    "mail_from_timeout": _timeout,
    "rcpt_to_timeout": _timeout,
    "data_timeout": _timeout,
    "data_dot_timeout": _timeout,
    "rset_timeout": _timeout,
    "idle_timeout": _timeout,
    "auth_timeout": _timeout,
    "max_connection_rate": _opt(_throttle),
    "max_message_rate": _opt(_throttle),
    "max_deliveries_per_connection": _int(1),
    "max_ready": _int(1),
    "prohibited_hosts": _cidr,
    "skip_hosts": _cidr,
    "smtp_port": _int(1, 65535),
    "smtp_auth_plain_username": _opt(_text),
    "smtp_auth_plain_password": _opt(_keysource),
    "allow_smtp_auth_plain_without_tls": _bool,
    "suspended": _bool,
    "aggressive_connection_opening": _bool,
    "tls_prefer_openssl": _bool,
    "openssl_cipher_list": _opt(lambda v, k: check_cipher_list(v, key=k)),
    "openssl_cipher_suites": _opt(lambda v, k: check_cipher_suites(v, key=k)),
    "openssl_options": _opt(lambda v, k: check_openssl_options(v, key=k)),
    "rustls_cipher_suites": _opt(lambda v, k: check_rustls_cipher_suites(v, key=k)),
    "enable_pipelining": _bool,
    "enable_rset": _bool,
    "max_recipients_per_batch": _int(1),
    "additional_connection_limits": _mapping_of(limit_spec(1), "a connection limit >= 1"),
    "additional_message_rate_throttles": _mapping_of(_throttle, "a throttle such as '100/min'"),
    "ip_lookup_strategy": _enum(IpLookupStrategy),
    "reconnect_strategy": _enum(ReconnectStrategy),
    "opportunistic_tls_reconnect_on_failed_handshake": _bool,
    "provider_name": _opt(_text),
    **NEWER_CHECKS,
}


# CidrSets are immutable, so every config shares these two (and their memo).
_PROHIBITED = CidrSet(["127.0.0.0/8", "::1", "0.0.0.0", "::"], key="prohibited_hosts")
_NO_HOSTS = CidrSet(key="skip_hosts")


def _default_prohibited() -> CidrSet:
    return _PROHIBITED


def _no_hosts() -> CidrSet:
    return _NO_HOSTS


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressPathConfig:
    """How traffic from one egress source to one site behaves (KumoMTA's
    ``make_egress_path``).  Build it with `make_egress_path`; derive variants
    with `replace`; show it with `to_dict` (secrets masked)."""

    connection_limit: int = 32
    consecutive_connection_failures_before_delay: int = 100
    ehlo_domain: str | None = None
    enable_tls: EnableTls = EnableTls.Opportunistic
    enable_mta_sts: bool = True
    enable_dane: bool = False
    connect_timeout: float = 60.0
    banner_timeout: float = 60.0
    starttls_timeout: float = 5.0
    ehlo_timeout: float = 300.0
    mail_from_timeout: float = 300.0
    rcpt_to_timeout: float = 300.0
    data_timeout: float = 30.0
    data_dot_timeout: float = 60.0
    rset_timeout: float = 5.0
    idle_timeout: float = 60.0
    auth_timeout: float = 60.0
    max_connection_rate: Throttle | None = None
    max_message_rate: Throttle | None = None
    max_deliveries_per_connection: int = 1024
    max_ready: int = 1024
    prohibited_hosts: CidrSet = field(default_factory=_default_prohibited)
    skip_hosts: CidrSet = field(default_factory=_no_hosts)
    smtp_port: int = 25
    smtp_auth_plain_username: str | None = None
    smtp_auth_plain_password: KeySource | None = None
    allow_smtp_auth_plain_without_tls: bool = False
    suspended: bool = False
    aggressive_connection_opening: bool = False
    tls_prefer_openssl: bool = False
    openssl_cipher_list: str | None = None
    openssl_cipher_suites: str | None = None
    openssl_options: str | None = None
    rustls_cipher_suites: tuple[str, ...] | None = None
    enable_pipelining: bool = True
    enable_rset: bool = True
    max_recipients_per_batch: int = 100
    additional_connection_limits: Mapping[str, int] = field(default_factory=_empty)
    additional_message_rate_throttles: Mapping[str, Throttle] = field(default_factory=_empty)
    ip_lookup_strategy: IpLookupStrategy = IpLookupStrategy.Ipv4AndIpv6
    reconnect_strategy: ReconnectStrategy = ReconnectStrategy.ConnectNextHost
    opportunistic_tls_reconnect_on_failed_handshake: bool = False
    provider_name: str | None = None
    # KumoMTA's keys the reference page lacks (engine/path_keys.py)
    source_selection_rate: Throttle | None = None
    additional_source_selection_rates: Mapping[str, Throttle] = field(default_factory=_empty)
    try_next_host_on_transport_error: bool = False
    remember_broken_tls: float | None = None
    tls_certificate: KeySource | None = None
    tls_private_key: KeySource | None = None
    refresh_interval: float = 60.0
    refresh_strategy: RefreshStrategy = RefreshStrategy.Ttl
    dispatcher_progress_watchdog_timeout: float | None = None

    #: Every key `make_egress_path` accepts, in reference-page order.
    KEYS: ClassVar[tuple[str, ...]] = tuple(_CHECKS)

    def __post_init__(self) -> None:
        for key, check in _CHECKS.items():
            value = getattr(self, key)
            normalised = check(value, key)
            if normalised is not value:
                object.__setattr__(self, key, normalised)
        if self.smtp_auth_plain_password is not None and self.smtp_auth_plain_username is None:
            raise ConfigError(
                "smtp_auth_plain_password is set but smtp_auth_plain_username is not; "
                "AUTH PLAIN needs a username"
            )
        refuse_inert({k: getattr(self, k) for k in NEWER_CHECKS} | {
            "aggressive_connection_opening": self.aggressive_connection_opening})

    def __hash__(self) -> int:
        return hash(tuple(_hashable(getattr(self, k)) for k in _CHECKS))

    def __reduce__(self) -> tuple[Any, ...]:
        # MappingProxyType cannot be pickled (sweeps ship configs to workers);
        # rebuild from plain dicts, re-validating on the way in.  The mappings
        # are always proxies (`_mapping_of`): a concrete type test, because
        # `isinstance(v, Mapping)` on every field of every path's config, as each
        # live snapshot pickles them, filled abc's per-class caches with weak
        # references made mid-burst that outlived it (`engine.live.memory`).
        state = {k: dict(v) if type(v) is MappingProxyType else v for k, v in self._items()}
        return (_rebuild, (state,))

    def _items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in _CHECKS]

    def replace(self, **keys: Any) -> EgressPathConfig:
        """A new validated config with `keys` changed."""
        check_keys(keys, self.KEYS, "EgressPathConfig.replace")
        return dataclasses.replace(self, **keys)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (str, int, float, bool, list, dict, None) for display,
        JSON and the simulator; the password is shown masked."""
        return {key: to_plain(getattr(self, key)) for key in _CHECKS}

    def non_default(self) -> dict[str, Any]:
        """The keys whose value differs from `make_egress_path()`'s, as plain values."""
        base = _defaults().to_dict()
        return {k: v for k, v in self.to_dict().items() if base[k] != v}


def _rebuild(state: dict[str, Any]) -> EgressPathConfig:
    return EgressPathConfig(**state)


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return frozenset(value.items())
    return value


def to_plain(value: Any) -> Any:
    """A configuration value as a plain JSON-able value (secrets masked)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, LocalLimit):
        return f"local:{int(value)}"
    if isinstance(value, Throttle):
        return format_throttle(value)
    if isinstance(value, CidrSet):
        return value.to_list()
    if isinstance(value, KeySource):
        return repr(value)
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    return value


def check_keys(keys: Mapping[str, Any], valid: tuple[str, ...], where: str) -> None:
    """Refuse unknown keys, naming the first and suggesting the closest valid one."""
    for key in keys:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys are: {', '.join(valid)}"
        raise ConfigError(f"{where}: unknown key {key!r}{hint}")


_DEFAULTS: list[EgressPathConfig] = []


def _defaults() -> EgressPathConfig:
    if not _DEFAULTS:
        _DEFAULTS.append(EgressPathConfig())
    return _DEFAULTS[0]


def make_egress_path(**keys: Any) -> EgressPathConfig:
    """Build a validated `EgressPathConfig` from KumoMTA's ``make_egress_path``
    keys; unspecified keys take the reference page's defaults.

    >>> make_egress_path(connect_timeout="2min").connect_timeout
    120.0
    """
    check_keys(keys, EgressPathConfig.KEYS, "make_egress_path")
    return EgressPathConfig(**keys)
