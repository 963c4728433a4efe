"""The SimPy driver: the engine's effects carried out against a simulated world.

This is the simulated twin of `engine.live`: it reads the (simulated) clock,
asks `sim.world.World` what the remote side does and how long it takes, turns
the answers into events for `Engine.handle`, and carries out every effect in
order.  It makes no delivery decision of its own (STYLE.md, "Drivers").

Why it is shaped this way (DESIGN.md, "Cost shape"):

* The world answers per transaction *phase* (connect + banner, EHLO, one
  pipelined MAIL/RCPT/DATA batch, the body and dot), so one `Send` effect
  costs one SimPy event however many replies it yields.
* SimPy cannot unschedule an event, and the engine arms a command timer for
  every command it sends but almost never lets one fire.  So timers live in the
  driver's own heap with lazy cancellation, and only the earliest armed timer
  holds a SimPy event ("the wake").  Arming a timer is not a SimPy event, and
  usually not even a heap push: a re-armed timer almost always moves *later*
  (the next command's timeout), so the entry already in the heap stays, and
  when it comes up it is pushed again at the deadline armed by then (with
  that arming's sequence number, so timers due together still fire in arming
  order, exactly as if every arming had been pushed).  That keeps the heap
  near the number of armed timers instead of one entry per command sent.
* Callbacks are attached to bare SimPy events (`_at`), which is what a SimPy
  `Timeout` does without the process machinery around it.
"""

from __future__ import annotations

import gc
import heapq
import random
import uuid
from collections.abc import Callable, Collection, Iterator
from typing import Any, Final

import simpy
from simpy.events import NORMAL

from engine.effects import (
    CancelTimer,
    Close,
    Connect,
    Discard,
    Effect,
    FetchMtaSts,
    Log,
    Resolve,
    ResolveHosts,
    ResolveTlsa,
    Send,
    SetTimer,
    StartTls,
)
from engine.engine import Engine
from engine.event_tools import restamp
from engine.events import (
    Event as EngineEvent,
)
from engine.events import (
    MessageSubmitted,
    TlsaResolved,
)
from engine.events import Timer as TimerName

# The events the driver makes several times per message, built without
# re-validating what it made itself (`engine.makers`: natively in the compiled
# build, by `engine.events.trusted_factory` otherwise).
from engine.makers import make_timer_fired as _TimerFired  # (at, timer)
from sim.connections import PathConnections
from sim.driver_conns import ConnectionPhases, _Conn, _Due, run_until
from sim.observer import Observer
from sim.world import World

ProgressFn = Callable[[float, int, int], None]  # (simulated seconds, finished, submitted)
# A timer name's state: [armed at, armed seq (-1: not armed), anchor at, anchor seq]
_Timer = list[Any]

_NORMAL: Final = NORMAL  # SimPy's priority of an ordinary event


class SimDriver(ConnectionPhases):
    """Runs one scenario: an `Engine` on a SimPy clock against a `World`."""

    def __init__(
        self,
        scenario: Any,
        *,
        progress: ProgressFn | None = None,
        keep_records: bool = True,
        record_sink: Callable[[dict[str, Any]], None] | None = None,
        record_kinds: Collection[str] | None = None,
        exact: bool = True,
    ) -> None:
        self.scenario = scenario
        self.use_env(simpy.Environment())
        # Two independent streams: the engine's own and the world's, so a change
        # in how often the world draws does not reshuffle the engine's choices.
        self.world = World(scenario, random.Random(f"world:{scenario.seed}"))
        # exact=False: a full ready queue's re-delays sampled lazily (engine.backlog);
        # brief records: Receptions and Deliveries neither written nor kept are
        # counted from their type, id, recipient and site alone (engine.records)
        written = keep_records or record_sink is not None
        brief = not written or (record_kinds is not None
                                and not {"Reception", "Delivery"} & set(record_kinds))
        self.engine = Engine(scenario.policy(), seed=scenario.seed, epoch=scenario.start_epoch,
                             lazy_redelays=not exact,
                             shaping=getattr(scenario, "shaping", None),
                             brief_records=brief)
        self.observer = Observer(self.engine, keep_records=keep_records, sink=record_sink,
                                 kinds=record_kinds, nodeid=sim_nodeid(scenario.name))
        self._progress = progress
        self._conns: dict[int, _Conn] = {}
        self.connections = PathConnections(self.observer.note_connections)
        # message id -> size, kept only where a host's time depends on it
        self._sizes: dict[str, int] = {}
        self._keep_sizes = self.world.sizes_matter
        # Timer wheel: a heap of (at, seq, name), and per name a `_Timer`: its
        # latest arming (at, seq; seq -1 once cancelled or fired) and its
        # earliest entry in the heap ("the anchor"), at or before the armed
        # deadline whenever the name is armed.  A name is in `_timers` while it
        # has an anchor.  One entry per name: the engine re-arms a connection's
        # command timer with every reply, and this is one lookup per arming.
        self._timers: dict[TimerName, _Timer] = {}
        self._heap: list[tuple[float, int, TimerName]] = []
        self._seq = 0  # the last arming's sequence number
        self._wake_at = float("inf")
        self._arrivals: Iterator[MessageSubmitted] | None = None
        self._next_arrival: MessageSubmitted | None = None
        self.submitted = 0
        self._gc_pending = False  # the collector to be frozen once the arrivals are in
        self._gc_frozen = False
        self.events_fed = 0  # events handed to the engine (for the benchmarks)
        self.done = self.env.event()
        # samples go on until this triggers: this run's end (`sim.nodes` gives
        # every node the event of all of them done: one done early still has
        # connections open, and the nodes' series adds their samples up)
        self.sampled_until: Any = self.done
        self._replies_call = [self._replies]  # `_send`'s callbacks, made once (`_after`)

    def use_env(self, env: simpy.Environment) -> None:
        """Run on `env` (`sim.nodes` puts several drivers on one clock)."""
        self.env = env
        self._queue = env._queue
        self._eid = env._eid  # type: ignore[attr-defined]

    # -- scheduling primitives -------------------------------------------------

    def _at(self, delay: float, fn: Callable[[Any], None], value: Any = None) -> None:
        """Call `fn(event)` after `delay` simulated seconds (one bare SimPy event)."""
        self._after(delay, [fn], value)

    def _after(self, delay: float, calls: list[Callable[[Any], None]], value: Any = None
               ) -> None:
        """Call each of `calls` (a list the caller may keep and pass again: SimPy
        only reads it) with a `_Due` holding `value`, after `delay` simulated seconds.

        What `Event(env)` plus `env.schedule(ev, NORMAL, delay)` do, inlined:
        this runs a few times per simulated message."""
        ev = _Due()
        ev.callbacks = calls
        ev._value = value
        heapq.heappush(self._queue,
                       (self.env._now + (delay if delay > 0.0 else 0.0), _NORMAL,
                        next(self._eid), ev))

    def _feed(self, event: EngineEvent) -> None:
        """Hand one event to the engine and carry out what it orders."""
        self.events_fed += 1
        self._take(self.engine.handle(event))

    def _take(self, effects: list[Effect]) -> None:
        """Carry out what the engine orders, in order."""
        effect: Any
        for effect in effects:
            kind = type(effect)
            # the four most frequent effects first, without a call to dispatch
            # them (and read as their own class: native reads when compiled)
            if kind is SetTimer:
                # Arm the timer: its latest arming is the live one.  The entry
                # already in the heap (the anchor) stays when it comes up first,
                # which is the commonest case (a command timer re-armed later),
                # and re-pushes this arming then (`_settle`).
                arming: SetTimer = effect  # a checked cast when compiled, free in Python
                name = arming.timer
                at = arming.at
                timer = self._timers.get(name)
                if timer is None or timer[2] > at:
                    self._anchor_arming(name, at, timer)
                else:
                    timer[0] = at
                    self._seq = seq = self._seq + 1
                    timer[1] = seq
            elif kind is Log:
                log: Log = effect
                self.observer.log(log.record, self.env._now,  # type: ignore[attr-defined]
                                  log.where)
            elif kind is Send:
                self._send(effect)
            elif kind is Discard:
                # the engine is done with the message (delivered, bounced or expired)
                discard: Discard = effect
                message_id = discard.message_id
                if self._sizes:
                    self._sizes.pop(message_id, None)
                silent = self.engine.silent_redelays
                observer = self.observer
                observer.finish(message_id, silent.pop(message_id, None) if silent else None)
                if observer.finished >= self.submitted:  # `_check_done`'s first test
                    self._check_done()
            else:
                self._carry_out(effect)

    # -- running ---------------------------------------------------------------

    def run(self, arrivals: Iterator[MessageSubmitted], horizon: float) -> None:
        self._arrivals = iter(arrivals)
        self._next_arrival = next(self._arrivals, None)
        if self._next_arrival is not None:
            self._at(self._next_arrival.at, self._on_arrival)
        interval = self.observer.sample_interval(self.scenario, horizon)
        self._at(0.0, self._on_sample, interval)
        until = self.env.timeout(horizon)
        # The collector's part (see `_on_arrival`), only when it is ours to
        # tune: on, and nothing frozen by the caller.
        self._gc_pending = gc.isenabled() and gc.get_freeze_count() == 0
        try:
            run_until(self.env, self.env.any_of([self.done, until]))
        finally:
            self._gc_pending = False
            if self._gc_frozen:
                self._gc_frozen = False
                gc.unfreeze()
        self.observer.sample(self.env.now, self._conn_counts(), final=True)

    def _on_arrival(self, ev: _Due) -> None:
        """Submit the messages due now.  Until the last is in, the garbage
        collector is off while they go in, and once it is, what is alive then
        (the queued messages, most of the run's objects in a blast) is frozen
        (`gc.freeze`) until the run ends: otherwise every full collection
        traverses them all again, a blast's millions of messages, while they
        drain.  A queued message's objects hold no reference cycles: frozen,
        they are still freed when the engine lets them go; `run` unfreezes
        what is left when it ends."""
        if not self._gc_pending:
            self._arrive()
            return
        gc.disable()
        try:
            self._arrive()
            if self._next_arrival is None:
                self._gc_pending = False
                self._gc_frozen = True
                gc.freeze()
        finally:
            gc.enable()

    def _arrive(self) -> None:
        env = self.env
        arrivals = self._arrivals
        assert arrivals is not None
        sizes = self._sizes if self._keep_sizes else None
        while True:
            now = env._now  # type: ignore[attr-defined]
            msg = self._next_arrival
            # Every message due at this instant goes in under one SimPy event.
            while msg is not None and msg.at <= now:
                if sizes is not None:
                    sizes[msg.id] = msg.size
                self.submitted += 1
                self._feed(msg)
                msg = next(arrivals, None)
            self._next_arrival = msg
            if msg is None:
                self._check_done()
                return
            # The next arrival's event would be due at `due` (what `_at` computes).
            # When nothing else is scheduled before it (strictly: a tie keeps
            # SimPy's order), SimPy would run it next: advance the clock to it
            # here instead of scheduling an event (one per message, otherwise).
            due = now + (msg.at - now)
            if due < env.peek():
                env._now = due  # type: ignore[attr-defined]
                continue
            self._at(msg.at - now, self._on_arrival)
            return

    def _on_sample(self, ev: _Due) -> None:
        interval: float = ev._value
        self.observer.sample(self.env.now, self._conn_counts())
        if self._progress is not None:
            self._progress(self.env.now, self.observer.finished, self.submitted)
        if not self.sampled_until.triggered:
            self._at(interval, self._on_sample, interval)

    def _check_done(self) -> None:
        if (
            self.observer.finished >= self.submitted  # the test that fails, until the end
            and self._next_arrival is None
            and not self.done.triggered
        ):
            self.observer.drain_time = self.env.now
            self.done.succeed()

    def _conn_counts(self) -> dict[str, int]:
        return self.connections.counts()

    # -- timers ----------------------------------------------------------------

    def _anchor_arming(self, name: TimerName, at: float, timer: _Timer | None) -> None:
        """Arm `name` (whose `_Timer` is `timer`, None if it has none) at `at`,
        pushed as its anchor; wake earlier if it is the first due."""
        self._seq = seq = self._seq + 1
        if timer is None:
            self._timers[name] = [at, seq, at, seq]
        else:
            timer[:] = (at, seq, at, seq)
        heapq.heappush(self._heap, (at, seq, name))
        if at < self._wake_at:
            self._wake_at = at
            self._at(at - self.env.now, self._on_wake, at)

    def _settle(self, entry: tuple[float, int, TimerName]) -> None:
        """A popped heap entry that is not its name's live arming: when it was
        the anchor, push the name's current arming (if any) in its place."""
        _, seq, name = entry
        timer = self._timers.get(name)
        if timer is not None and timer[3] == seq:
            at, armed = timer[0], timer[1]
            if armed < 0:
                del self._timers[name]
            else:
                timer[2] = at
                timer[3] = armed
                heapq.heappush(self._heap, (at, armed, name))

    def _on_wake(self, ev: _Due) -> None:
        if ev._value != self._wake_at:
            return  # superseded by an earlier wake
        env = self.env
        heap, timers = self._heap, self._timers
        while True:
            now = env._now  # type: ignore[attr-defined]
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                name = entry[2]
                timer = timers.get(name)
                if timer is not None and timer[1] == entry[1]:
                    del timers[name]  # a live arming is always its name's anchor
                    self._feed(_TimerFired(now, name))
                else:
                    self._settle(entry)
            # Bring the earliest live arming to the head, so the wake is exactly
            # when the next timer is due.
            while heap:
                entry = heap[0]
                timer = timers.get(entry[2])
                if timer is not None and timer[1] == entry[1]:
                    break
                heapq.heappop(heap)
                self._settle(entry)
            self._wake_at = float("inf")
            if not heap:
                return
            self._wake_at = wake = heap[0][0]
            # As for arrivals: when nothing else is scheduled before the next
            # wake (strictly), SimPy would run it next; run it here instead.
            due = now + (wake - now)
            if due < env.peek():
                env._now = due  # type: ignore[attr-defined]
                continue
            self._at(wake - now, self._on_wake, wake)
            return

    # -- effects ---------------------------------------------------------------

    def _carry_out(self, effect: Any) -> None:
        kind = type(effect)
        # `_feed` carries out SetTimer, Log, Send and Discard itself; the next most frequent first
        if kind is CancelTimer:
            timer = self._timers.get(effect.timer)
            if timer is not None:
                timer[1] = -1  # disarmed; its anchor stays until it comes up (`_settle`)
        elif kind is Connect:
            self._connect(effect)
        elif kind is Close:
            self._close(effect.conn)
        elif kind is Resolve:
            answer: Any = self.world.resolve(effect.domain, self.env.now)
            self._at(self.world.dns_latency, self._deliver_at_now, answer)
        elif kind is ResolveHosts:
            answer = self.world.resolve_hosts(effect.domain, effect.hosts, self.env.now)
            self._at(self.world.dns_latency, self._deliver_at_now, answer)
        elif kind is FetchMtaSts:
            answer = self.world.mta_sts(effect.domain, self.env.now)
            self._at(self.world.dns_latency, self._deliver_at_now, answer)
        elif kind is ResolveTlsa:
            answer = TlsaResolved(
                at=self.env.now, host=effect.host, port=effect.port, records=(), secure=False
            )
            self._at(self.world.dns_latency, self._deliver_at_now, answer)
        elif kind is StartTls:
            self._starttls(effect)
        else:  # pragma: no cover - a new effect type the driver does not know
            raise TypeError(f"the simulator cannot carry out {effect!r}")

    def _deliver_at_now(self, ev: _Due) -> None:
        """Deliver an answer computed earlier, re-stamped with the current time."""
        answer = ev._value
        self._feed(restamp(answer, self.env.now))


def sim_nodeid(name: str, node: int = 0) -> str:
    """A simulated node's id: a UUID fixed by the scenario's name and the node's
    index (KumoMTA's records carry the node's persisted UUID,
    crates/kumo-server-common/src/nodeid.rs), the same on every run."""
    suffix = f"#{node}" if node else ""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"egress-simulation:{name}{suffix}"))
