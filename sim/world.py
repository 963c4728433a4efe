"""The simulated remote world: DNS and the SMTP servers a scenario describes.

Plain Python, no SimPy: the driver owns the clock and asks the world, per
transaction *phase*, what the remote side answers and how long it takes:

- `connect` (TCP connect plus the banner), `release` when it closes,
- `ehlo`, `starttls` (the handshake), `reply_batch` (one write: a pipelined
  RSET/MAIL/RCPT.../DATA batch, or STARTTLS, AUTH, QUIT alone), `body` (the
  content and the final dot),
- `resolve` and `mta_sts` for DNS and MTA-STS.

Delays are seconds after `now`.  Everything is decided by the `random.Random`
the driver passes in, so a world is deterministic for a seed.  Draws are made
only where the scenario asks for chance (a probability above 0, a latency
that is a distribution), so a world of constant latencies and no failures
draws nothing.

The world is on the hot path of every simulated message (about five calls
each), so each host's behaviour is flattened into a slotted `_Host` with its
replies built once, and probabilities folded into thresholds.

Simplifications a capacity planner should know: a pipelined batch is
answered after one command latency (one round trip); a host that does not
pipeline answers each command after its own.  Outages act at their edges
the way a planner thinks of them: "refuse" and "blackhole" refuse or swallow
*new* connections (sessions already open carry on), "tempfail" accepts
connections and answers MAIL with ``451 4.3.0``.  The world keeps no
per-connection transaction state: a batch without MAIL is treated as
following an accepted MAIL, which is all the engine ever sends.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.events import (
    DnsFailure,
    MtaStsResolved,
    MxRecord,
    Resolved,
    ResolveFailed,
)
from engine.reply import Reply

if TYPE_CHECKING:
    from sim.scenario import Scenario
    from sim.scenario_world import DomainSpec, HostSpec, Outage

# -- the replies a simulated server gives ---------------------------------------------

BUSY = Reply.make(421, "4.7.0", "Too many concurrent connections; try again later")
MAIL_OK = Reply.make(250, "2.1.0", "Sender OK")
MAIL_TEMPFAIL = Reply.make(451, "4.3.0", "Temporary local problem; try again later")
MAIL_OUTAGE = Reply.make(451, "4.3.0", "Service temporarily unavailable (outage); try again later")
RCPT_OK = Reply.make(250, "2.1.5", "Recipient OK")
RCPT_TEMPFAIL = Reply.make(450, "4.2.1", "Mailbox temporarily unavailable; try again later")
RCPT_PERMFAIL = Reply.make(550, "5.1.1", "No such user here")
NEED_MAIL = Reply.make(503, "5.5.1", "Need MAIL command first")
DATA_OK = Reply(code=354, text="Start mail input; end with <CRLF>.<CRLF>")
NO_RECIPIENTS = Reply.make(554, "5.5.1", "No valid recipients")
BODY_OK = Reply.make(250, "2.0.0", "Message accepted for delivery")
BODY_TEMPFAIL = Reply.make(451, "4.3.0", "Temporary failure after DATA; try again later")
BODY_PERMFAIL = Reply.make(554, "5.7.1", "Message rejected by content policy")
RSET_OK = Reply.make(250, "2.0.0", "OK")
QUIT_OK = Reply.make(221, "2.0.0", "Bye")
STARTTLS_OK = Reply.make(220, "2.0.0", "Ready to start TLS")
NOT_OFFERED = Reply.make(502, "5.5.1", "Command not implemented")
AUTH_OK = Reply.make(235, "2.7.0", "Authentication successful")
UNKNOWN = Reply.make(500, "5.5.2", "Command unrecognized")

DNS_LATENCY = 0.005  # seconds for every lookup (a warm local resolver)


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """What a connection attempt meets.

    `kind` is ``"ok"`` (the TCP connection opens and `banner` arrives after
    `delay`: 220, or 421 4.7.0 beyond max_connections), ``"refused"`` (after
    `delay`), or ``"blackhole"`` (nothing ever answers; `delay` is inf and
    the engine's connect timeout decides).  Every ``"ok"`` holds one of the
    host's connection slots until the driver calls `World.release`.
    """

    kind: str
    delay: float
    banner: Reply | None = None


BLACKHOLE = ConnectResult("blackhole", math.inf, None)


class _Host:
    """One host's behaviour, flattened for the hot path, and its open connections."""

    __slots__ = (
        "auth",
        "bandwidth",
        "banner",
        "command",
        "connect",
        "data",
        "data_fail",
        "ehlo_clear",
        "ehlo_tls",
        "max_conn",
        "open",
        "outages",
        "peak",
        "permfail_data",
        "permfail_rcpt",
        "pipelining",
        "rcpt_fail",
        "refuse",
        "spec",
        "starttls",
        "tempfail_mail",
        "tls",
        "tls_failure",
    )

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        # Bound sample functions, so the hot path is one call per latency.
        self.connect: Callable[[random.Random], float] = spec.connect_latency.sample
        self.command: Callable[[random.Random], float] = spec.command_latency.sample
        self.data: Callable[[random.Random], float] = spec.data_latency.sample
        self.tls: Callable[[random.Random], float] = spec.tls_latency.sample
        self.bandwidth = spec.data_bandwidth
        self.max_conn = spec.max_connections if spec.max_connections is not None else 1 << 62
        self.open = 0
        self.peak = 0
        self.refuse = spec.refuse_connections
        self.tempfail_mail = spec.tempfail_mail
        self.permfail_rcpt = spec.permfail_rcpt
        self.rcpt_fail = spec.permfail_rcpt + spec.tempfail_rcpt
        self.permfail_data = spec.permfail_data
        self.data_fail = spec.permfail_data + spec.tempfail_data
        self.starttls = spec.starttls
        self.tls_failure = spec.tls_failure
        self.pipelining = spec.pipelining
        self.auth = spec.auth
        self.outages: tuple[Outage, ...] = spec.outages
        self.banner = Reply(code=220, text=f"{spec.name} ESMTP egress simulated server")
        self.ehlo_clear = ehlo_reply(spec, tls=False)
        self.ehlo_tls = ehlo_reply(spec, tls=True)

    def outage(self, now: float) -> str | None:
        for o in self.outages:
            if o.start <= now < o.end:
                return o.mode
        return None


def ehlo_reply(spec: HostSpec, *, tls: bool) -> Reply:
    """The host's EHLO reply (no STARTTLS once in TLS); the lab advertises the same."""
    lines = [spec.name, "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES"]
    if spec.pipelining:
        lines.append("PIPELINING")
    if spec.starttls and not tls:
        lines.append("STARTTLS")
    if spec.auth:
        lines.append("AUTH PLAIN LOGIN")
    return Reply(code=250, text="\n".join(lines))


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
        self._hosts: dict[str, _Host] = {n: _Host(s) for n, s in scenario.hosts.items()}
        self._domains: dict[str, DomainSpec] = dict(scenario.domains)
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
        return self._host(host).open

    def peak_connections(self, host: str) -> int:
        """The most connections the host ever held at once."""
        return self._host(host).peak

    def _host(self, name: str) -> _Host:
        h = self._hosts.get(name)
        if h is None:
            h = self._hosts.get(name.lower().rstrip("."))
            if h is None:
                raise KeyError(f"the simulated world has no host named {name!r}")
        return h

    # -- connections --------------------------------------------------------------------

    def connect(self, host: str, address: str, now: float) -> ConnectResult:
        """A connection attempt to `host` at `address` at time `now`."""
        h = self._host(host)
        rng = self.rng
        if h.outages:
            mode = h.outage(now)
            if mode == "refuse":
                return ConnectResult("refused", h.connect(rng) + self.connect_overhead)
            if mode == "blackhole":
                return BLACKHOLE
        if h.refuse and rng.random() < h.refuse:
            return ConnectResult("refused", h.connect(rng) + self.connect_overhead)
        banner = h.banner if h.open < h.max_conn else BUSY
        h.open += 1
        if h.open > h.peak:
            h.peak = h.open
        return ConnectResult("ok", h.connect(rng) + self._connect_extra, banner)

    def release(self, host: str) -> None:
        """A connection that `connect` answered with ``"ok"`` has closed."""
        h = self._host(host)
        if h.open <= 0:
            raise ValueError(f"release({host!r}) without an open connection to it")
        h.open -= 1

    def ehlo(self, host: str, now: float, *, tls: bool = False) -> tuple[float, Reply]:
        """The EHLO reply with the host's capabilities (no STARTTLS once in TLS)."""
        h = self._host(host)
        return h.command(self.rng) + self.overhead, (h.ehlo_tls if tls else h.ehlo_clear)

    def starttls(self, host: str, now: float) -> tuple[float, bool, str]:
        """The TLS handshake after a 220 to STARTTLS: (delay, ok, reason)."""
        h = self._host(host)
        if not h.starttls:
            return 0.0, False, f"{h.spec.name} does not offer STARTTLS"
        delay = h.tls(self.rng)
        if h.tls_failure and self.rng.random() < h.tls_failure:
            return delay, False, "handshake failure (simulated)"
        return delay, True, ""

    def reply_batch(
        self, host: str, commands: Iterable[Any], now: float
    ) -> list[tuple[float, Reply]]:
        """Replies to one write of commands, each with its delay after `now`.

        `commands` are `engine.effects.SmtpCommand`s (or ``(verb, arg)``
        pairs); verbs compare as their SMTP text ("MAIL FROM", "RCPT TO", ...).
        A BODY command is answered as `body` with size 0; the driver normally
        calls `body` with the message's size instead.
        """
        h = self._host(host)
        rng = self.rng
        out: list[tuple[float, Reply]] = []
        overhead = self.overhead
        delay = h.command(rng) + overhead if h.pipelining else 0.0
        mail_ok = True
        any_rcpt: bool | None = None  # None: no RCPT in this batch
        for cmd in commands:
            verb = cmd[0] if type(cmd) is tuple else cmd.verb
            if not h.pipelining:
                delay += h.command(rng) + overhead
            if verb == "RCPT TO":
                if not mail_ok:
                    reply = NEED_MAIL
                elif h.rcpt_fail and (r := rng.random()) < h.rcpt_fail:
                    reply = RCPT_PERMFAIL if r < h.permfail_rcpt else RCPT_TEMPFAIL
                else:
                    reply = RCPT_OK
                    any_rcpt = True
                if any_rcpt is None:
                    any_rcpt = False
            elif verb == "MAIL FROM":
                mail_ok = False
                if h.outages and h.outage(now) == "tempfail":
                    reply = MAIL_OUTAGE
                elif h.tempfail_mail and rng.random() < h.tempfail_mail:
                    reply = MAIL_TEMPFAIL
                else:
                    reply = MAIL_OK
                    mail_ok = True
            elif verb == "DATA":
                if not mail_ok:
                    reply = NEED_MAIL
                elif any_rcpt is False:
                    reply = NO_RECIPIENTS
                else:
                    reply = DATA_OK
            elif verb == "RSET":
                reply = RSET_OK
            elif verb == "QUIT":
                reply = QUIT_OK
            elif verb == "BODY":
                extra, reply = self.body(host, 0, now)
                delay += extra
            elif verb == "STARTTLS":
                reply = STARTTLS_OK if h.starttls else NOT_OFFERED
            elif verb == "AUTH PLAIN":
                reply = AUTH_OK if h.auth else NOT_OFFERED
            elif verb in ("EHLO", "HELO"):
                reply = h.ehlo_clear
            else:
                reply = UNKNOWN
            out.append((delay, reply))
        return out

    def body(self, host: str, size: int, now: float) -> tuple[float, Reply]:
        """The reply after the content and the final dot, and when it comes."""
        h = self._host(host)
        rng = self.rng
        delay = h.data(rng) + self.overhead
        if h.bandwidth:
            delay += size / h.bandwidth
        if h.data_fail and (r := rng.random()) < h.data_fail:
            return delay, (BODY_PERMFAIL if r < h.permfail_data else BODY_TEMPFAIL)
        return delay, BODY_OK

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

    def mta_sts(self, domain: str, now: float) -> MtaStsResolved:
        """The domain's MTA-STS policy (None unless the scenario gives one)."""
        d = self._domains.get(domain.lower().rstrip("."))
        return MtaStsResolved(
            at=now + self.dns_latency, domain=domain, policy=d.mta_sts if d else None
        )
