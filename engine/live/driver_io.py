"""The live driver's I/O outside the SMTP byte stream: lookups, connects, STARTTLS.

Split from `engine.live.driver` by topic (the driver proper is the effect loop,
the journal hand-over and the timers).  Each coroutine here waits for one
piece of I/O the engine ordered and turns its answer into one event, handed
to `handle_io`, exactly as a reply read on a connection is.  Nothing here
decides anything: a failed lookup or connect is an event for the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from engine.effects import Connect, StartTls
from engine.event_tools import restamp
from engine.events import (
    Closed,
    Connected,
    ConnectFailed,
    DnsFailure,
    Event,
    MtaStsResolved,
    ResolveFailed,
    TlsaResolved,
    TlsEstablished,
    TlsFailed,
)
from engine.live.connection import SmtpClientProtocol
from engine.live.tls import TlsHandshakeError, upgrade
from engine.reply import Reply
from engine.wire import ReplyParser

__all__ = ["DriverIO"]

log = logging.getLogger("egress.live")


class DriverIO:
    """The lookups, connects and TLS upgrades of `LiveDriver` (its base class)."""

    loop: asyncio.AbstractEventLoop
    resolver: Any
    mta_sts: Any
    tls_cafile: str | None
    _conns: dict[int, SmtpClientProtocol]
    _pending: dict[int, asyncio.Task[None]]
    reply_cache: dict[bytes, tuple[Reply, ...]]

    def handle_io(self, event: Event) -> bool:  # pragma: no cover - LiveDriver's
        raise NotImplementedError

    async def _resolve(self, domain: str) -> None:
        try:
            answer: Event = await self.resolver.resolve_mx(domain, time.time())
        except Exception as exc:  # a resolver bug must not leave the domain parked forever
            log.error("live driver: MX lookup of %s failed unexpectedly", domain, exc_info=True)
            answer = ResolveFailed(at=time.time(), domain=domain, kind=DnsFailure.SERVFAIL,
                                   detail=f"resolver error: {exc!r}")
        self.handle_io(_now(answer))

    async def _resolve_hosts(self, key: str, hosts: tuple[str, ...]) -> None:
        try:
            answer: Event = await self.resolver.resolve_hosts(key, hosts, time.time())
        except Exception as exc:  # a resolver bug must not leave the hosts parked forever
            log.error("live driver: address lookup of %s failed unexpectedly", key,
                      exc_info=True)
            answer = ResolveFailed(at=time.time(), domain=key, kind=DnsFailure.SERVFAIL,
                                   detail=f"resolver error: {exc!r}")
        self.handle_io(_now(answer))

    async def _resolve_tlsa(self, host: str, port: int) -> None:
        try:
            answer: Event = await self.resolver.resolve_tlsa(host, port, time.time())
        except Exception as exc:  # the status is unknown: DANE defers, never downgrades
            log.error("live driver: TLSA lookup of %s:%d failed unexpectedly", host, port,
                      exc_info=True)
            answer = TlsaResolved(at=time.time(), host=host, port=port, records=(),
                                  secure=False, failure=f"resolver error: {exc!r}")
        self.handle_io(_now(answer))

    async def _fetch_mta_sts(self, domain: str) -> None:
        answer: Event = MtaStsResolved(at=time.time(), domain=domain, policy=None)
        if self.mta_sts is not None:
            try:
                answer = await self.mta_sts.fetch(domain, time.time())
            except Exception:
                log.error("live driver: MTA-STS fetch for %s failed unexpectedly", domain,
                          exc_info=True)
        self.handle_io(_now(answer))

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
                self.handle_io(ConnectFailed(at=time.time(), conn=eff.conn,
                                             reason=_os_reason(exc)))

    def connection_made(self, conn: int, proto: SmtpClientProtocol) -> None:
        if self._pending.pop(conn, None) is None:
            # The engine closed this connection (connect timeout) meanwhile.
            proto.closing = True
            if proto.transport is not None:
                proto.transport.close()
            return
        self._conns[conn] = proto
        self.handle_io(Connected(at=time.time(), conn=conn, local=_local(proto)))

    async def _starttls(self, eff: StartTls) -> None:
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
            if getattr(exc, "clear_kept", False) and proto.transport is not None:
                # Back in clear on the same socket (StartTls asked for it): the
                # session goes on with EHLO, or closes it if it decides otherwise.
                proto.parser = ReplyParser()
                proto.upgrading = False
                proto.broken = False
                self.handle_io(TlsFailed(at=time.time(), conn=eff.conn, reason=str(exc)))
                return
            # A failed handshake leaves the socket unusable: drop it quietly;
            # the engine decides what follows (next host, or a clear reconnect).
            proto.closing = True
            if proto.transport is not None:
                proto.transport.abort()
            if self._conns.pop(eff.conn, None) is not None:
                if eff.settings.fallback_clear:  # asked to keep it, but it is gone
                    self.handle_io(Closed(at=time.time(), conn=eff.conn, reason=str(exc)))
                else:
                    self.handle_io(TlsFailed(at=time.time(), conn=eff.conn, reason=str(exc)))
            return
        self._pending.pop(eff.conn, None)
        proto.transport = transport
        proto.parser = ReplyParser()  # RFC 3207: discard anything read before TLS
        proto.upgrading = False
        proto.broken = False
        self.handle_io(
            TlsEstablished(
                at=time.time(),
                conn=eff.conn,
                protocol=info.protocol,
                cipher=info.cipher,
                peer_subject=info.peer_subject,
            )
        )

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
            self.handle_io(Closed(at=time.time(), conn=conn, reason=reason))


def _os_reason(exc: OSError) -> str:
    name = type(exc).__name__
    return f"{name}: {exc.strerror or exc}" if exc.strerror else f"{name}: {exc}"


def _now(event: Event) -> Event:
    """`event` stamped with the current time (answers are stamped when they arrive)."""
    return restamp(event, time.time())


def _local(proto: Any) -> str:
    """The socket's local ``address:port`` (``[v6]:port`` for IPv6), the
    records' source_address as KumoMTA writes a SocketAddr."""
    transport = getattr(proto, "transport", None)
    name = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(name, tuple) or len(name) < 2:
        return ""
    host = str(name[0]).split("%")[0]
    return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
