"""A scenario host's answers: what it says to a connection or a command, and when.

Both realisations of a scenario's world ask this module, so they cannot
drift: `sim.world.World` on the simulated clock, `lab.servers.HostServer` as
a real server on loopback.  Given the same host, the same inputs and the same
draws, both get the same replies and the same delays, with the draws made in
the same order (a latency, then a fault).

It is pure: no clock (the caller passes `now`), no I/O, every draw from the
`random.Random` the caller passes in, and only where the scenario asks for
chance (a probability strictly between 0 and 1 of an outage, a fault above
0, a latency that is a distribution), so a host of constant latencies and no
faults draws nothing.  The connection count a host holds (for
``max_connections``) is the caller's: `HostCounters` keeps it, and what the
lab reports, the same way for both.

Each host is flattened once into a slotted `HostBehaviour` with its replies
built and its probabilities folded into thresholds, because the simulator
asks it about five times per message.

Outages act the way a planner thinks of them: ``refuse`` and ``blackhole``
refuse or swallow *new* connections (sessions already open carry on),
``tempfail`` answers MAIL with ``451 4.3.0`` (or the outage's own `reply`).
An outage with a `probability` below 1 hits each transaction inside its
window with that chance (a connection attempt for refuse and blackhole, a
MAIL for tempfail); the first window in force decides.

A host with a ``pushback`` table also keeps per-source state
(`sim.host_pushback.Pushback`: connections, a message rate, a reputation),
so each call names the connection's source address and the caller reports
`released` when an accepted connection closes.  The replies and counters are
`sim.host_replies`'; they are re-exported here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from engine.effects import Verb
from engine.reply import Reply
from sim.host_pushback import UNBOUND_SOURCE, Pushback
from sim.host_replies import (
    AUTH_OK,
    BLACKHOLE,
    BODY_OK,
    BODY_PERMFAIL,
    BODY_TEMPFAIL,
    BUSY,
    DATA_OK,
    MAIL_OK,
    MAIL_OUTAGE,
    MAIL_TEMPFAIL,
    NEED_MAIL,
    NO_RECIPIENTS,
    NOT_OFFERED,
    QUIT_OK,
    RCPT_OK,
    RCPT_PERMFAIL,
    RCPT_TEMPFAIL,
    RSET_OK,
    STARTTLS_OK,
    TURNS,
    UNKNOWN,
    ConnectResult,
    HostCounters,
    Txn,
)

if TYPE_CHECKING:
    from sim.scenario_world import HostSpec, Outage

__all__ = [
    "AUTH_OK", "BLACKHOLE", "BODY_OK", "BODY_PERMFAIL", "BODY_TEMPFAIL", "BUSY", "DATA_OK",
    "MAIL_OK", "MAIL_OUTAGE", "MAIL_TEMPFAIL", "NEED_MAIL", "NOT_OFFERED", "NO_RECIPIENTS",
    "QUIT_OK", "RCPT_OK", "RCPT_PERMFAIL", "RCPT_TEMPFAIL", "RSET_OK", "STARTTLS_OK", "TURNS",
    "UNBOUND_SOURCE", "UNKNOWN", "ConnectResult", "HostBehaviour", "HostCounters", "Txn",
    "ehlo_reply",
]

# Verbs by their text: `replies` compares `Verb` members by identity (a
# `Verb` compares to a str by a full string comparison, a dozen per batch).
_VERBS: Final[dict[str, Verb]] = {v.value: v for v in Verb}
_RCPT: Final = Verb.RCPT
_MAIL: Final = Verb.MAIL
_DATA: Final = Verb.DATA
_RSET: Final = Verb.RSET


def _verb(verb: str) -> str:
    """`verb` as its `Verb` member, if it names one (else as it is)."""
    return verb if type(verb) is Verb else _VERBS.get(verb, verb)


class _Said:
    """A command `batch` was given as text, for `HostBehaviour.replies`."""

    __slots__ = ("verb",)

    def __init__(self, verb: str) -> None:
        self.verb = verb


def ehlo_reply(spec: HostSpec, *, tls: bool, starttls: bool | None = None) -> Reply:
    """The host's EHLO reply (no STARTTLS once in TLS)."""
    lines = [spec.name, "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES"]
    if spec.pipelining:
        lines.append("PIPELINING")
    if (spec.starttls if starttls is None else starttls) and not tls:
        lines.append("STARTTLS")
    if spec.auth:
        lines.append("AUTH PLAIN LOGIN")
    return Reply(code=250, text="\n".join(lines))


class HostBehaviour:
    """One scenario host's answers, flattened for the hot path."""

    __slots__ = (
        "auth", "bandwidth", "banner", "body_permfail", "body_tempfail", "command_latency",
        "connect_latency", "data_fail", "data_latency", "ehlo_clear", "ehlo_tls", "mail_always",
        "mail_tempfail",
        "max_conn", "outages", "permfail_data", "permfail_rcpt", "pipelining", "pushback",
        "rcpt_fail",
        "rcpt_permfail", "rcpt_tempfail", "refuse", "spec", "starttls", "tempfail_mail",
        "tls_failure", "tls_latency",
    )

    def __init__(
        self,
        spec: HostSpec,
        *,
        greeting: str = "ESMTP egress simulated server",
        starttls: bool | None = None,
    ) -> None:
        """`starttls` False withdraws STARTTLS a host would offer (a lab server
        without a certificate); None keeps the spec's."""
        self.spec = spec
        # Bound sample functions, so the hot path is one call per latency.
        self.connect_latency: Callable[[random.Random], float] = spec.connect_latency.sample
        self.command_latency: Callable[[random.Random], float] = spec.command_latency.sample
        self.data_latency: Callable[[random.Random], float] = spec.data_latency.sample
        self.tls_latency: Callable[[random.Random], float] = spec.tls_latency.sample
        self.bandwidth = spec.data_bandwidth
        self.max_conn = spec.max_connections if spec.max_connections is not None else 1 << 62
        self.refuse = spec.refuse_connections
        self.tempfail_mail = spec.tempfail_mail
        # MAIL is accepted with no draw: no outage, no pushback, no tempfail
        self.mail_always = not spec.outages and spec.pushback is None and not spec.tempfail_mail
        self.permfail_rcpt = spec.permfail_rcpt
        self.rcpt_fail = spec.permfail_rcpt + spec.tempfail_rcpt
        self.permfail_data = spec.permfail_data
        self.data_fail = spec.permfail_data + spec.tempfail_data
        replies = dict(spec.fault_replies)
        self.mail_tempfail = replies.get("tempfail_mail", MAIL_TEMPFAIL)
        self.rcpt_tempfail = replies.get("tempfail_rcpt", RCPT_TEMPFAIL)
        self.rcpt_permfail = replies.get("permfail_rcpt", RCPT_PERMFAIL)
        self.body_tempfail = replies.get("tempfail_data", BODY_TEMPFAIL)
        self.body_permfail = replies.get("permfail_data", BODY_PERMFAIL)
        self.starttls = spec.starttls if starttls is None else starttls
        self.tls_failure = spec.tls_failure
        self.pipelining = spec.pipelining
        self.auth = spec.auth
        self.outages: tuple[Outage, ...] = spec.outages
        self.pushback = Pushback(spec.pushback) if spec.pushback is not None else None
        self.banner = Reply(code=220, text=f"{spec.name} {greeting}")
        self.ehlo_clear = ehlo_reply(spec, tls=False, starttls=self.starttls)
        self.ehlo_tls = ehlo_reply(spec, tls=True)

    def outage(self, now: float) -> Outage | None:
        """The outage window in force at `now` (the first one), or None."""
        for o in self.outages:
            if o.start <= now < o.end:
                return o
        return None

    def refusing(self, now: float) -> bool:
        """Whether every connection is refused at `now` (a refuse outage of
        probability 1): the lab closes its listening sockets then."""
        o = self.outage(now) if self.outages else None
        return o is not None and o.mode == "refuse" and o.probability >= 1.0

    # -- a connection -------------------------------------------------------------------

    def connect(
        self,
        held: int,
        now: float,
        rng: random.Random,
        extra: float = 0.0,
        refused_extra: float = 0.0,
        source: str = UNBOUND_SOURCE,
    ) -> ConnectResult:
        """A connection attempt from `source` at `now` while the host holds
        `held` others (`released` when an ``"ok"`` one closes).

        `extra` is added to the delay of an opened connection and
        `refused_extra` to a refused one's (the simulated client's own costs).
        """
        if self.outages:
            o = self.outage(now)
            if (
                o is not None
                and o.mode != "tempfail"
                and (o.probability >= 1.0 or rng.random() < o.probability)
            ):
                if o.mode == "refuse":
                    return ConnectResult("refused", self.connect_latency(rng) + refused_extra)
                return BLACKHOLE
        if self.refuse and rng.random() < self.refuse:
            return ConnectResult("refused", self.connect_latency(rng) + refused_extra)
        banner = self.banner if held < self.max_conn else BUSY
        if self.pushback is not None:
            banner = self.pushback.opened(source, banner, now)
        return ConnectResult("ok", self.connect_latency(rng) + extra, banner)

    def released(self, source: str = UNBOUND_SOURCE) -> None:
        """A connection from `source` that `connect` answered ``"ok"`` has closed."""
        if self.pushback is not None:
            self.pushback.closed(source)

    def ehlo(self, rng: random.Random, *, tls: bool = False, overhead: float = 0.0
             ) -> tuple[float, Reply]:
        """The EHLO reply with the host's capabilities, and its delay."""
        return self.command_latency(rng) + overhead, (self.ehlo_tls if tls else self.ehlo_clear)

    def starttls_handshake(self, rng: random.Random) -> tuple[float, bool, str]:
        """The TLS handshake after a 220 to STARTTLS: (delay, ok, reason)."""
        if not self.starttls:
            return 0.0, False, f"{self.spec.name} does not offer STARTTLS"
        delay = self.tls_latency(rng)
        if self.tls_failure and rng.random() < self.tls_failure:
            return delay, False, "handshake failure (simulated)"
        return delay, True, ""

    # -- commands -----------------------------------------------------------------------

    def batch(
        self,
        commands: Iterable[Any],
        txn: Txn | None,
        now: float,
        rng: random.Random,
        overhead: float = 0.0,
        *,
        tls: bool = False,
        stop: bool = False,
        counters: HostCounters | None = None,
        source: str = UNBOUND_SOURCE,
    ) -> list[tuple[float, Reply]]:
        """Replies to one write of commands, each with its delay after `now`.

        `commands` are `engine.effects.SmtpCommand`s or ``(verb, arg)`` pairs;
        verbs compare as their SMTP text ("MAIL FROM", "RCPT TO", "AUTH
        PLAIN", ...).  A pipelining host answers after one command latency,
        one that does not after one per command (plus `overhead` each time).
        `txn` is read and updated (None: a batch of its own, as following an
        accepted MAIL, which is how the simulator asks).  With `stop`, the batch ends after a reply
        in `TURNS` (what follows is the body, TLS or nothing).  A BODY command
        is answered as `body` with size 0.  `counters` counts the faults.
        `source` is the connection's source address (`sim.host_pushback`).
        """
        delays: list[float] = []
        said = [_Said(_verb(c[0] if type(c) is tuple else c.verb)) for c in commands]
        replies = self.replies(said, now, rng, overhead, source, txn, tls, stop, counters,
                               delays)[1]
        return list(zip(delays, replies, strict=True))

    def replies(
        self,
        commands: Iterable[Any],
        now: float,
        rng: random.Random,
        overhead: float = 0.0,
        source: str = UNBOUND_SOURCE,
        txn: Txn | None = None,
        tls: bool = False,
        stop: bool = False,
        counters: HostCounters | None = None,
        delays: list[float] | None = None,
    ) -> tuple[float, list[Reply]]:
        """`batch`'s replies, and after how long the last one comes: what the
        simulator needs, which reads a pipelined batch's replies together
        after the slowest (each reply's own delay, when `delays` is given, is
        appended to it).  The delays never decrease along a batch (each adds a
        latency and an overhead, both >= 0), so the last is the largest.

        `commands` have a `verb` that is a `Verb` member where it names one
        (an `engine.effects.SmtpCommand`'s always does; `batch` makes them so
        from text): this runs per simulated message and compares by identity."""
        out: list[Reply] = []
        pipelining = self.pipelining
        delay = self.command_latency(rng) + overhead if pipelining else 0.0
        if txn is None:  # one batch alone: taken as following an accepted MAIL
            mail_ok, any_rcpt = True, None
        else:
            mail_ok, any_rcpt = txn.mail_ok, txn.any_rcpt
        for cmd in commands:
            verb = cmd.verb
            if not pipelining:
                delay += self.command_latency(rng) + overhead
            if verb is _RCPT:
                if not mail_ok:
                    reply = NEED_MAIL
                elif self.rcpt_fail and (r := rng.random()) < self.rcpt_fail:
                    reply = self.rcpt_permfail if r < self.permfail_rcpt else self.rcpt_tempfail
                    if counters is not None:
                        counters.failed(reply)
                else:
                    reply = RCPT_OK
                    any_rcpt = True
                if any_rcpt is None:
                    any_rcpt = False
            elif verb is _MAIL:
                any_rcpt = False
                if self.mail_always:  # nothing that could refuse it: no draw either
                    reply = MAIL_OK
                    mail_ok = True
                else:
                    mail_ok, reply = self._mail(now, rng, counters, source)
            elif verb is _DATA:
                if not mail_ok:
                    reply = NEED_MAIL
                elif any_rcpt is False:
                    reply = NO_RECIPIENTS
                else:
                    reply = DATA_OK
            elif verb is _RSET or verb == "NOOP":
                if verb is _RSET:
                    mail_ok, any_rcpt = False, False
                reply = RSET_OK
            elif verb is Verb.QUIT:
                reply = QUIT_OK
            elif verb is Verb.BODY:
                extra, reply = self.body(0, rng, overhead, counters, source=source, now=now)
                delay += extra
            elif verb is Verb.STARTTLS:
                reply = STARTTLS_OK if self.starttls and not tls else NOT_OFFERED
            elif verb is Verb.AUTH_PLAIN:
                reply = AUTH_OK if self.auth else NOT_OFFERED
            elif verb is Verb.EHLO or verb is Verb.HELO:
                mail_ok, any_rcpt = False, False
                reply = self.ehlo_tls if tls else self.ehlo_clear
            else:
                reply = UNKNOWN
            out.append(reply)
            if delays is not None:
                delays.append(delay)
            if stop and reply in TURNS:
                break
        if txn is not None:
            txn.mail_ok = mail_ok
            txn.any_rcpt = any_rcpt
        return delay, out

    def _mail(self, now: float, rng: random.Random, counters: HostCounters | None,
              source: str) -> tuple[bool, Reply]:
        """(accepted, the reply) to MAIL: a tempfail outage (drawn when
        partial), pushback, then the fault."""
        if self.outages and (o := self.outage(now)) is not None and (
            o.mode == "tempfail"
            and (o.probability >= 1.0 or rng.random() < o.probability)
        ):
            reply = o.reply if o.reply is not None else MAIL_OUTAGE
        elif self.pushback is not None and (
            pushed := self.pushback.mail(source, now, rng)
        ) is not None:
            reply = pushed
        elif self.tempfail_mail and rng.random() < self.tempfail_mail:
            reply = self.mail_tempfail
        else:
            if self.pushback is not None:
                self.pushback.accepted(source, now)
            return True, MAIL_OK
        if counters is not None:
            counters.failed(reply)
        return False, reply

    def body(
        self,
        size: int,
        rng: random.Random,
        overhead: float = 0.0,
        counters: HostCounters | None = None,
        source: str = UNBOUND_SOURCE,
        now: float = 0.0,
    ) -> tuple[float, Reply]:
        """The reply after the content and the final dot, and its delay; an
        accepted message costs `source` its complaints at `now`."""
        delay = self.data_latency(rng) + overhead
        if self.bandwidth:
            delay += size / self.bandwidth
        if self.data_fail and (r := rng.random()) < self.data_fail:
            reply = self.body_permfail if r < self.permfail_data else self.body_tempfail
            if counters is not None:
                counters.failed(reply)
            return delay, reply
        if counters is not None:
            counters.accepted += 1
        if self.pushback is not None:
            self.pushback.delivered(source, now)
        return delay, BODY_OK
