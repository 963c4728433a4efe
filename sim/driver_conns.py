"""The simulator's connection phases: connect, STARTTLS, commands, replies.

Split from `sim.driver` (which keeps the clock, the timers and the run) so
each module stays readable: this mixin turns the engine's per-connection
effects into calls on `sim.world.World` and schedules the answers as
engine events.  It uses the driver's `_at`, `_feed`, `_conns`, `connections`,
`_sizes`, `world`, `observer` and `env`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, Final

import simpy
from simpy.events import NORMAL

from engine.effects import Connect, Send, StartTls, Verb
from engine.events import (
    Connected,
    ConnectFailed,
    TlsEstablished,
    TlsFailed,
)
from engine.makers import make_response as _Response  # (at, conn, reply), unchecked
from engine.reply import Reply
from sim.connections import PathConnections

if TYPE_CHECKING:
    from engine.engine import Engine
    from sim.observer import Observer
    from sim.world import World

_BODY: Final = Verb.BODY
_EHLO: Final = Verb.EHLO
_HELO: Final = Verb.HELO
_NORMAL: Final = NORMAL


class _Due:
    """What SimPy's `Environment.step` reads of a scheduled event (`callbacks`,
    `_ok`; the callbacks read `_value`), without the rest of a `simpy.Event`:
    a slotted object is cheaper to make than an Event's instance dictionary
    (and ``_Due()`` than ``object.__new__(_Due)``, which parses its
    arguments), and the driver makes a few per simulated message
    (`SimDriver._after`).  It never fails: `_ok` is the class's."""

    __slots__ = ("_value", "callbacks")

    _ok = True
    _value: Any
    callbacks: list[Callable[[Any], None]] | None


class _Replies(_Due):
    """The replies to one write of commands (`ConnectionPhases._send`), two per
    simulated message: `run_until` hands them to `phases._replies` itself, a
    native call in the compiled build (a callback is a Python call)."""

    __slots__ = ("conn", "phases", "replies")

    phases: ConnectionPhases
    conn: int  # the connection
    replies: list[Reply]  # what it reads, in order


def run_until(env: simpy.Environment, until: Any) -> None:
    """`env.run(until=until)`, with the driver's own scheduled calls (`_Due`,
    a few per simulated message) run here rather than by `Environment.step`
    (a Python call, and its bookkeeping, each).  Any other event is SimPy's
    to process: back on the queue, where it is still the first due (its
    entry is unique), for `step` to take.  Events run in exactly SimPy's order."""
    queue = env._queue  # type: ignore[attr-defined]
    step = env.step
    while until.callbacks is not None:  # SimPy empties them once it has processed `until`
        if not queue:
            raise RuntimeError(f'No scheduled events left but "until" event was not '
                               f"triggered: {until}")
        entry = heappop(queue)
        event: Any = entry[3]
        kind = type(event)
        if kind is _Replies:
            env._now = entry[0]  # type: ignore[attr-defined]
            replies: _Replies = event
            replies.phases._replies(replies)
        elif kind is _Due:
            env._now = entry[0]  # type: ignore[attr-defined]
            for call in event.callbacks:  # type: ignore[union-attr]
                call(event)
        else:
            heappush(queue, entry)
            step()


class _Conn:
    """What the driver knows of one simulated connection."""

    __slots__ = ("alive", "counted", "host", "path", "source", "tls")

    def __init__(self, host: str, path: str, source: str | None = None) -> None:
        self.host = host
        self.path = path
        self.source = source  # the source address the host sees (None: unbound)
        self.alive = True
        self.counted = False  # holds one of the host's connection slots
        self.tls = False


class ConnectionPhases:
    """Per-connection effects of the engine, carried out against the world."""

    # set by SimDriver
    _conns: dict[int, _Conn]
    connections: PathConnections
    _sizes: dict[str, int]
    world: World
    observer: Observer
    env: Any
    # the SimPy environment's event queue and id counter (`SimDriver.use_env`):
    # read natively, twice per simulated message
    _queue: list[Any]
    _eid: Iterator[int]
    _replies_call: list[Callable[[Any], None]]  # [self._replies]
    engine: Engine
    events_fed: int

    def _at(self, delay: float, fn: Callable[[_Due], None], value: Any = None) -> None:
        raise NotImplementedError  # SimDriver's

    def _feed(self, event: Any) -> None:
        raise NotImplementedError  # SimDriver's

    def _take(self, effects: list[Any]) -> None:
        raise NotImplementedError  # SimDriver's

    def _connect(self, eff: Connect) -> None:
        conn = _Conn(eff.host, eff.path, eff.source_address)
        self._conns[eff.conn] = conn
        self.connections.opened(eff.conn, eff.path)
        result = self.world.connect(eff.host, eff.address, self.env.now, eff.source_address)
        if result.kind == "ok":
            conn.counted = True
            self._at(result.delay, self._connected, (eff.conn, result.banner))
        elif result.kind == "refused":
            self._at(result.delay, self._connect_failed, (eff.conn, "connection refused"))
        # "blackhole": nothing ever answers; the engine's connect timer fires.

    def _connected(self, ev: _Due) -> None:
        conn_id, banner = ev._value
        conn = self._conns.get(conn_id)
        if conn is None or not conn.alive:
            return
        now = self.env.now
        self._feed(Connected(at=now, conn=conn_id))
        if conn.alive:
            self._feed(_Response(now, conn_id, banner))

    def _connect_failed(self, ev: _Due) -> None:
        conn_id, reason = ev._value
        conn = self._conns.get(conn_id)
        if conn is None or not conn.alive:
            return
        self._forget(conn_id)
        self._feed(ConnectFailed(at=self.env.now, conn=conn_id, reason=reason))

    def _close(self, conn_id: int) -> None:
        if conn_id in self._conns:
            self._forget(conn_id)

    def _forget(self, conn_id: int) -> None:
        conn = self._conns.pop(conn_id)
        conn.alive = False
        self.connections.ended(conn_id)
        if conn.counted:
            conn.counted = False
            self.world.release(conn.host, conn.source)

    def _starttls(self, eff: StartTls) -> None:
        conn = self._conns.get(eff.conn)
        if conn is None:
            return
        delay, ok, reason = self.world.starttls(conn.host, self.env.now)
        self._at(delay, self._tls_done, (eff.conn, ok, reason))

    def _tls_done(self, ev: _Due) -> None:
        conn_id, ok, reason = ev._value
        conn = self._conns.get(conn_id)
        if conn is None or not conn.alive:
            return
        now = self.env.now
        if ok:
            conn.tls = True
            self._feed(
                TlsEstablished(
                    at=now, conn=conn_id, protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384"
                )
            )
        else:
            self._feed(TlsFailed(at=now, conn=conn_id, reason=reason))

    def _send(self, eff: Send) -> None:
        conn_id = eff.conn
        conn = self._conns.get(conn_id)
        if conn is None:
            return
        env = self.env
        now = env._now
        commands = eff.commands
        first = commands[0]
        verb = first.verb
        replies: list[Reply]
        if verb is _BODY:
            # `_sizes` is empty where no host's time depends on the size
            sizes = self._sizes
            size = sizes.get(first.arg, 0) if sizes else 0
            delay, reply = self.world.body(conn.host, size, now, conn.source)
            replies = [reply]
        elif verb is _EHLO or verb is _HELO:
            delay, reply = self.world.ehlo(conn.host, now, tls=conn.tls)
            replies = [reply]
        else:
            # the replies of a pipelined batch come together, after the slowest
            delay, replies = self.world.batch_replies(conn.host, commands, now, conn.source)
        # `SimDriver._after`, inlined (twice per simulated message); the
        # world's delays are >= 0, so none is clamped
        ev = _Replies()
        ev.callbacks = self._replies_call  # for SimPy's own loop, should one run it
        ev.phases = self
        ev.conn = conn_id
        ev.replies = replies
        heappush(self._queue, (now + delay, _NORMAL, next(self._eid), ev))

    def _replies(self, ev: _Replies) -> None:
        """A write's replies, to the engine in one call (`Engine.handle_replies`,
        which reads no further than a reply that closes the connection)."""
        conn_id = ev.conn
        # a connection leaves `_conns` when it ends (`_forget`), so one there is alive
        if conn_id not in self._conns:
            return  # the engine closed it (a timeout) before the replies came
        replies = ev.replies
        self.events_fed += len(replies)
        self._take(self.engine.handle_replies(self.env._now, conn_id, replies))
