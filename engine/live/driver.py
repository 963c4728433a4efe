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
Timers are asyncio `TimerHandle`s, which can be cancelled for real.
"""

from __future__ import annotations

import asyncio
import logging
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
    ResolveTlsa,
    Send,
    SetTimer,
    SmtpCommand,
    StartTls,
    Verb,
)
from engine.errors import ProtocolError
from engine.events import (
    Closed,
    Connected,
    ConnectFailed,
    DnsFailure,
    Event,
    MtaStsResolved,
    ResolveFailed,
    TimerFired,
    TlsaResolved,
    TlsEstablished,
    TlsFailed,
)
from engine.events import Timer as TimerName
from engine.live.connection import SmtpClientProtocol
from engine.wire import ReplyParser, encode_auth_plain, encode_body, encode_command

log = logging.getLogger("egress.live")

_TXN_START = (Verb.MAIL, Verb.RSET)

BodySource = Callable[[str], bytes]
RecordSink = Callable[[dict[str, Any]], None]
EventSink = Callable[[Event], Any]


class LiveDriver:
    """Carries out an `Engine`'s effects on a running asyncio loop."""

    def __init__(
        self,
        engine: Any,
        *,
        resolver: Any,
        bodies: BodySource,
        records: RecordSink | None = None,
        journal: EventSink | None = None,
        mta_sts: Any | None = None,
        tls_cafile: str | None = None,
        on_discard: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.resolver = resolver
        self.bodies = bodies
        self.records = records
        self.journal = journal
        self.mta_sts = mta_sts
        self.tls_cafile = tls_cafile
        self.on_discard = on_discard
        self.loop = asyncio.get_running_loop()
        self._timers: dict[TimerName, asyncio.TimerHandle] = {}
        self._conns: dict[int, SmtpClientProtocol] = {}
        self._pending: dict[int, asyncio.Task[None]] = {}  # connecting or upgrading
        self._tasks: set[asyncio.Task[Any]] = set()
        self.protocol_errors = 0  # events the engine refused (driver bugs; should stay 0)
        self.draining = False  # shutting down: start no connection, no transaction
        self.suppressed: set[int] = set()  # conns whose transaction start was not sent

    # -- the one way in ------------------------------------------------------

    def feed(self, event: Event) -> None:
        """Hand `event` to the engine, journal it, carry out what it orders.

        The event is journaled only once the engine accepted it: an event the
        engine refuses (`ProtocolError`, a driver bug) leaves its state
        unchanged, so it must not enter the journal either, or every replay
        would trip on it.  It is logged loudly and counted instead.
        """
        try:
            effects = self.engine.handle(event)
        except ProtocolError:
            self.protocol_errors += 1
            log.error("live driver: the engine refused %r", event, exc_info=True)
            return
        if self.journal is not None:
            self.journal(event)
        for effect in effects:
            self._carry_out(effect)

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

    def _carry_out(self, effect: Any) -> None:
        kind = type(effect)
        if kind is Send:
            self._send(effect)
        elif kind is SetTimer:
            self._set_timer(effect.timer, effect.at)
        elif kind is CancelTimer:
            handle = self._timers.pop(effect.timer, None)
            if handle is not None:
                handle.cancel()
        elif kind is Log:
            if self.records is not None:
                self.records(effect.record)
        elif kind is Connect:
            if self.draining:
                return  # shutting down: the next process retries its message
            self._pending[effect.conn] = self._spawn(self._connect(effect))
        elif kind is Close:
            self._close(effect.conn)
        elif kind is Discard:
            if self.on_discard is not None:
                self.on_discard(effect.message_id)
        elif kind is Resolve:
            self._spawn(self._resolve(effect.domain))
        elif kind is FetchMtaSts:
            self._spawn(self._fetch_mta_sts(effect.domain))
        elif kind is ResolveTlsa:
            self._spawn(self._resolve_tlsa(effect.host, effect.port))
        elif kind is StartTls:
            proto = self._conns.get(effect.conn)
            if proto is not None:
                proto.upgrading = True
            self._pending[effect.conn] = self._spawn(self._starttls(effect))
        else:  # pragma: no cover - an effect type this driver does not know
            raise TypeError(f"the live driver cannot carry out {effect!r}")

    def _set_timer(self, name: TimerName, at: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, at - time.time())
        self._timers[name] = self.loop.call_later(delay, self._fire, name)

    def _fire(self, name: TimerName) -> None:
        self._timers.pop(name, None)
        if name not in self.engine.timers:
            return  # disarmed inside the engine meanwhile: a stale firing (lazy cancel)
        self.feed(TimerFired(at=time.time(), timer=name))

    async def _resolve(self, domain: str) -> None:
        try:
            answer: Event = await self.resolver.resolve_mx(domain, time.time())
        except Exception as exc:  # a resolver bug must not leave the domain parked forever
            log.error("live driver: MX lookup of %s failed unexpectedly", domain, exc_info=True)
            answer = ResolveFailed(at=time.time(), domain=domain, kind=DnsFailure.SERVFAIL,
                                   detail=f"resolver error: {exc!r}")
        self.feed(_now(answer))

    async def _resolve_tlsa(self, host: str, port: int) -> None:
        try:
            answer: Event = await self.resolver.resolve_tlsa(host, port, time.time())
        except Exception:
            log.error("live driver: TLSA lookup of %s:%d failed unexpectedly", host, port,
                      exc_info=True)
            answer = TlsaResolved(at=time.time(), host=host, port=port, records=(),
                                  secure=False)
        self.feed(_now(answer))

    async def _fetch_mta_sts(self, domain: str) -> None:
        answer: Event = MtaStsResolved(at=time.time(), domain=domain, policy=None)
        if self.mta_sts is not None:
            try:
                answer = await self.mta_sts.fetch(domain, time.time())
            except Exception:
                log.error("live driver: MTA-STS fetch for %s failed unexpectedly", domain,
                          exc_info=True)
        self.feed(_now(answer))

    async def _connect(self, eff: Connect) -> None:
        proto = SmtpClientProtocol(self, eff.conn)
        local = (eff.source_address, 0) if eff.source_address else None
        try:
            await self.loop.create_connection(
                lambda: proto, host=eff.address, port=eff.port, local_addr=local
            )
        except asyncio.CancelledError:
            return  # the engine gave up (connect timeout) and closed it
        except OSError as exc:
            if self._pending.pop(eff.conn, None) is not None:
                self.feed(ConnectFailed(at=time.time(), conn=eff.conn, reason=_os_reason(exc)))

    def connection_made(self, conn: int, proto: SmtpClientProtocol) -> None:
        if self._pending.pop(conn, None) is None:
            # The engine closed this connection (connect timeout) meanwhile.
            proto.closing = True
            if proto.transport is not None:
                proto.transport.close()
            return
        self._conns[conn] = proto
        self.feed(Connected(at=time.time(), conn=conn))

    async def _starttls(self, eff: StartTls) -> None:
        from engine.live.tls import TlsHandshakeError, upgrade

        proto = self._conns.get(eff.conn)
        if proto is None or proto.transport is None:
            return
        try:
            transport, info = await upgrade(
                self.loop, proto.transport, proto, eff.settings, cafile=self.tls_cafile
            )
        except asyncio.CancelledError:
            return
        except (TlsHandshakeError, OSError, ConnectionError) as exc:
            self._pending.pop(eff.conn, None)
            # A failed handshake leaves the socket unusable: drop it quietly;
            # the engine decides what follows (next host, or a clear reconnect).
            proto.closing = True
            if proto.transport is not None:
                proto.transport.abort()
            if self._conns.pop(eff.conn, None) is not None:
                self.feed(TlsFailed(at=time.time(), conn=eff.conn, reason=str(exc)))
            return
        self._pending.pop(eff.conn, None)
        proto.transport = transport
        proto.parser = ReplyParser()  # RFC 3207: discard anything read before TLS
        proto.upgrading = False
        proto.broken = False
        self.feed(
            TlsEstablished(
                at=time.time(),
                conn=eff.conn,
                protocol=info.protocol,
                cipher=info.cipher,
                peer_subject=info.peer_subject,
            )
        )

    def _send(self, eff: Send) -> None:
        proto = self._conns.get(eff.conn)
        if proto is None or proto.transport is None or proto.closing:
            return  # closed under us; the engine learns it from `Closed`
        if self.draining and eff.commands[0].verb in _TXN_START:
            # Shutting down: no new transaction goes on the wire.  The engine
            # believes it started; the next process's `Restarted` hands the
            # message back without counting an attempt.
            self.suppressed.add(eff.conn)
            return
        proto.transport.write(b"".join(self._encode(c) for c in eff.commands))

    def _encode(self, cmd: SmtpCommand) -> bytes:
        if cmd.verb is Verb.BODY:
            return encode_body(self.bodies(cmd.arg))
        if cmd.verb is Verb.AUTH_PLAIN:
            secret = cmd.secret
            password = secret.resolve() if secret is not None else ""
            return encode_auth_plain(cmd.arg, password)
        return encode_command(cmd)

    def _close(self, conn: int) -> None:
        task = self._pending.pop(conn, None)
        if task is not None:
            task.cancel()
        proto = self._conns.pop(conn, None)
        if proto is not None:
            proto.closing = True
            if proto.transport is not None:
                proto.transport.close()

    def connection_lost(self, conn: int, reason: str) -> None:
        if self._conns.pop(conn, None) is not None:
            self.feed(Closed(at=time.time(), conn=conn, reason=reason))

    # -- shutdown --------------------------------------------------------------

    def in_flight(self) -> int:
        """Transactions on the wire now (started, not suppressed, connection open)."""
        conns = getattr(self.engine, "conns", {})
        return sum(
            1 for conn, ctx in conns.items()
            if ctx.started and conn in self._conns and conn not in self.suppressed
        )

    async def drain(self, grace: float) -> bool:
        """Start no new connection or transaction; wait up to `grace` seconds for
        the transactions on the wire to finish.  True if they all did."""
        self.draining = True
        deadline = self.loop.time() + grace
        while self.in_flight() and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.in_flight() == 0

    def cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def abort_all(self) -> None:
        """Drop every connection and pending I/O (shutdown; the journal keeps the state)."""
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


def _os_reason(exc: OSError) -> str:
    name = type(exc).__name__
    return f"{name}: {exc.strerror or exc}" if exc.strerror else f"{name}: {exc}"


def _now(event: Event) -> Event:
    """`event` stamped with the current time (answers are stamped when they arrive)."""
    fields = {name: getattr(event, name) for name in event.__dataclass_fields__}
    fields["at"] = time.time()
    return type(event)(**fields)
