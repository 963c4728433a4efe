"""The simulated remote world: DNS and the SMTP servers a scenario describes.

Plain Python, no SimPy: the driver owns the clock and asks the world, per
transaction *phase*, what the remote side answers and how long it takes:

- `connect` (TCP connect plus the banner), `release` when it closes,
- `ehlo`, `starttls` (the handshake), `batch_replies` (one write: a pipelined
  RSET/MAIL/RCPT.../DATA batch, or STARTTLS, AUTH, QUIT alone; the replies
  and when the slowest comes; `reply_batch` gives each reply's own delay),
  `body` (the content and the final dot),
- `resolve` and `mta_sts` for DNS and MTA-STS.

Delays are seconds after `now`.  Everything is decided by the `random.Random`
the driver passes in, so a world is deterministic for a seed.  Draws are made
only where the scenario asks for chance (a probability above 0, a latency
that is a distribution), so a world of constant latencies and no failures
draws nothing.

What a host answers is `sim.host_behaviour.HostBehaviour`'s, the code the
lab's servers answer with too; this module adds the client's own costs
(scenario ``[client]``), each host's connection count, and DNS.

Simplifications a capacity planner should know: a pipelined batch is
answered after one command latency (one round trip); a host that does not
pipeline answers each command after its own.  The world keeps no
per-connection transaction state: a batch without MAIL is treated as
following an accepted MAIL, which is all the engine ever sends.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.events import (
    DnsFailure,
    MtaStsResolved,
    MxRecord,
    Resolved,
    ResolveFailed,
)
from engine.reply import Reply
from sim.host_behaviour import HostBehaviour
from sim.host_pushback import UNBOUND_SOURCE
from sim.host_replies import ConnectResult, HostCounters

if TYPE_CHECKING:
    from sim.host_pushback import Pushback
    from sim.scenario import Scenario
    from sim.scenario_world import DomainSpec

__all__ = ["DNS_LATENCY", "World"]

DNS_LATENCY = 0.005  # seconds for every lookup (a warm local resolver)


class World:
    """The scenario's remote side, answering the driver per transaction phase."""

    dns_latency: float = DNS_LATENCY

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.scenario = scenario
        self.rng = rng
        # The client's own time per round trip (scenario [client]), added to
        # every phase that waits for a reply: connect, EHLO, a batch, the body.
        client = scenario.client
        self.overhead: float = client.round_trip_overhead if client is not None else 0.0
        # And its cost of opening a connection, once per attempt (refused ones too).
        self.connect_overhead: float = client.connect_overhead if client is not None else 0.0
        self._connect_extra = self.overhead + self.connect_overhead
        self._hosts: dict[str, HostBehaviour] = {
            n: HostBehaviour(s) for n, s in scenario.hosts.items()
        }
        self._counters: dict[str, HostCounters] = {n: HostCounters() for n in self._hosts}
        # Whether a message's size changes anything (a host with a bandwidth):
        # where none does, `body` may be given any size.
        self.sizes_matter = any(h.bandwidth for h in self._hosts.values())
        self._domains: dict[str, DomainSpec] = dict(scenario.domains)
        self._scenario_hosts = scenario.hosts
        self._by_address = {a: n for n, h in scenario.hosts.items() for a in h.addresses}
        self._alias: dict[str, str] = {}  # a smart host's name -> the host at its address
        self._mx: dict[str, tuple[MxRecord, ...]] = {}
        for name, d in self._domains.items():
            if d.null_mx:
                self._mx[name] = (MxRecord(preference=0, host="."),)
            elif d.implicit:
                self._mx[name] = (
                    MxRecord(preference=0, host=name, addresses=scenario.hosts[name].addresses),
                )
            else:
                self._mx[name] = tuple(
                    MxRecord(preference=m.preference, host=m.host,
                             addresses=scenario.hosts[m.host].addresses)
                    for m in d.mx
                )

    # -- inspection ---------------------------------------------------------------------

    def open_connections(self, host: str) -> int:
        """Connections the host holds now (including ones it answered with 421)."""
        return self.counters(host).open

    def peak_connections(self, host: str) -> int:
        """The most connections the host ever held at once."""
        return self.counters(host).peak_connections

    def counters(self, host: str) -> HostCounters:
        """The host's connection counts (the same counters a lab server keeps)."""
        return self._counters[self._name(host)]

    def _name(self, name: str) -> str:
        if name in self._hosts:
            return name
        key = name.lower().rstrip(".")
        if key not in self._hosts:
            alias = self._alias.get(name)
            if alias is not None:
                return alias
            raise KeyError(f"the simulated world has no host named {name!r}")
        return key

    def _named_at(self, host: str, address: str) -> str:
        """The host a connection to `host` at `address` reaches: by name, or,
        for a name the scenario does not declare (a smart host given as an
        address literal or ``{name, addr}``), the declared host at that address."""
        if host in self._hosts or host.lower().rstrip(".") in self._hosts:
            return self._name(host)
        owner = self._by_address.get(address)
        if owner is None:
            raise KeyError(f"the simulated world has no host named {host!r} and none at "
                           f"{address}")
        self._alias[host] = owner
        return owner

    def _host(self, name: str) -> HostBehaviour:
        h = self._hosts.get(name)
        if h is None:
            h = self._hosts[self._name(name)]
        return h

    # -- connections --------------------------------------------------------------------

    def connect(self, host: str, address: str, now: float, source: str | None = None
                ) -> ConnectResult:
        """A connection attempt to `host` at `address` at time `now`, from the
        `source` address (None: unbound, `UNBOUND_SOURCE` as the lab sees it)."""
        name = self._named_at(host, address)
        c = self._counters[name]
        result = self._hosts[name].connect(
            c.open, now, self.rng, self._connect_extra, self.connect_overhead,
            source or UNBOUND_SOURCE,
        )
        c.connected(result)
        return result

    def release(self, host: str, source: str | None = None) -> None:
        """A connection from `source` that `connect` answered ``"ok"`` has closed."""
        c = self.counters(host)
        if c.open <= 0:
            raise ValueError(f"release({host!r}) without an open connection to it")
        c.released()
        self._host(host).released(source or UNBOUND_SOURCE)

    def pushback(self, host: str) -> Pushback | None:
        """The host's per-source pushback state (`sim.host_pushback`), if it has one."""
        return self._host(host).pushback

    def ehlo(self, host: str, now: float, *, tls: bool = False) -> tuple[float, Reply]:
        """The EHLO reply with the host's capabilities (no STARTTLS once in TLS)."""
        return self._host(host).ehlo(self.rng, tls=tls, overhead=self.overhead)

    def starttls(self, host: str, now: float) -> tuple[float, bool, str]:
        """The TLS handshake after a 220 to STARTTLS: (delay, ok, reason)."""
        return self._host(host).starttls_handshake(self.rng)

    def reply_batch(
        self, host: str, commands: Iterable[Any], now: float, source: str | None = None
    ) -> list[tuple[float, Reply]]:
        """Replies to one write of commands, each with its delay after `now`
        (`HostBehaviour.batch`, as following an accepted MAIL)."""
        return self._host(host).batch(commands, None, now, self.rng, self.overhead,
                                      source=source or UNBOUND_SOURCE)

    def batch_replies(
        self, host: str, commands: Iterable[Any], now: float, source: str | None = None
    ) -> tuple[float, list[Reply]]:
        """`reply_batch`'s replies and the delay of the slowest: a pipelined
        batch is read as it arrives, so its replies come together after the
        slowest one, which is how a pipelining server answers (the driver's
        call, without a (delay, reply) pair per reply)."""
        h = self._hosts.get(host) or self._host(host)  # `_host`, without a call: hot
        return h.replies(commands, now, self.rng, self.overhead, source or UNBOUND_SOURCE)

    def body(self, host: str, size: int, now: float, source: str | None = None
             ) -> tuple[float, Reply]:
        """The reply after the content and the final dot, and when it comes."""
        h = self._hosts.get(host) or self._host(host)
        return h.body(size, self.rng, self.overhead, None, source or UNBOUND_SOURCE, now)

    # -- DNS ------------------------------------------------------------------------------

    def resolve(self, domain: str, now: float) -> Resolved | ResolveFailed:
        """The MX set of `domain` (with addresses), or why the lookup failed.

        The event's `at` is `now` plus `dns_latency`.
        """
        at = now + self.dns_latency
        name = domain.lower().rstrip(".")
        d = self._domains.get(name)
        if d is None:
            return ResolveFailed(at=at, domain=domain, kind=DnsFailure.NXDOMAIN,
                                 detail="not in the scenario")
        for o in d.dns_outages:
            if o.start <= now < o.end:
                return ResolveFailed(at=at, domain=domain, kind=o.kind,
                                     detail="scenario dns_outages")
        if d.nxdomain:
            return ResolveFailed(at=at, domain=domain, kind=DnsFailure.NXDOMAIN)
        if d.servfail:
            return ResolveFailed(at=at, domain=domain, kind=DnsFailure.SERVFAIL)
        return Resolved(at=at, domain=domain, mx=self._mx[name], implicit=d.implicit, ttl=d.ttl)

    def resolve_hosts(self, key: str, hosts: tuple[str, ...], now: float
                      ) -> Resolved | ResolveFailed:
        """The addresses of a queue's smart hosts from the scenario's hosts table,
        answered for `key`; a host the scenario does not have fails the lookup."""
        at = now + self.dns_latency
        records = []
        for i, host in enumerate(hosts):
            spec = self._scenario_hosts.get(host.lower().rstrip("."))
            if spec is None or not spec.addresses:
                return ResolveFailed(at=at, domain=key, kind=DnsFailure.NXDOMAIN,
                                     detail=f"{host}: not in the scenario's hosts")
            records.append(MxRecord(preference=i, host=host, addresses=spec.addresses))
        return Resolved(at=at, domain=key, mx=tuple(records))

    def mta_sts(self, domain: str, now: float) -> MtaStsResolved:
        """The domain's MTA-STS policy (None unless the scenario gives one)."""
        d = self._domains.get(domain.lower().rstrip("."))
        return MtaStsResolved(
            at=now + self.dns_latency, domain=domain, policy=d.mta_sts if d else None
        )
