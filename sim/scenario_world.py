"""The remote world a scenario describes: its `[domains]` and `[hosts]` tables.

These are plain frozen values (what the file says, validated and with the
defaults filled in); `sim.world.World` turns them into per-host state with
precomputed replies, and the lab realises the same values as real servers on
loopback.  Keeping the description apart from its realisations is what lets
the same scenario run both ways.

`[host_defaults]` gives every field a default for all hosts; a host an MX
list (or an implicit MX) names without declaring it takes those defaults
whole.  Without `[host_defaults]` such a host is an error naming both the
domain and the host.  Hosts without an address get a made-up one from the
documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, then
2001:db8::/32): they are labels in the simulation and are never contacted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.events import DnsFailure, MtaStsPolicy
from engine.reply import Reply
from sim.distributions import Distribution
from sim.host_pushback import PushbackSpec, build_pushback
from sim.scenario_schema import Table

OUTAGE_MODES = ("refuse", "tempfail", "blackhole")
DNS_FAILURE_KINDS = ("SERVFAIL", "TIMEOUT", "NXDOMAIN")

# Defaults for a host nobody described: a healthy, nearby, modern MX.
HOST_DEFAULTS: dict[str, Any] = {
    "connect_latency": "20ms",
    "command_latency": "10ms",
    "data_latency": "50ms",
    "tls_latency": "20ms",
}


# The faults a host draws per command, and the class of reply each gives.
FAULT_CLASSES: dict[str, int] = {
    "tempfail_mail": 4,
    "tempfail_rcpt": 4,
    "permfail_rcpt": 5,
    "tempfail_data": 4,
    "permfail_data": 5,
}


@dataclass(frozen=True, slots=True)
class Outage:
    """A window of simulated time [start, end) in which a host misbehaves.

    Inside the window each transaction (a connection attempt for ``refuse``
    and ``blackhole``, a MAIL for ``tempfail``) is hit with `probability`;
    `reply` (a ``tempfail`` outage only) replaces the default 451 4.3.0.
    """

    start: float
    end: float
    mode: str  # "refuse" | "tempfail" | "blackhole"
    probability: float = 1.0
    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class DnsOutage:
    """A window in which a domain's lookups fail with `kind`."""

    start: float
    end: float
    kind: DnsFailure


@dataclass(frozen=True, slots=True)
class HostSpec:
    """How one simulated SMTP server behaves."""

    name: str
    addresses: tuple[str, ...]
    connect_latency: Distribution
    command_latency: Distribution
    data_latency: Distribution
    tls_latency: Distribution
    data_bandwidth: float | None  # bytes per second for the body, None = not modelled
    max_connections: int | None  # None = unlimited
    refuse_connections: float
    tempfail_mail: float
    tempfail_rcpt: float
    permfail_rcpt: float
    tempfail_data: float
    permfail_data: float
    starttls: bool
    tls_failure: float
    pipelining: bool
    auth: bool
    outages: tuple[Outage, ...]
    # (fault, reply) for faults given as {probability, reply}: the reply
    # replaces that fault's default (FAULT_CLASSES names the faults).
    fault_replies: tuple[tuple[str, Reply], ...] = ()
    pushback: PushbackSpec | None = None  # per-source limits and reputation (sim.host_pushback)


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """The sending side's own costs (the top-level ``[client]`` table).

    `round_trip_overhead` is the time the client itself spends per round
    trip (its event loop, the engine's handling of the reply, encoding the
    next commands, the local network stack), which a real client adds to
    every server latency and the simulated world would otherwise take as
    zero.  `sim.world.World` adds it once per phase that waits for a reply
    (connect, EHLO, a command batch, the body), once per command for a host
    that does not pipeline.

    `connect_overhead` is the client's own cost of opening one connection
    (creating the socket, the connect, its event loop noticing that it
    completed), paid once per connection attempt on top of the host's
    ``connect_latency``: where connections churn (a host that answers 421
    beyond its limit) it sets how fast refused connections are retried.
    The lab measures both (`lab.timing`).  Default 0 for both: results of
    existing scenarios do not move.
    """

    round_trip_overhead: float = 0.0
    connect_overhead: float = 0.0


MAX_ROUND_TRIP_OVERHEAD = 1.0  # seconds; more is surely a unit mistake ("0.5" for 0.5 ms)
MAX_CONNECT_OVERHEAD = 1.0  # seconds, the same reasoning


def build_client(top: Table) -> ClientSpec:
    """Validate the optional top-level ``[client]`` table."""
    t = top.table("client", None)
    if t is None:
        return ClientSpec()
    overhead = t.duration("round_trip_overhead", 0.0)
    if overhead > MAX_ROUND_TRIP_OVERHEAD:
        raise t.expected(
            "round_trip_overhead",
            f'a duration of at most {MAX_ROUND_TRIP_OVERHEAD:g}s (the client\'s own time per '
            'round trip, such as "0.5ms")',
            t.data["round_trip_overhead"],
        )
    connect = t.duration("connect_overhead", 0.0)
    if connect > MAX_CONNECT_OVERHEAD:
        raise t.expected(
            "connect_overhead",
            f'a duration of at most {MAX_CONNECT_OVERHEAD:g}s (the client\'s own cost of '
            'opening a connection, such as "1ms")',
            t.data["connect_overhead"],
        )
    t.finish()
    return ClientSpec(round_trip_overhead=overhead, connect_overhead=connect)


@dataclass(frozen=True, slots=True)
class MxSpec:
    host: str
    preference: int


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """How one destination domain resolves.

    Exactly one of: `mx` non-empty, `null_mx`, `nxdomain`, `servfail`; or none
    of them (an implicit MX: the domain itself is the host).
    """

    name: str
    mx: tuple[MxSpec, ...]
    null_mx: bool
    nxdomain: bool
    servfail: bool
    dns_outages: tuple[DnsOutage, ...]
    mta_sts: MtaStsPolicy | None
    ttl: float

    @property
    def implicit(self) -> bool:
        return not (self.mx or self.null_mx or self.nxdomain or self.servfail)


# -- hosts ----------------------------------------------------------------------


def _outages(t: Table) -> tuple[Outage, ...]:
    out = []
    for o in t.tables("outages"):
        start, end = o.duration("start"), o.duration("end")
        if end <= start:
            raise o.expected("end", f"a time after start ({o.data['start']!r})", o.data["end"])
        mode = o.string("mode", "refuse")
        if mode not in OUTAGE_MODES:
            raise o.expected("mode", "one of " + ", ".join(map(repr, OUTAGE_MODES)), mode)
        probability = o.probability("probability", 1.0)
        reply = None
        if o.has("reply"):
            if mode != "tempfail":
                raise o.error("reply", f"a {mode} outage gives no reply (it "
                              f"{'refuses connections' if mode == 'refuse' else 'never answers'}"
                              "); only a tempfail outage takes one")
            reply = o.reply("reply", 4)
        o.finish()
        out.append(Outage(start, end, mode, probability, reply))
    return tuple(sorted(out, key=lambda x: (x.start, x.end)))


def _fault(t: Table, key: str, replies: list[tuple[str, Reply]]) -> float:
    """A fault's probability, written as a number or as ``{probability, reply}``
    (the reply is appended to `replies`)."""
    value = t.data.get(key)
    if not isinstance(value, dict):
        return t.probability(key)
    t.raw(key)
    f = Table(value, t.where(key), t.source)
    if not f.has("probability"):
        raise f.error("probability", "this field is required (the chance of the fault)")
    probability = f.probability("probability")
    if f.has("reply"):
        replies.append((key, f.reply("reply", FAULT_CLASSES[key])))
    f.finish()
    return probability


def _bandwidth(t: Table) -> float | None:
    value = t.raw("data_bandwidth", None)
    if value is None:
        return None
    text = value[:-2] if isinstance(value, str) and value.endswith("/s") else value
    try:
        size = t.parse_size("data_bandwidth", text)
    except ValueError:
        size = 0
    if size <= 0:
        raise t.expected(
            "data_bandwidth", 'bytes per second above 0, such as 12500000 or "10MB/s"', value
        )
    return float(size)


def check_host_fields(t: Table, *, allow_address: bool) -> HostSpec:
    """Validate a host table (or [host_defaults]); the spec has no addresses yet."""
    if allow_address:
        if t.has("address") and t.has("addresses"):
            raise t.error("addresses", "give either address or addresses, not both")
        addresses = _addresses(t)
    else:
        addresses = ()
    max_conn = t.integer("max_connections", None, minimum=1)
    replies: list[tuple[str, Reply]] = []
    spec = HostSpec(
        name=t.path,
        addresses=addresses,
        connect_latency=t.distribution("connect_latency", HOST_DEFAULTS["connect_latency"]),
        command_latency=t.distribution("command_latency", HOST_DEFAULTS["command_latency"]),
        data_latency=t.distribution("data_latency", HOST_DEFAULTS["data_latency"]),
        tls_latency=t.distribution("tls_latency", HOST_DEFAULTS["tls_latency"]),
        data_bandwidth=_bandwidth(t),
        max_connections=max_conn,
        refuse_connections=t.probability("refuse_connections"),
        tempfail_mail=_fault(t, "tempfail_mail", replies),
        tempfail_rcpt=_fault(t, "tempfail_rcpt", replies),
        permfail_rcpt=_fault(t, "permfail_rcpt", replies),
        tempfail_data=_fault(t, "tempfail_data", replies),
        permfail_data=_fault(t, "permfail_data", replies),
        starttls=t.boolean("starttls", True),
        tls_failure=t.probability("tls_failure"),
        pipelining=t.boolean("pipelining", True),
        auth=t.boolean("auth", False),
        outages=_outages(t),
        fault_replies=tuple(replies),
        pushback=build_pushback(t),
    )
    for a, b in (("tempfail_rcpt", "permfail_rcpt"), ("tempfail_data", "permfail_data")):
        total = getattr(spec, a) + getattr(spec, b)
        if total > 1.0:
            raise t.error(b, f"expected {a} + {b} to be at most 1, got {total:g}")
    t.finish()
    return spec


def _addresses(t: Table) -> tuple[str, ...]:
    what = "an IPv4 or IPv6 address"
    t.raw("address", None)
    t.raw("addresses", None)
    if t.has("address"):
        values, key = [t.raw("address")], "address"
    elif t.has("addresses"):
        values, key = t.raw("addresses"), "addresses"
        if not isinstance(values, list) or not values:
            raise t.expected(key, "a non-empty array of IP addresses", values)
    else:
        return ()
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_address(v)))
        except (ValueError, TypeError):
            raise t.expected(key, what, v) from None
    return tuple(out)


def made_up_addresses(taken: set[str]) -> Iterator[str]:
    """Documentation addresses not in `taken`, in a fixed order."""
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/96"):
        for ip in ipaddress.ip_network(net).hosts():
            s = str(ip)
            if s not in taken:
                yield s


# -- domains --------------------------------------------------------------------


def _mx_list(t: Table) -> tuple[MxSpec, ...]:
    value = t.raw("mx", [])
    if not isinstance(value, list):
        raise t.expected("mx", "an array of {host, preference} tables or host names", value)
    out = []
    for i, item in enumerate(value):
        path = f"{t.where('mx')}[{i}]"
        if isinstance(item, str) and item:
            out.append(MxSpec(item.lower().rstrip("."), 10))
            continue
        if not isinstance(item, dict):
            raise t.error(
                "mx", f"[{i}]: expected a table {{host, preference}} or a host name, got {item!r}"
            )
        m = Table(item, path, t.source)
        host = m.string("host").lower().rstrip(".")
        pref = m.integer("preference", 10, maximum=65535)
        m.finish()
        out.append(MxSpec(host, pref))
    return tuple(out)


def _mta_sts(t: Table) -> MtaStsPolicy | None:
    s = t.table("mta_sts", None)
    if s is None:
        return None
    mode = s.string("mode")
    if mode not in ("enforce", "testing", "none"):
        raise s.expected("mode", "one of 'enforce', 'testing', 'none'", mode)
    mx = s.raw("mx", [])
    if not isinstance(mx, list) or not all(isinstance(p, str) and p for p in mx):
        raise s.expected("mx", "an array of MX patterns such as \"*.example.com\"", mx)
    max_age = s.duration("max_age", 86400.0)
    s.finish()
    return MtaStsPolicy(mode=mode, mx=tuple(mx), max_age=max_age)


def _dns_outages(t: Table) -> tuple[DnsOutage, ...]:
    out = []
    for o in t.tables("dns_outages"):
        start, end = o.duration("start"), o.duration("end")
        if end <= start:
            raise o.expected("end", f"a time after start ({o.data['start']!r})", o.data["end"])
        kind = o.string("kind", "SERVFAIL")
        if kind not in DNS_FAILURE_KINDS:
            raise o.expected("kind", "one of " + ", ".join(map(repr, DNS_FAILURE_KINDS)), kind)
        o.finish()
        out.append(DnsOutage(start, end, DnsFailure(kind)))
    return tuple(sorted(out, key=lambda x: (x.start, x.end)))


def build_domain(name: str, t: Table) -> DomainSpec:
    """Validate one `[domains."name"]` table."""
    mx = _mx_list(t)
    flags = {k: t.boolean(k, False) for k in ("null_mx", "nxdomain", "servfail")}
    chosen = [k for k, v in flags.items() if v] + (["mx"] if mx else [])
    if len(chosen) > 1:
        raise t.error(chosen[1], f"{chosen[0]} and {chosen[1]} cannot both be given")
    spec = DomainSpec(
        name=name.lower().rstrip("."),
        mx=mx,
        null_mx=flags["null_mx"],
        nxdomain=flags["nxdomain"],
        servfail=flags["servfail"],
        dns_outages=_dns_outages(t),
        mta_sts=_mta_sts(t),
        ttl=t.duration("ttl", 300.0),
    )
    t.finish()
    return spec


def implicit_domain(name: str) -> DomainSpec:
    """A domain the traffic names but [domains] does not: an implicit MX."""
    return DomainSpec(name, (), False, False, False, (), None, 300.0)
