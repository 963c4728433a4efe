"""The lab's DNS server: the scenario's MX and A records, remapped to loopback.

`LabZone` is built from a scenario and the lab's address map (scenario
address -> 127.0.0.x): every domain's MX set (a null MX ``0 .``, NXDOMAIN or
SERVFAIL when the scenario says so, no MX for an implicit one), every host's
A records at its lab addresses, and ``_mta-sts`` TXT records for domains with
an MTA-STS policy.  `dns_outages` act on the lab clock: SERVFAIL and
NXDOMAIN are answered as such, TIMEOUT is a dropped query.

`LabZone.answer(query_bytes, now)` is a pure function of the zone and the
time (the tests call it directly); `DnsServer` is the asyncio UDP endpoint
around it on 127.0.0.1, in the same event loop as the SMTP servers, so a lab
needs no thread.  dnslib does the wire format.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dnslib

if TYPE_CHECKING:
    from sim.scenario import Scenario

RCODES = {"NXDOMAIN": dnslib.RCODE.NXDOMAIN, "SERVFAIL": dnslib.RCODE.SERVFAIL}


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class _Name:
    """What the zone holds for one name."""

    records: dict[str, list[Any]] = field(default_factory=dict)  # type -> rdata
    ttl: int = 300
    fault: str | None = None  # "NXDOMAIN" | "SERVFAIL": always
    outages: tuple[tuple[float, float, str], ...] = ()  # (start, end, kind) on the lab clock


class LabZone:
    """The scenario's DNS, with host addresses replaced by their lab addresses."""

    def __init__(self, scenario: Scenario, address_map: Mapping[str, str]) -> None:
        self.names: dict[str, _Name] = {}
        for host, spec in scenario.hosts.items():
            entry = self.names.setdefault(_norm(host), _Name())
            entry.records["A"] = [dnslib.A(address_map[a]) for a in spec.addresses]
        for name, d in scenario.domains.items():
            entry = self.names.setdefault(_norm(name), _Name())
            entry.ttl = max(0, round(d.ttl))
            entry.outages = tuple((o.start, o.end, o.kind.value) for o in d.dns_outages)
            if d.nxdomain:
                entry.fault = "NXDOMAIN"
            elif d.servfail:
                entry.fault = "SERVFAIL"
            elif d.null_mx:
                entry.records["MX"] = [dnslib.MX(".", 0)]
            elif d.mx:
                entry.records["MX"] = [dnslib.MX(m.host, m.preference) for m in d.mx]
            if d.mta_sts is not None:
                policy_id = hashlib.sha256(repr(d.mta_sts).encode()).hexdigest()[:16]
                sts = self.names.setdefault(f"_mta-sts.{_norm(name)}", _Name())
                sts.records["TXT"] = [dnslib.TXT(f"v=STSv1; id={policy_id}")]
                sts.outages = entry.outages

    def answer(self, data: bytes, now: float) -> bytes | None:
        """The response to one query at lab time `now`; None drops it (a timeout)."""
        try:
            request = dnslib.DNSRecord.parse(data)
        except (dnslib.DNSError, ValueError, IndexError):
            return None
        reply = request.reply()
        reply.header.ra = 1
        qname = _norm(str(request.q.qname))
        qtype = dnslib.QTYPE[request.q.qtype]
        entry = self.names.get(qname)
        if entry is None:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            return reply.pack()
        fault = entry.fault
        for start, end, kind in entry.outages:
            if start <= now < end:
                fault = kind
                break
        if fault == "TIMEOUT":
            return None
        if fault is not None:
            reply.header.rcode = RCODES[fault]
            return reply.pack()
        for rdata in entry.records.get(qtype, ()):
            reply.add_answer(
                dnslib.RR(request.q.qname, getattr(dnslib.QTYPE, qtype), rdata=rdata,
                          ttl=entry.ttl)
            )
        return reply.pack()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.queries += 1
        out = self.server.zone.answer(data, self.server.clock())
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


class DnsServer:
    """`LabZone` served over UDP on 127.0.0.1 (`port` 0: a free one)."""

    def __init__(self, zone: LabZone, clock: Callable[[], float], *,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if not host.startswith("127."):
            raise ValueError(f"the lab DNS server binds 127.0.0.0/8 only, not host={host!r}")
        self.zone = zone
        self.clock = clock
        self.host = host
        self.port = port
        self.queries = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Bind and serve on the running loop; `port` is then the bound port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        """Stop serving."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
