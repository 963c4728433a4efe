"""The simulator's connection phases: connect, STARTTLS, commands, replies.

Split from `sim.driver` (which keeps the clock, the timers and the run) so
each module stays readable: this mixin turns the engine's per-connection
effects into calls on `sim.world.World` and schedules the answers as
engine events.  It uses the driver's `_at`, `_feed`, `_conns`, `connections`,
`_sizes`, `world`, `observer` and `env`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpy.events import Event

from engine.effects import Connect, Send, StartTls, Verb
from engine.events import (
    Connected,
    ConnectFailed,
    TlsEstablished,
    TlsFailed,
)
from engine.makers import make_response as _Response  # (at, conn, reply), unchecked
from sim.connections import PathConnections

_BODY, _EHLO, _HELO = Verb.BODY, Verb.EHLO, Verb.HELO


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
    world: Any
    observer: Any
    env: Any

    def _at(self, delay: float, fn: Callable[[Event], None], value: Any = None) -> None:
        raise NotImplementedError  # SimDriver's

    def _feed(self, event: Any) -> None:
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

    def _connected(self, ev: Event) -> None:
        conn_id, banner = ev._value
        conn = self._conns.get(conn_id)
        if conn is None or not conn.alive:
            return
        now = self.env.now
        self._feed(Connected(at=now, conn=conn_id))
        if conn.alive:
            self._feed(_Response(now, conn_id, banner))

    def _connect_failed(self, ev: Event) -> None:
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

    def _tls_done(self, ev: Event) -> None:
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
        conn = self._conns.get(eff.conn)
        if conn is None:
            return
        now = self.env._now
        commands = eff.commands
        first = commands[0]
        verb = first.verb
        if verb is _BODY:
            # `_sizes` is empty where no host's time depends on the size
            sizes = self._sizes
            size = sizes.get(first.arg, 0) if sizes else 0
            delay, reply = self.world.body(conn.host, size, now, conn.source)
            self._at(delay, self._replies, (eff.conn, (reply,)))
        elif verb is _EHLO or verb is _HELO:
            delay, reply = self.world.ehlo(conn.host, now, tls=conn.tls)
            self._at(delay, self._replies, (eff.conn, (reply,)))
        else:
            answers = self.world.reply_batch(conn.host, commands, now, conn.source)
            # A pipelined batch is read as it arrives; the replies come together
            # after the slowest one, which is how a pipelining server answers.
            delays, replies = zip(*answers, strict=True)
            self._at(max(delays), self._replies, (eff.conn, replies))

    def _replies(self, ev: Event) -> None:
        conn_id, replies = ev._value
        now = self.env._now
        conns = self._conns
        for reply in replies:
            # a connection leaves `_conns` when it ends (`_forget`), so one there is alive
            if conn_id not in conns:
                return  # the engine closed it (timeout, 421) before all replies were read
            self._feed(_Response(now, conn_id, reply))
