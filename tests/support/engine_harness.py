"""A tiny scripted world for engine tests: policies, events, an auto-responder.

`World` feeds an `Engine` and answers its effects the way a cooperative
remote world would (Connected, a 220 banner, EHLO capabilities, 250 to MAIL
and RCPT, 354 to DATA, 250 to the dot, 221 to QUIT), with per-recipient
overrides, so a test can drive a whole delivery and then assert on the exact
records and effects.  Timers are kept in a dict and fired on request, as a
driver with lazy cancellation would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.config import make_egress_path
from engine.domains import DomainState
from engine.effects import (
    CancelTimer,
    Close,
    Connect,
    Discard,
    Effect,
    FetchMtaSts,
    Log,
    Resolve,
    ResolveTlsa,
    Send,
    SetTimer,
    StartTls,
    Verb,
)
from engine.engine import Engine
from engine.events import (
    Connected,
    Event,
    MessageSubmitted,
    MtaStsResolved,
    MxRecord,
    Resolved,
    Response,
    TimerFired,
)
from engine.policy import Policy
from engine.queue_config import make_queue_config
from engine.reply import Reply

# the ready queue of MX's site from the default pool, named as KumoMTA names it
PATH = "unspecified->(mx1|mx2).example.com@smtp_client"

MX = (MxRecord(preference=10, host="mx1.example.com", addresses=("192.0.2.1",)),
      MxRecord(preference=20, host="mx2.example.com", addresses=("192.0.2.2",)))


def policy(queue: dict[str, Any] | None = None, **path: Any) -> Policy:
    """A policy whose every path gets `path` keys (MTA-STS off unless asked)."""
    path.setdefault("enable_mta_sts", False)
    p = Policy()
    cfg = make_egress_path(**path)

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        return cfg

    if queue is not None:
        qcfg = make_queue_config(**queue)

        @p.on("get_queue_config")
        def _queue(domain: str, tenant: str, campaign: str, routing: str) -> Any:
            return qcfg

    return p


def prime(eng: Engine, domain: str = "example.com", mx: tuple[MxRecord, ...] = MX,
          at: float = 0.0, ttl: float = 1e9) -> list[Effect]:
    """Warm `eng`'s MX cache for `domain` before any message, as if it had asked.

    The engine refuses an answer to a lookup it never issued (a ProtocolError), so
    a test that wants a known domain first marks the lookup as pending."""
    ds = eng.domains.setdefault(domain, DomainState())
    ds.resolving = True
    return eng.handle(Resolved(at=at, domain=domain, mx=mx, ttl=ttl))


def resolved_engine(**path: Any) -> tuple[Engine, World]:
    """An engine (seed 1) whose path has `path` keys, example.com's MX known, and a
    world that leaves connecting to the test."""
    eng = Engine(policy(**path), seed=1)
    w = World(eng, auto_connect=False)
    prime(eng)
    return eng, w


def submit(i: int | str, at: float = 0.0, rcpts: tuple[str, ...] = ("u@example.com",),
           **kw: Any) -> MessageSubmitted:
    return MessageSubmitted(at=at, id=f"m{i}", sender="s@sender.org", recipients=rcpts,
                            size=100, **kw)


def records(effects: list[Effect], kind: str | None = None) -> list[dict[str, Any]]:
    return [e.record for e in effects
            if isinstance(e, Log) and (kind is None or e.record["type"] == kind)]


def of(effects: list[Effect], cls: type) -> list[Any]:
    return [e for e in effects if isinstance(e, cls)]


EHLO_CAPS = "mx.example.com hello\nPIPELINING\nSIZE 1000000"


class World:
    """Drive `eng`: every effect is answered at the current time `now`."""

    def __init__(self, eng: Engine, *, mx: tuple[MxRecord, ...] = MX, auto_dns: bool = True,
                 auto_connect: bool = True) -> None:
        self.eng = eng
        self.mx = mx
        self.auto_dns = auto_dns
        self.auto_connect = auto_connect
        self.now = 0.0
        self.timers: dict[Any, float] = {}
        self.effects: list[Effect] = []
        self.queue: list[Event] = []
        self.rcpt_reply: Callable[[str], Reply] = lambda r: Reply.make(250, "2.1.5", "ok")
        self.body_reply = Reply.make(250, "2.0.0", "queued")
        self.open: dict[int, Connect] = {}
        self.ehlo_caps = EHLO_CAPS
        self.starttls_reply = Reply.make(220, "2.0.0", "go ahead")

    def feed(self, ev: Event) -> list[Effect]:
        """Handle `ev` and everything the world answers, until quiet."""
        self.queue.append(ev)
        produced: list[Effect] = []
        while self.queue:
            fx = self.eng.handle(self.queue.pop(0))
            produced.extend(fx)
            for e in fx:
                self._answer(e)
        self.effects.extend(produced)
        return produced

    def fire(self, name: Any) -> list[Effect]:
        at = self.timers.pop(name)
        self.now = max(self.now, at)
        return self.feed(TimerFired(at=at, timer=name))

    def run(self, until: float) -> list[Effect]:
        """Fire timers in time order up to `until`."""
        out: list[Effect] = []
        while self.timers:
            name, at = min(self.timers.items(), key=lambda kv: (kv[1], repr(kv[0])))
            if at > until:
                break
            out.extend(self.fire(name))
        self.now = max(self.now, until)
        return out

    def _answer(self, e: Effect) -> None:
        t = self.now
        if isinstance(e, SetTimer):
            self.timers[e.timer] = e.at
        elif isinstance(e, CancelTimer):
            self.timers.pop(e.timer, None)
        elif isinstance(e, Resolve) and self.auto_dns:
            self.queue.append(Resolved(at=t, domain=e.domain, mx=self.mx, ttl=1e9))
        elif isinstance(e, FetchMtaSts) and self.auto_dns:
            self.queue.append(MtaStsResolved(at=t, domain=e.domain, policy=None))
        elif isinstance(e, Connect):
            self.open[e.conn] = e
            if self.auto_connect:
                self.queue.append(Connected(at=t, conn=e.conn))
                self.queue.append(Response(at=t, conn=e.conn, reply=Reply.make(220, None, "hi")))
        elif isinstance(e, Close):
            self.open.pop(e.conn, None)
            self.timers.pop(("conn", e.conn), None)
        elif isinstance(e, Send) and e.conn in self.open:
            for cmd in e.commands:
                self.queue.append(Response(at=t, conn=e.conn, reply=self._reply(cmd)))
        elif isinstance(e, (StartTls, ResolveTlsa, Discard, Log)):
            pass

    def _reply(self, cmd: Any) -> Reply:
        v = cmd.verb
        if v in (Verb.EHLO,):
            return Reply(code=250, text=self.ehlo_caps)
        if v is Verb.RCPT:
            return self.rcpt_reply(cmd.arg)
        if v is Verb.DATA:
            return Reply.make(354, None, "go ahead")
        if v is Verb.BODY:
            return self.body_reply
        if v is Verb.QUIT:
            return Reply.make(221, "2.0.0", "bye")
        if v is Verb.STARTTLS:
            return self.starttls_reply
        return Reply.make(250, "2.0.0", "ok")
