"""What the engine knows about one destination: a domain's MX set, or the
smart hosts of a queue config (``protocol = {smtp = {mx_list = ...}}``).

A destination is keyed by `engine.protocol.route_key`: the routing domain, or
the smart hosts' site name ``mx_list:...`` (queues with the same list share
it).  Three kinds, following KumoMTA:

- a domain name: its MX set is looked up (`Resolve`);
- a domain literal such as ``[127.0.0.1]``: the address itself, site name the
  bare address (crates/mailexchanger/src/lib.rs, ``resolve_impl``: a
  ``Literal`` gives one host, no DNS); a malformed literal fails as a
  lookup does;
- smart hosts: tried in the order listed (crates/kumod/src/smtp_dispatcher.rs,
  ``SmtpDispatcher::init``); an entry with an address is used as is, a bare
  host name needs its A/AAAA (`ResolveHosts`, answered with `Resolved`).
"""

from __future__ import annotations

import ipaddress

from mypy_extensions import mypyc_attr

from engine.effects import Effect, Resolve, ResolveHosts
from engine.events import MxRecord
from engine.message import Message
from engine.protocol import SmartHost

__all__ = ["DomainState", "literal_address", "lookup", "smart_mx", "static_mx"]

STATIC_TTL = float("inf")  # an address given in the config is never looked up again


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class DomainState:
    """A destination's cached MX answer, and the messages parked until it is known.

    `smart` holds the smart hosts when the key is an ``mx_list`` site."""

    __slots__ = ("expires", "mx", "null", "parked", "resolving", "site", "smart")

    def __init__(self, smart: tuple[SmartHost, ...] | None = None) -> None:
        self.mx: tuple[MxRecord, ...] = ()
        self.site: str | None = None
        self.expires = float("-inf")
        self.null = False
        self.parked: list[Message] = []
        self.resolving = False
        self.smart = smart


def literal_address(domain: str) -> str | None:
    """The address of a domain literal (``[127.0.0.1]``, ``[IPv6:::1]``, or
    KumoMTA's untagged ``[::1]``); None for a domain name.  A malformed
    literal raises ValueError naming it."""
    if not domain.startswith("["):
        return None
    if not domain.endswith("]"):
        raise ValueError(f"domain literal {domain!r} has no trailing ']'")
    text = domain[1:-1].lower()
    text = text.removeprefix("ipv6:")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"domain literal {domain!r} is not an IPv4 or IPv6 address") from None


def smart_mx(hosts: tuple[SmartHost, ...], answer: tuple[MxRecord, ...] = ()
             ) -> tuple[MxRecord, ...]:
    """The MX set that tries `hosts` in order: one record per address, each a
    preference of its own so the plan keeps the order (KumoMTA does not shuffle
    an mx_list).  A bare name takes its addresses from `answer` (the
    `ResolveHosts` reply); one with none is left out."""
    found = {r.host.lower().rstrip("."): r.addresses for r in answer}
    out: list[MxRecord] = []
    for host in hosts:
        addresses = (host.addr,) if host.addr is not None else found.get(host.name, ())
        for address in addresses:
            out.append(MxRecord(preference=len(out), host=host.name, addresses=(address,)))
    return tuple(out)


def static_mx(key: str, smart: tuple[SmartHost, ...] | None) -> tuple[MxRecord, ...] | None:
    """The MX set of a destination known without DNS (a domain literal, or smart
    hosts that all have addresses), else None.  ValueError for a malformed literal."""
    if smart is not None:
        return smart_mx(smart) if all(h.addr is not None for h in smart) else None
    address = literal_address(key)
    if address is None:
        return None
    return (MxRecord(preference=1, host=address, addresses=(address,)),)


def lookup(key: str, ds: DomainState) -> Effect:
    """The lookup that answers for `key`: the smart hosts' A/AAAA, or the MX set."""
    if ds.smart is not None:
        names = tuple(dict.fromkeys(h.name for h in ds.smart if h.addr is None))
        return ResolveHosts(domain=key, hosts=names)
    return Resolve(domain=key)
