"""Scheduled-queue configuration, egress sources and egress pools.

These are KumoMTA's ``make_queue_config`` (answered by ``get_queue_config``),
``make_egress_source`` and ``make_egress_pool``.  Like `EgressPathConfig`
they are frozen, slotted dataclasses validated in ``__post_init__`` with the
same checkers, so the engine reads plain attributes and a bad value is a
`ConfigError` naming the key at the moment the policy builds it.

KumoMTA's default pool and source are both named ``"unspecified"``; the pool
holds the one source, weight 1.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.config import check_keys, to_plain
from engine.durations import duration_above_zero
from engine.errors import ConfigError
from engine.protocol import SmartHost, SmtpProtocol, parse_protocol
from engine.throttle import Throttle, parse_throttle

__all__ = [
    "UNSPECIFIED",
    "EgressPool",
    "EgressSource",
    "QueueConfig",
    "make_egress_pool",
    "make_egress_source",
    "make_queue_config",
]

UNSPECIFIED = "unspecified"


_positive_duration = duration_above_zero  # a span above 0 s, named by its key


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\0\r\n"):
        raise ConfigError(f"{key}: {value!r} is not valid; expected a non-empty name")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """How a scheduled queue (campaign:tenant@domain) retries and expires."""

    retry_interval: float = 1200.0
    max_retry_interval: float | None = None
    max_age: float = 7 * 86400.0
    egress_pool: str | None = None
    max_message_rate: Throttle | None = None
    protocol: SmtpProtocol | None = None

    KEYS: ClassVar[tuple[str, ...]] = (
        "retry_interval", "max_retry_interval", "max_age", "egress_pool", "max_message_rate",
        "protocol",
    )

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "retry_interval", _positive_duration(self.retry_interval, "retry_interval"))
        if self.max_retry_interval is not None:
            s(self, "max_retry_interval",
              _positive_duration(self.max_retry_interval, "max_retry_interval"))
            if self.max_retry_interval < self.retry_interval:
                raise ConfigError(
                    f"max_retry_interval: {self.max_retry_interval!r} s is below retry_interval "
                    f"({self.retry_interval!r} s); expected max_retry_interval >= retry_interval"
                )
        s(self, "max_age", _positive_duration(self.max_age, "max_age"))
        if self.egress_pool is not None:
            _name(self.egress_pool, "egress_pool")
        if self.max_message_rate is not None:
            rate = parse_throttle(self.max_message_rate, key="max_message_rate")
            s(self, "max_message_rate", rate)
        if self.protocol is not None:
            s(self, "protocol", parse_protocol(self.protocol))

    @property
    def mx_list(self) -> tuple[SmartHost, ...] | None:
        """The smart hosts of ``protocol = {smtp = {mx_list = ...}}``, tried in
        order in place of the domain's MX set; None: resolve the domain's MX."""
        return self.protocol.mx_list if self.protocol is not None else None

    @property
    def pool(self) -> str:
        """The egress pool to use: `egress_pool`, or ``"unspecified"``."""
        return self.egress_pool if self.egress_pool is not None else UNSPECIFIED

    def replace(self, **keys: Any) -> QueueConfig:
        """A new validated queue config with `keys` changed."""
        check_keys(keys, self.KEYS, "QueueConfig.replace")
        return dataclasses.replace(self, **keys)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for display and JSON."""
        plain = {k: to_plain(getattr(self, k)) for k in self.KEYS if k != "protocol"}
        if self.protocol is not None:  # shown only when set: SMTP to the MX set is the rule
            plain["protocol"] = self.protocol.to_plain()
        return plain


def make_queue_config(**keys: Any) -> QueueConfig:
    """KumoMTA's ``make_queue_config``: retry_interval (default "20min"),
    max_retry_interval (none), max_age ("7d"), egress_pool, max_message_rate,
    protocol (``{"smtp": {"mx_list": [...]}}``: a smart host, see
    `engine.protocol`)."""
    check_keys(keys, QueueConfig.KEYS, "make_queue_config")
    return QueueConfig(**keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressSource:
    """Where a connection comes from: a local address and its EHLO name."""

    name: str
    source_address: str | None = None
    ehlo_domain: str | None = None
    remote_port: int | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("name", "source_address", "ehlo_domain", "remote_port")

    def __post_init__(self) -> None:
        _name(self.name, "name")
        if self.source_address is not None:
            try:
                address = ipaddress.ip_address(self.source_address)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"source_address: {self.source_address!r} is not valid; expected an IPv4 or "
                    "IPv6 address such as '192.0.2.10'"
                ) from None
            object.__setattr__(self, "source_address", str(address))
        if self.ehlo_domain is not None and (
            not isinstance(self.ehlo_domain, str)
            or not self.ehlo_domain
            or any(c.isspace() or ord(c) < 32 for c in self.ehlo_domain)
        ):
            raise ConfigError(
                f"ehlo_domain: {self.ehlo_domain!r} is not valid; expected a domain name "
                "without spaces or control characters"
            )
        port = self.remote_port
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
        ):
            raise ConfigError(
                f"remote_port: {port!r} is not valid; expected an integer between 1 and 65535"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for display and JSON."""
        return {k: getattr(self, k) for k in self.KEYS}


def make_egress_source(name: str = UNSPECIFIED, **keys: Any) -> EgressSource:
    """KumoMTA's ``make_egress_source``: name, source_address, ehlo_domain, remote_port."""
    check_keys(keys, EgressSource.KEYS, "make_egress_source")
    return EgressSource(name=name, **keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressPool:
    """A named, weighted set of egress sources: ``entries`` is
    ``((source_name, weight), ...)``, weights >= 1, names unique."""

    name: str
    entries: tuple[tuple[str, int], ...] = ((UNSPECIFIED, 1),)

    KEYS: ClassVar[tuple[str, ...]] = ("name", "entries")

    def __post_init__(self) -> None:
        _name(self.name, "name")
        entries = tuple(_entry(e, i, self.name) for i, e in enumerate(_as_list(self.entries)))
        if not entries:
            raise ConfigError(f"egress pool {self.name!r}: entries is empty; expected at least one")
        names = [n for n, _ in entries]
        for n in names:
            if names.count(n) > 1:
                raise ConfigError(f"egress pool {self.name!r}: source {n!r} is listed twice")
        object.__setattr__(self, "entries", entries)

    @property
    def total_weight(self) -> int:
        """The sum of the entries' weights."""
        return sum(w for _, w in self.entries)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for display and JSON."""
        return {"name": self.name, "entries": [{"name": n, "weight": w} for n, w in self.entries]}


def _as_list(entries: Any) -> list[Any]:
    if isinstance(entries, str | bytes | Mapping) or not hasattr(entries, "__iter__"):
        raise ConfigError(
            f"entries: {entries!r} is not valid; expected a list of "
            "{'name': SOURCE, 'weight': N} entries"
        )
    return list(entries)


def _entry(entry: Any, index: int, pool: str) -> tuple[str, int]:
    where = f"egress pool {pool!r} entries[{index}]"
    if isinstance(entry, str):
        name, weight = entry, 1
    elif isinstance(entry, Mapping):
        extra = set(entry) - {"name", "weight"}
        if extra or "name" not in entry:
            raise ConfigError(
                f"{where}: {dict(entry)!r} is not valid; expected {{'name': SOURCE, 'weight': N}}"
            )
        name, weight = entry["name"], entry.get("weight", 1)
    elif isinstance(entry, tuple) and len(entry) == 2:
        name, weight = entry
    else:
        raise ConfigError(
            f"{where}: {entry!r} is not valid; expected {{'name': SOURCE, 'weight': N}}"
        )
    _name(name, f"{where} name")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ConfigError(f"{where} weight: {weight!r} is not valid; expected an integer >= 1")
    return name, weight


def make_egress_pool(name: str = UNSPECIFIED, entries: Any = None) -> EgressPool:
    """KumoMTA's ``make_egress_pool``: ``entries=[{"name": src, "weight": 1}, ...]``
    (a bare source name means weight 1).  Without entries, the pool holds the
    ``"unspecified"`` source."""
    if entries is None:
        return EgressPool(name=name)
    return EgressPool(name=name, entries=entries)
