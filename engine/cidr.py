"""CIDR sets: prohibited_hosts and skip_hosts.

A `CidrSet` is built once from the configuration and asked ``addr in cidrs``
for every resolved MX address, so membership is the fast path: the networks
are merged into sorted, disjoint integer ranges per IP version and looked up
with `bisect`, and answers are memoised per address string (MX sets repeat).
Parsing uses the stdlib `ipaddress` module.  Host bits set in a network
("10.0.0.1/8") are refused rather than silently masked: that is usually a typo.
IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are matched as their IPv4
address, so mail-loop protection cannot be bypassed by spelling.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator

from engine.errors import ConfigError

__all__ = ["CidrSet"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_MAX = 4096


def _parse_network(entry: object, key: str) -> _Network:
    if isinstance(entry, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return entry
    if isinstance(entry, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ipaddress.ip_network(entry)
    if not isinstance(entry, str):
        raise ConfigError(
            f"{key}: {entry!r} is not a CIDR network; expected a string such as "
            "'10.0.0.0/8', '192.0.2.1' or '2001:db8::/32'"
        )
    try:
        return ipaddress.ip_network(entry.strip(), strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"{key}: {entry!r} is not a CIDR network or IP address ({exc}); expected e.g. "
                "'10.0.0.0/8', '192.0.2.1' or '2001:db8::/32'"
            ) from None
        raise ConfigError(
            f"{key}: {entry!r} has host bits set; did you mean {str(loose)!r}?"
        ) from None


def _merge(networks: Iterable[_Network]) -> tuple[list[int], list[int]]:
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks)
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in spans:
        if ends and lo <= ends[-1] + 1:
            if hi > ends[-1]:
                ends[-1] = hi
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


class CidrSet:
    """An immutable set of IPv4/IPv6 networks with a fast ``addr in cidrs`` test.

    Equality and hashing are by the set of networks, whatever order or
    spelling they were given in.
    """

    __slots__ = ("_cache", "_networks", "_v4", "_v6")

    def __init__(self, entries: Iterable[object] = (), *, key: str = "cidr list") -> None:
        if isinstance(entries, str | bytes):
            raise ConfigError(
                f"{key}: {entries!r} is a single string; expected a list of networks such as "
                "['10.0.0.0/8', '::1']"
            )
        nets = {_parse_network(e, key) for e in entries}
        self._networks: tuple[_Network, ...] = tuple(
            sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen))
        )
        self._v4 = _merge(n for n in self._networks if n.version == 4)
        self._v6 = _merge(n for n in self._networks if n.version == 6)
        self._cache: dict[str, bool] = {}

    @classmethod
    def coerce(cls, value: object, *, key: str = "cidr list") -> CidrSet:
        """A `CidrSet` from a CidrSet, a list/tuple/set of networks, or one string."""
        if isinstance(value, CidrSet):
            return value
        if isinstance(value, str):
            return cls([value], key=key)
        if isinstance(value, list | tuple | set | frozenset):
            return cls(value, key=key)
        raise ConfigError(
            f"{key}: {value!r} is not a CIDR list; expected a list of networks or addresses "
            "such as ['10.0.0.0/8', '::1']"
        )

    def __contains__(self, addr: object) -> bool:
        if isinstance(addr, str):
            hit = self._cache.get(addr)
            if hit is not None:
                return hit
            result = self._lookup(addr)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[addr] = result
            return result
        if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return self._match(addr)
        return False

    def _lookup(self, addr: str) -> bool:
        text = addr.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{addr!r} is not an IP address") from None
        return self._match(ip)

    def _match(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        starts, ends = self._v4 if ip.version == 4 else self._v6
        value = int(ip)
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]

    @property
    def networks(self) -> tuple[_Network, ...]:
        """The networks, sorted (IPv4 first), duplicates removed."""
        return self._networks

    def to_list(self) -> list[str]:
        """The networks as strings, in the form `CidrSet` accepts back."""
        return [str(n) for n in self._networks]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_list())

    def __len__(self) -> int:
        return len(self._networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CidrSet):
            return NotImplemented
        return self._networks == other._networks

    def __hash__(self) -> int:
        return hash(self._networks)

    def __repr__(self) -> str:
        return f"CidrSet({self.to_list()!r})"
