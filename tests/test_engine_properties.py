"""Engine properties over random event streams (hypothesis state machine).

A random remote world answers the engine's effects: DNS good or failing,
connections accepted or refused, every command answered 2xx/4xx/5xx/421 at
random, timers fired in time order.  After every step the invariants hold;
at the end the journal replays into a fresh engine with identical effects,
and a snapshot taken midway plus the tail replays to the same state.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.effects import Close, Connect, Discard, Effect, Resolve, Send, SetTimer, Verb
from engine.engine import Engine
from engine.events import (
    Connected,
    ConnectFailed,
    DnsFailure,
    Event,
    MessageSubmitted,
    Resolved,
    ResolveFailed,
    Response,
    TimerFired,
)
from engine.message import HELD, READY, SCHEDULED
from engine.reply import Reply
from tests.support.engine_harness import MX, policy

MAX_READY, LIMIT, RATE_N, RATE_PERIOD = 4, 3, 5, 60.0


def make_policy() -> Any:
    return policy(max_ready=MAX_READY, connection_limit=LIMIT,
                  max_message_rate=f"{RATE_N}/min", idle_timeout=30,
                  consecutive_connection_failures_before_delay=2,
                  queue={"retry_interval": "1min", "max_age": "15min"})


OK = {Verb.DATA: Reply.make(354, None, "go"), Verb.QUIT: Reply.make(221, None, "bye")}


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.eng = Engine(make_policy(), seed=7)
        self.now = 0.0
        self.journal: list[Event] = []
        self.effects: list[Effect] = []
        self.timers: dict[Any, float] = {}
        self.dns: list[str] = []
        self.connecting: list[int] = []
        self.awaiting: dict[int, list[Verb | None]] = {}  # None: the banner
        self.submitted: set[str] = set()
        self.discarded: list[str] = []
        self.mail_times: list[float] = []
        self.n = 0
        self.mid: tuple[bytes, int] | None = None

    def feed(self, ev: Event) -> None:
        self.journal.append(ev)
        fx = self.eng.handle(ev)
        self.effects.extend(fx)
        for e in fx:
            if isinstance(e, SetTimer):
                self.timers[e.timer] = e.at
            elif type(e).__name__ == "CancelTimer":
                self.timers.pop(e.timer, None)  # type: ignore[attr-defined]
            elif isinstance(e, Resolve):
                self.dns.append(e.domain)
            elif isinstance(e, Connect):
                self.connecting.append(e.conn)
            elif isinstance(e, Close):
                self.awaiting.pop(e.conn, None)
                self.timers.pop(("conn", e.conn), None)
                if e.conn in self.connecting:
                    self.connecting.remove(e.conn)
            elif isinstance(e, Send):
                for c in e.commands:
                    self.awaiting.setdefault(e.conn, []).append(c.verb)
                    if c.verb is Verb.MAIL:
                        self.mail_times.append(ev.at)
            elif isinstance(e, Discard):
                self.discarded.append(e.message_id)
        if len(self.journal) == 25 and self.mid is None:
            self.mid = (self.eng.snapshot(), len(self.journal))

    @rule(rcpts=st.integers(1, 3), dt=st.floats(0, 20))
    def submit(self, rcpts: int, dt: float) -> None:
        self.now += dt
        self.n += 1
        mid = f"m{self.n}"
        self.submitted.add(mid)
        self.feed(MessageSubmitted(at=self.now, id=mid, sender="s@x.org", size=10,
                                   recipients=tuple(f"u{i}@example.com" for i in range(rcpts))))

    @precondition(lambda self: self.dns)
    @rule(kind=st.sampled_from(["ok", "ok", "ok", "SERVFAIL"]))
    def answer_dns(self, kind: str) -> None:
        domain = self.dns.pop(0)
        if kind == "ok":
            self.feed(Resolved(at=self.now, domain=domain, mx=MX, ttl=600.0))
        else:
            self.feed(ResolveFailed(at=self.now, domain=domain, kind=DnsFailure.SERVFAIL))

    @precondition(lambda self: self.connecting)
    @rule(ok=st.booleans(), pick=st.integers(0, 10))
    def connect(self, ok: bool, pick: int) -> None:
        conn = self.connecting.pop(pick % len(self.connecting))
        if ok:
            self.awaiting[conn] = [None]
            self.feed(Connected(at=self.now, conn=conn))
        else:
            self.feed(ConnectFailed(at=self.now, conn=conn, reason="refused"))

    @precondition(lambda self: any(self.awaiting.values()))
    @rule(cls=st.sampled_from([2, 2, 2, 2, 4, 5, 421]), pick=st.integers(0, 10))
    def reply(self, cls: int, pick: int) -> None:
        conns = sorted(c for c, v in self.awaiting.items() if v)
        conn = conns[pick % len(conns)]
        verb = self.awaiting[conn].pop(0)
        if verb is None:
            r = Reply.make(220, None, "hi") if cls == 2 else Reply.make(554, None, "no")
        elif cls == 2:
            r = OK.get(verb, Reply(code=250, text="mx hello\nPIPELINING")
                       if verb is Verb.EHLO else Reply.make(250, "2.0.0", "ok"))
        elif cls == 421:
            r = Reply.make(421, "4.3.0", "closing")
        else:
            r = Reply.make(cls * 100 + 50, f"{cls}.0.0", "nope")
        self.feed(Response(at=self.now, conn=conn, reply=r))

    @precondition(lambda self: self.timers)
    @rule()
    def fire(self) -> None:
        name, at = min(self.timers.items(), key=lambda kv: (kv[1], repr(kv[0])))
        del self.timers[name]
        self.now = max(self.now, at)
        if name[0] == "conn":
            self.awaiting.pop(name[1], None)
            if name[1] in self.connecting:
                self.connecting.remove(name[1])
        self.feed(TimerFired(at=self.now, timer=name))

    @invariant()
    def bounds(self) -> None:
        assert all(d <= MAX_READY for d in self.eng.ready_depths().values())
        assert all(c <= LIMIT for c in self.eng.connection_counts().values())

    @invariant()
    def accounting(self) -> None:
        assert len(self.discarded) == len(set(self.discarded))
        done = set(self.discarded)
        assert self.eng.queued_count == len(self.submitted) - len(done)
        queued = {m.id for m in self.eng.sched}
        for rq in self.eng.paths.values():
            queued.update(m.id for m in rq.messages)
            assert all(m.where == READY for m in rq.messages)
        queued.update(c.msg.id for c in self.eng.conns.values() if c.msg is not None)
        for ds in self.eng.domains.values():
            queued.update(m.id for m in ds.parked)
        assert not (queued & done)
        assert all(m.where == SCHEDULED for m in self.eng.sched)
        assert all(c.msg.where == HELD for c in self.eng.conns.values() if c.msg is not None)
        assert queued | done <= self.submitted
        assert len(queued) == self.eng.queued_count

    @invariant()
    def gcra_bound(self) -> None:
        interval = RATE_PERIOD / RATE_N
        times = self.mail_times
        for i, t0 in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= RATE_N + (times[j] - t0) / interval + 1e-9

    def teardown(self) -> None:
        fresh = Engine(make_policy(), seed=7)
        replayed = [e for ev in self.journal for e in fresh.handle(ev)]
        assert replayed == self.effects
        assert fresh.counters == self.eng.counters
        if self.mid is not None:
            snap, at = self.mid
            restored = Engine.restore(snap, make_policy())
            tail = [e for ev in self.journal[at:] for e in restored.handle(ev)]
            full = Engine(make_policy(), seed=7)
            whole = [e for ev in self.journal for e in full.handle(ev)]
            assert tail == whole[len(whole) - len(tail):] if tail else True
            assert restored.counters == self.eng.counters
            assert restored.armed_timers() == self.eng.armed_timers()
            assert restored.ready_depths() == self.eng.ready_depths()
            assert restored.scheduled_count == self.eng.scheduled_count


EngineMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestEngineMachine = EngineMachine.TestCase
