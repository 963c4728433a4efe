"""The asyncio driver: the engine's effects carried out with real I/O.

This is the live twin of `sim.driver`.  It reads the clock, does the I/O,
turns bytes into events with the core's parser (`engine.wire`), journals every
event it feeds the engine (so the engine's state is a fold over the journal),
and carries out every effect in order.  It makes no delivery decision: no
retry, no back-off, no throttle, no protocol branching (STYLE.md, "Drivers").

Connections are asyncio `Protocol`s, not stream readers
(`engine.live.connection`): `data_received` feeds the reply parser and each
complete reply becomes one `Response` event, so a pipelined batch costs one
write and one read wake-up.

Time: events carry Unix time (`time.time()`), so records need no epoch.
Timers are `engine.live.timers.LiveTimers`: one asyncio handle per timer name,
re-armed lazily (moving a deadline later costs no handle).

Journaling, two ways.  With ``journal=`` (one event at a time) each accepted
event is handed over at once.  With ``journal_batch=`` the events
the driver's own I/O produces (replies, timers, connects, DNS answers) are
collected and handed over in one list per loop iteration, in exactly the
order the engine handled them, so one journal append (one request, one
wake-up of the writer) serves a whole pipelined batch and every connection
that was readable in that iteration.  Two rules keep the journal's contract
("the engine's state is a fold over the journal") and its crash safety:

* when the batch sink is called, the engine has handled exactly the events
  handed over so far, so a snapshot taken inside the sink matches the last
  seq;
* `Discard` is passed on (``on_discard``, which drops the body) only after the
  events that led to it were handed over, so a body is never dropped ahead
  of the events that finished its message.

`feed()` from outside (a submission, `Restarted`) hands everything over before
it returns, and returns the sink's answer (the commit future), so its caller
can await the commit of what it fed.

Bodies are encoded for the wire once per message and kept until `Discard`
(bounded), so a retry or a second transaction of the same message does not
dot-stuff the same bytes again.  Reply bytes go through the core's parser,
with a small cache of whole reads (`engine.live.connection`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.effects import (
    CancelTimer,
    Close,
    Connect,
    Discard,
    FetchMtaSts,
    Log,
    Resolve,
    ResolveHosts,
    ResolveTlsa,
    Send,
    SetTimer,
    SmtpCommand,
    StartTls,
    Verb,
)
from engine.errors import EgressError, PolicyError, ProtocolError
from engine.events import Drain, Event, Malformed, TimerFired
from engine.events import Timer as TimerName
from engine.flow import forget_due_texts
from engine.lifecycle import compact
from engine.live.connection import SmtpClientProtocol
from engine.live.driver_io import DriverIO
from engine.live.keysource_resolve import resolve_keysource
from engine.live.timers import LiveTimers
from engine.records import forget_texts
from engine.reply import Reply
from engine.wire import encode_auth_plain, encode_body, encode_command

log = logging.getLogger("egress.live")


BODY_CACHE_BYTES = 64 * 1024 * 1024
"""Most wire-encoded bodies kept (bytes, all messages together) until their Discard."""

BodySource = Callable[[str], bytes]
RecordSink = Callable[[dict[str, Any]], None]
EventSink = Callable[[Event], Any]
BatchSink = Callable[[list[Event]], Any]


class LiveDriver(DriverIO):
    """Carries out an `Engine`'s effects on a running asyncio loop.

    `journal` receives each accepted event at once; `journal_batch` (instead)
    receives them as lists, one per loop iteration, in the engine's order
    (see the module docstring).  Give one or neither.
    """

    def __init__(
        self,
        engine: Any,
        *,
        resolver: Any,
        bodies: BodySource,
        records: RecordSink | None = None,
        journal: EventSink | None = None,
        journal_batch: BatchSink | None = None,
        mta_sts: Any | None = None,
        tls_cafile: str | None = None,
        on_discard: Callable[[str], None] | None = None,
        hostname: str | None = None,
        on_reap: Callable[[], None] | None = None,
    ) -> None:
        if journal is not None and journal_batch is not None:
            raise ValueError("LiveDriver takes journal= or journal_batch=, not both")
        self.engine = engine
        # the default EHLO name: the machine's host name, as KumoMTA's dispatcher
        # uses gethostname() (crates/kumod/src/smtp_dispatcher.rs SmtpDispatcher::init)
        engine.hostname = hostname or machine_hostname()
        self.resolver = resolver
        self.bodies = bodies
        self.records = records
        self.journal = journal
        self.journal_batch = journal_batch
        self.mta_sts = mta_sts
        self.tls_cafile = tls_cafile
        self.on_discard = on_discard
        self.on_reap = on_reap  # after a reap sweep dropped something (engine.live.memory)
        self.loop = asyncio.get_running_loop()
        self.timers = LiveTimers(self.loop, self._fire)
        self._conns: dict[int, SmtpClientProtocol] = {}
        self._pending: dict[int, asyncio.Task[None]] = {}  # connecting or upgrading
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unjournaled: list[Event] = []  # batch mode: accepted, not yet handed over
        self._discards: list[str] = []  # batch mode: Discards waiting for their events
        self._flush_handle: asyncio.Handle | None = None
        self._wire_bodies: dict[str, bytes] = {}  # message id -> encode_body(...)
        self._wire_bytes = 0
        self.reply_cache: dict[bytes, tuple[Reply, ...]] = {}  # see SmtpClientProtocol
        self.protocol_errors = 0  # events the engine refused (driver bugs; should stay 0)
        self.hook_failures = 0  # submissions refused because the policy's queue_config raised
        self.effect_errors = 0  # effects that raised (driver bugs; should stay 0)
        self.draining = False  # drain() was called: the engine has its Drain event
        self._effects: dict[type, Callable[[Any], None]] = {
            Send: self._send,
            SetTimer: self._set_timer,
            CancelTimer: self._cancel_timer,
            Log: self._log,
            Connect: self._connect_effect,
            Close: self._close_effect,
            Discard: self._discard,
            Resolve: lambda eff: self._spawn(self._resolve(eff.domain)),
            ResolveHosts: lambda eff: self._spawn(self._resolve_hosts(eff.domain, eff.hosts)),
            FetchMtaSts: lambda eff: self._spawn(self._fetch_mta_sts(eff.domain)),
            ResolveTlsa: lambda eff: self._spawn(self._resolve_tlsa(eff.host, eff.port)),
            StartTls: self._start_tls,
        }

    def add_effects(self, handlers: dict[type, Callable[[Any], None]]) -> None:
        """Carry out more effect types (the shared store's, engine.live.shared_redis)."""
        self._effects.update(handlers)

    # -- the ways in ----------------------------------------------------------

    def feed(self, event: Event) -> Any:
        """Hand `event` to the engine, journal it, carry out what it orders.

        Called from outside the driver (a submission, `Restarted`): whatever
        was waiting to be journaled, this event included, is handed to the
        journal before it returns.  Returns what the journal sink returned for
        that hand-over (in batch mode, the commit future to await), or None
        when the engine refused the event (nothing was journaled for it).
        """
        if not self.handle_io(event):
            return None
        return self.flush_journal()

    def handle_io(self, event: Event) -> bool:
        """Hand an event the driver's I/O produced to the engine; journal it with
        this loop iteration's others (batch mode) or at once; carry out its effects.

        The event is journaled only once the engine accepted it: an event the
        engine refuses (`ProtocolError`, a driver bug) leaves its state
        unchanged, so it must not enter the journal either, or every replay
        would trip on it.  It is logged loudly and counted instead (False).
        """
        try:
            effects = self.engine.handle(event)
        except ProtocolError:
            self.protocol_errors += 1
            log.error("live driver: the engine refused %r", event, exc_info=True)
            return False
        except PolicyError as exc:  # queue_config raised: this submission only
            self.hook_failures += 1
            log.warning("live driver: the engine refused %s %s: %s", type(event).__name__,
                        getattr(event, "id", ""), exc)
            return False
        if self.journal_batch is not None:
            self._unjournaled.append(event)
            if self._flush_handle is None:
                self._flush_handle = self.loop.call_soon(self.flush_journal)
        elif self.journal is not None:
            self.journal(event)
        handlers = self._effects
        for effect in effects:
            handler = handlers.get(type(effect))
            if handler is None:  # pragma: no cover - an effect type this driver does not know
                raise TypeError(f"the live driver cannot carry out {effect!r}")
            try:
                handler(effect)
            except Exception:  # a driver bug: the event's other effects still happen
                self.effect_errors += 1
                log.error("live driver: carrying out %r failed", effect, exc_info=True)
        return True

    def flush_journal(self) -> Any:
        """Batch mode: hand the waiting events to the journal (one call), then
        pass on the Discards they led to; return what the sink returned (None
        when nothing was waiting).  Nothing to do in the other modes."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        events, self._unjournaled = self._unjournaled, []
        committed = self.journal_batch(events) if events else None  # type: ignore[misc]
        if self._discards:
            discards, self._discards = self._discards, []
            if self.on_discard is not None:
                for message_id in discards:
                    self.on_discard(message_id)
        return committed

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A driver bug, not a remote fault: make it loud.
            log.error("live driver task failed", exc_info=task.exception())

    # -- effects -------------------------------------------------------------

    def _set_timer(self, eff: SetTimer) -> None:
        self.timers.set(eff.timer, eff.at)

    def _cancel_timer(self, eff: CancelTimer) -> None:
        self.timers.cancel(eff.timer)

    def _log(self, eff: Log) -> None:
        if self.records is not None:
            self.records(eff.record)

    def _connect_effect(self, eff: Connect) -> None:
        self._pending[eff.conn] = self._spawn(self._connect(eff))

    def _close_effect(self, eff: Close) -> None:
        self._close(eff.conn)

    def _discard(self, eff: Discard) -> None:
        wire = self._wire_bodies.pop(eff.message_id, None)
        if wire is not None:
            self._wire_bytes -= len(wire)
        if self.journal_batch is not None:
            self._discards.append(eff.message_id)  # after its events reach the journal
        elif self.on_discard is not None:
            self.on_discard(eff.message_id)

    def _start_tls(self, eff: StartTls) -> None:
        proto = self._conns.get(eff.conn)
        if proto is not None:
            proto.upgrading = True
        self._pending[eff.conn] = self._spawn(self._starttls(eff))

    def _fire(self, name: TimerName) -> None:
        if name not in self.engine.timers:
            return  # disarmed inside the engine meanwhile: a stale firing (lazy cancel)
        if name != ("reap", ""):
            self.handle_io(TimerFired(at=time.time(), timer=name))
            return
        eng = self.engine
        held = len(eng.paths) + len(eng.queues) + len(eng.domains)
        self.handle_io(TimerFired(at=time.time(), timer=name))
        if eng.reap_after is not None:
            self._reaped(held > len(eng.paths) + len(eng.queues) + len(eng.domains))

    def _reaped(self, dropped: bool) -> None:
        """After the engine's reap sweep (`dropped`: it dropped a path, queue or
        domain): the DNS answers of reaped domains go, the driver's own tables
        are rebuilt if mostly empty, and `on_reap` hands the memory back
        (`engine.live.memory`)."""
        prune = getattr(self.resolver, "prune", None)  # a test's resolver may have none
        if prune is not None and prune(self.engine.reap_after, self.engine.domains):
            dropped = True
        for table in (self._conns, self._pending, self._tasks, self._wire_bodies,
                      self.timers.table()):
            compact(table)
        if dropped:
            # memos filled during a burst: each entry kept would pin the
            # allocator pool it was made in (engine.live.memory)
            self.reply_cache.clear()
            forget_texts()
            forget_due_texts()
            if self.on_reap is not None:
                self.on_reap()

    def _send(self, eff: Send) -> None:
        proto = self._conns.get(eff.conn)
        if proto is None or proto.transport is None or proto.closing:
            return  # closed under us; the engine learns it from `Closed`
        commands = eff.commands
        try:
            if len(commands) == 1:
                data = self._encode(commands[0])
            else:
                data = b"".join([self._encode(c) for c in commands])
        except (ValueError, EgressError) as exc:
            self._unsendable(eff.conn, commands, exc)
            return
        proto.transport.write(data)

    def _unsendable(self, conn: int, commands: tuple[SmtpCommand, ...], exc: Exception) -> None:
        """A command that cannot be put on the wire (a CR in an address from an
        older journal, a keysource that cannot be read): nothing of the batch is
        written, and the session learns it as a `Malformed` on the next loop turn
        (after this event's remaining effects, its timer included), so it fails
        the transaction or host with a record naming the error, which never
        holds a secret (`engine.live.keysource_resolve`)."""
        verbs = "/".join(c.verb.value for c in commands)
        detail = f"egress could not send {verbs}: {exc}"
        log.warning("live driver: connection %d: %s", conn, detail)

        def tell() -> None:
            if conn in self.engine.conns:
                self.handle_io(Malformed(at=time.time(), conn=conn, detail=detail))

        self.loop.call_soon(tell)

    def _encode(self, cmd: SmtpCommand) -> bytes:
        verb = cmd.verb
        if verb is Verb.BODY:
            return self._wire_body(cmd.arg)
        if verb is Verb.AUTH_PLAIN:
            secret = cmd.secret
            password = resolve_keysource(secret) if secret is not None else ""
            return encode_auth_plain(cmd.arg, password)
        return encode_command(cmd)

    def _wire_body(self, message_id: str) -> bytes:
        """The message's body as sent after the 354, encoded once until its Discard."""
        wire = self._wire_bodies.get(message_id)
        if wire is None:
            wire = encode_body(self.bodies(message_id))
            cache = self._wire_bodies
            while cache and self._wire_bytes + len(wire) > BODY_CACHE_BYTES:
                self._wire_bytes -= len(cache.pop(next(iter(cache))))  # the oldest goes
            if len(wire) <= BODY_CACHE_BYTES:
                cache[message_id] = wire
                self._wire_bytes += len(wire)
        return wire

    # -- shutdown --------------------------------------------------------------

    def in_flight(self) -> int:
        """Transactions on the wire now (started, connection open)."""
        conns = getattr(self.engine, "conns", {})
        return sum(
            1 for conn, ctx in conns.items()
            if ctx.started and conn in self._conns
        )

    async def drain(self, grace: float) -> bool:
        """Start no new connection or transaction; wait up to `grace` seconds for
        the transactions on the wire to finish.  True if they all did."""
        if not self.draining:
            self.draining = True
            self.feed(Drain(at=time.time()))  # the engine opens and starts nothing more
        deadline = self.loop.time() + grace
        while self.in_flight() and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.in_flight() == 0

    def cancel_timers(self) -> None:
        """Disarm every timer (shutdown; the journal keeps the engine's timers)."""
        self.timers.clear()

    async def abort_all(self) -> None:
        """Drop every connection and pending I/O (shutdown; the journal keeps the state).

        What is waiting to be journaled is handed over first."""
        self.flush_journal()
        self.cancel_timers()
        for conn in list(self._conns):
            proto = self._conns.pop(conn)
            proto.closing = True
            if proto.transport is not None:
                proto.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.flush_journal()


def machine_hostname() -> str:
    """The default EHLO name: the machine's host name (KumoMTA falls back to
    ``[127.0.0.1]`` when it has none)."""
    return socket.gethostname() or "[127.0.0.1]"
