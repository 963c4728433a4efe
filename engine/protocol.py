"""A queue's delivery protocol: KumoMTA's ``make_queue_config { protocol = ... }``.

KumoMTA delivers a queue by SMTP to its domain's MX hosts unless the queue
config names a protocol.  The one spelled here is its smart host::

    make_queue_config(protocol={"smtp": {"mx_list": [
        "smart.host.local",                          # resolved for A/AAAA
        "[127.0.0.1]",                               # an address literal
        {"name": "mx.example.com", "addr": "10.0.0.1"},  # a name with its address
    ]}})

The hosts are tried in the order given, in place of the domain's MX set.
KumoMTA's other protocols (maildir, lua) deliver somewhere other than SMTP,
which egress does not do; naming one is a `ConfigError`, as is any bad entry.

Values only: `SmtpProtocol` is frozen and hashable so a `QueueConfig` holding
it stays a plain value; `to_plain` gives back KumoMTA's spelling.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError

__all__ = ["SmartHost", "SmtpProtocol", "parse_protocol", "route_key"]

# A host name: dot-separated labels of letters, digits, '-' and '_' (the last
# for internal names), an optional trailing dot.
_HOSTNAME = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")
_EXPECTED = ("expected {'smtp': {'mx_list': [HOST, ...]}} where HOST is a host name, an "
             "address literal such as '[127.0.0.1]', or {'name': NAME, 'addr': ADDRESS}")


@dataclass(frozen=True, slots=True)
class SmartHost:
    """One entry of ``mx_list``: the name the session uses (EHLO target, TLS
    name, site name) and its address when given (None: resolve A/AAAA)."""

    name: str
    addr: str | None = None

    @property
    def label(self) -> str:
        """The entry's part of the site name: the name as written, or for a
        ``{name, addr}`` entry its address (KumoMTA's ``MxListEntry::label``)."""
        return self.name if self.addr is None or self.name == f"[{self.addr}]" else self.addr

    def to_plain(self) -> str | dict[str, str]:
        """KumoMTA's spelling: a string, or ``{name, addr}``."""
        if self.addr is None or self.name == f"[{self.addr}]":
            return self.name
        return {"name": self.name, "addr": self.addr}


@dataclass(frozen=True, slots=True)
class SmtpProtocol:
    """SMTP to these hosts, in this order, instead of the domain's MX set."""

    mx_list: tuple[SmartHost, ...]

    @property
    def site_name(self) -> str:
        """The site these hosts make, as KumoMTA names it
        (crates/kumod/src/ready_queue.rs, ``compute_queue_name``):
        ``mx_list:`` and the entries' labels joined by commas.  Queues with
        the same list share the site, and so its connections."""
        return "mx_list:" + ",".join(h.label for h in self.mx_list)

    def to_plain(self) -> dict[str, Any]:
        """KumoMTA's spelling: ``{"smtp": {"mx_list": [...]}}``."""
        return {"smtp": {"mx_list": [h.to_plain() for h in self.mx_list]}}


def parse_protocol(value: Any, key: str = "protocol") -> SmtpProtocol:
    """`value` (KumoMTA's ``protocol`` table, or an `SmtpProtocol`) validated;
    a `ConfigError` naming the key path and the bad value otherwise."""
    if isinstance(value, SmtpProtocol):
        return value
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ConfigError(f"{key}: {value!r} is not valid; {_EXPECTED}")
    ((kind, smtp),) = value.items()
    if kind != "smtp":
        raise ConfigError(f"{key}: protocol {kind!r} is not supported (egress delivers by SMTP "
                          f"only, not KumoMTA's maildir or lua); {_EXPECTED}")
    where = f"{key}.smtp"
    if not isinstance(smtp, Mapping) or set(smtp) != {"mx_list"}:
        extra = sorted(set(smtp) - {"mx_list"}) if isinstance(smtp, Mapping) else None
        why = f"unknown key {extra[0]!r}" if extra else "no mx_list"
        raise ConfigError(f"{where}: {smtp!r} is not valid ({why}); {_EXPECTED}")
    hosts = smtp["mx_list"]
    if isinstance(hosts, str | bytes | Mapping) or not isinstance(hosts, list | tuple):
        raise ConfigError(f"{where}.mx_list: {hosts!r} is not valid; expected a list of hosts")
    if not hosts:
        raise ConfigError(f"{where}.mx_list: empty; expected at least one host")
    parsed = tuple(_host(h, f"{where}.mx_list[{i}]") for i, h in enumerate(hosts))
    return SmtpProtocol(parsed)


def _host(entry: Any, where: str) -> SmartHost:
    if isinstance(entry, str):
        if entry.startswith("[") and entry.endswith("]"):
            addr = _address(entry[1:-1], where, entry)
            return SmartHost(f"[{addr}]", addr)
        return SmartHost(_hostname(entry, where), None)
    if isinstance(entry, Mapping):
        if set(entry) != {"name", "addr"}:
            raise ConfigError(f"{where}: {dict(entry)!r} is not valid; expected "
                              "{'name': NAME, 'addr': ADDRESS}")
        return SmartHost(_hostname(entry["name"], f"{where}.name"),
                         _address(entry["addr"], f"{where}.addr", entry["addr"]))
    raise ConfigError(f"{where}: {entry!r} is not valid; expected a host name, an address "
                      "literal such as '[127.0.0.1]', or {'name': NAME, 'addr': ADDRESS}")


def _hostname(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _HOSTNAME.fullmatch(value) or _is_address(value):
        hint = " (enclose an address in [])" if _is_address(value) else ""
        raise ConfigError(f"{where}: {value!r} is not a valid host name{hint}")
    return value.rstrip(".").lower()


def _address(text: Any, where: str, shown: Any) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: {shown!r} is not valid; expected an IPv4 or IPv6 "
                          "address such as '127.0.0.1' or '::1'") from None


def _is_address(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return False
    return True


def route_key(config: Any, domain: str) -> str:
    """Where a queue's messages are routed: the site name of the queue config's
    smart hosts (``mx_list:...``, which no domain can be), else `domain`, whose
    MX set decides.  The engine keeps one MX answer per key."""
    protocol = getattr(config, "protocol", None)
    return protocol.site_name if isinstance(protocol, SmtpProtocol) else domain
