"""One real SMTP server per scenario host, behaving as the host table says.

A `HostServer` listens on the host's lab addresses (127.0.0.x, one per
address the scenario gives the host).  What it answers, and after how long,
is `sim.host_behaviour.HostBehaviour`'s, the code `sim.world.World` answers
with: this module only realises the answers on sockets, phase by phase:

- connect: the banner (or 421 4.7.0 beyond ``max_connections``) after the
  connect latency; a refused connection is reset after it;
- one write of commands is answered as one batch (one ``command_latency``
  draw when the host pipelines, one per command when it does not), up to a
  354, a 220 to STARTTLS or QUIT;
- the body's reply after the dot; STARTTLS with a trustme certificate for
  the host name, ``tls_latency`` before the 220, ``tls_failure`` aborting
  the handshake;
- outages on the lab clock: a ``refuse`` outage of probability 1 closes the
  listening sockets for the window (a real ECONNREFUSED); a partial one
  resets the connections it hits; ``blackhole`` accepts and never says a
  word; ``tempfail`` answers MAIL as the outage says.

The host's counters (`HostCounters`) are counted by the same code too, and a
host's pushback (`sim.host_pushback`) sees each connection's peer address as
its source.

Every latency is slept on `lab.timing.Pacer`'s deadlines (from when the
request arrived, woken early by the timers' measured lateness), so the lab
realises the scenario's latencies on average rather than ~1 ms late each; and
each connection notes the client's turnaround (`HostServer.turnaround`).

It is a raw asyncio server (not aiosmtpd) because each phase must behave
exactly as the table says, to the millisecond, and a real SMTP
implementation would add its own behaviour.  Where a real socket cannot do
what the simulator models, the difference is named here once:
``refuse_connections`` is a reset right after the TCP handshake (the kernel
has already accepted it), and a ``blackhole`` is a silent banner, so the
client's banner timeout fires rather than its connect timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.reply import Reply
from lab.smtp_wire import command_verb, take_lines, wire
from lab.timing import Pacer, Turnaround
from sim.host_behaviour import (
    BUSY,
    DATA_OK,
    QUIT_OK,
    STARTTLS_OK,
    UNBOUND_SOURCE,
    HostBehaviour,
    HostCounters,
    Txn,
)

if TYPE_CHECKING:
    from sim.scenario_world import HostSpec

READ_SIZE = 65536
MAX_LINE = 4096
OUTAGE_POLL = 0.005  # seconds between looks at the outage schedule


class HostServer:
    """The SMTP server of one scenario host, on one or more loopback addresses."""

    def __init__(
        self,
        spec: HostSpec,
        addresses: tuple[str, ...],
        *,
        rng: random.Random,
        clock: Callable[[], float],
        tls_context: ssl.SSLContext | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        for a in addresses:
            if not a.startswith("127."):
                raise ValueError(f"lab servers bind 127.0.0.0/8 only, not {a!r} (host {spec.name})")
        self.spec = spec
        self.name = spec.name
        self.addresses = addresses
        self.rng = rng
        self.clock = clock
        self.tls_context = tls_context
        self.counters = HostCounters()
        # Latencies run on the pacer's deadlines (lab.timing): one pacer per
        # loop, shared by every host, since how late timers fire is the loop's.
        self.pacer = pacer if pacer is not None else Pacer()
        self.turnaround: list[float] = []  # seconds, client's time to answer (lab.timing)
        self.port = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._outage_task: asyncio.Task[None] | None = None
        self._listening = False
        # Without a certificate the server cannot offer STARTTLS.
        self.behaviour = HostBehaviour(
            spec, greeting="ESMTP egress lab server",
            starttls=spec.starttls and tls_context is not None,
        )

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, port: int) -> None:
        """Listen on every address at `port`, and follow the outage schedule."""
        self.port = port
        if not self.behaviour.refusing(self.clock()):
            await self._listen()
        if any(o.mode == "refuse" and o.probability >= 1.0 for o in self.spec.outages):
            self._outage_task = asyncio.get_running_loop().create_task(self._follow_outages())

    async def _listen(self) -> None:
        for a in self.addresses:
            srv = await asyncio.start_server(self._serve, a, self.port, reuse_address=True)
            self._servers.append(srv)
        self._listening = True

    def _unlisten(self) -> None:
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        self._listening = False

    async def _follow_outages(self) -> None:
        """Close the listeners during each ``refuse`` window, reopen after it.

        The clock is polled (every `OUTAGE_POLL` seconds) rather than slept
        on, so a lab whose origin moves (`lab.run` sets it when the traffic
        starts) still opens and closes on time.
        """
        last_end = max(o.end for o in self.spec.outages if o.mode == "refuse")
        while True:
            now = self.clock()
            refusing = self.behaviour.refusing(now)
            if refusing and self._listening:
                self._unlisten()
            elif not refusing and not self._listening:
                try:
                    await self._listen()
                except OSError:
                    self._unlisten()  # the port was taken meanwhile: try again
            if now >= last_end and self._listening:
                return
            await asyncio.sleep(OUTAGE_POLL)

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._outage_task is not None:
            self._outage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outage_task
        self._unlisten()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def outage(self, now: float) -> str | None:
        """The outage mode in force at lab time `now`, or None."""
        o = self.behaviour.outage(now)
        return o.mode if o is not None else None

    # -- one connection ----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = self.counters
        start = asyncio.get_running_loop().time()
        self._writers.add(writer)
        counted = False
        peer = writer.get_extra_info("peername")
        source = peer[0] if peer else UNBOUND_SOURCE
        try:
            result = self.behaviour.connect(c.open, self.clock(), self.rng, source=source)
            c.connected(result)
            counted = result.kind == "ok"
            if result.kind == "blackhole":
                while await reader.read(READ_SIZE):
                    pass
                return
            await self.pacer.sleep(result.delay, start)
            if result.kind == "refused":
                _reset(writer)
                return
            banner = result.banner or BUSY
            writer.write(wire(banner))
            if banner.code != 220:  # 421: beyond max_connections, or the source's count
                await writer.drain()
                return
            await self._dialog(reader, writer, source)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            # The lab is shutting down.  Ending quietly (not re-raising) matters
            # on 3.11, whose stream callback calls task.exception() on a
            # cancelled handler and logs a traceback for every connection.
            pass
        finally:
            if counted:
                c.released()
                self.behaviour.released(source)
            self._writers.discard(writer)
            writer.close()

    async def _dialog(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      source: str) -> None:
        buf = bytearray()
        txn = Txn()
        tls = False
        behaviour = self.behaviour
        loop = asyncio.get_running_loop()
        turn = Turnaround(self.turnaround)
        turn.replied(loop.time())  # the banner: the client says EHLO at once
        arrived: float | None = None
        while True:
            lines = take_lines(buf)
            if not lines:
                data = await reader.read(READ_SIZE)
                if not data:
                    return
                arrived = loop.time()
                turn.received(arrived)
                buf += data
                if len(buf) > MAX_LINE and b"\n" not in buf:
                    writer.write(wire(Reply.make(500, "5.5.2", "Line too long")))
                    return
                continue
            # The batch's latency runs from when it arrived, not from now.
            start = arrived if arrived is not None else loop.time()
            arrived = None
            verbs = [(command_verb(line), "") for line in lines]
            answers = behaviour.batch(verbs, txn, self.clock(), self.rng, tls=tls, stop=True,
                                      counters=self.counters, source=source)
            n = len(answers)
            delay, last = answers[-1]
            out = b"".join(wire(reply) for _, reply in answers)
            # Whatever followed belongs to the body (after 354) or is discarded
            # (after STARTTLS, RFC 3207; after QUIT).
            if last is DATA_OK:
                buf[:0] = b"".join(lines[n:])
            if last is STARTTLS_OK:
                tls = await self._starttls(writer, delay, out, start)
                if not tls:
                    return
                buf.clear()
                txn = Txn()
                continue
            await self.pacer.sleep(delay, start)
            writer.write(out)
            if last is QUIT_OK:
                await writer.drain()
                return
            if last is DATA_OK or verbs[n - 1][0] in ("EHLO", "HELO"):
                turn.replied(loop.time())  # the body, or the first batch, follows at once
            if last is DATA_OK:
                size = await self._read_body(reader, buf, turn)
                if size < 0:
                    return
                delay, reply = behaviour.body(size, self.rng, counters=self.counters,
                                              source=source, now=self.clock())
                await self.pacer.sleep(delay, loop.time())
                writer.write(wire(reply))
                txn = Txn()

    async def _starttls(
        self, writer: asyncio.StreamWriter, delay: float, out: bytes, start: float
    ) -> bool:
        """Say 220 and run the server side of the handshake; False if it failed."""
        c = self.counters
        latency, ok, _ = self.behaviour.starttls_handshake(self.rng)
        c.tls_handshakes += 1
        if not ok:
            c.tls_failures += 1
            await self.pacer.sleep(delay, start)
            writer.write(out)
            await self.pacer.sleep(latency)
            _reset(writer)
            return False
        # The latency is spent before the 220: the client's hello must reach the
        # TLS layer, not a stream buffer, so the handshake starts at once after it.
        await self.pacer.sleep(delay + latency, start)
        writer.write(out)
        assert self.tls_context is not None
        await writer.start_tls(self.tls_context)
        return True

    async def _read_body(
        self, reader: asyncio.StreamReader, buf: bytearray, turn: Turnaround
    ) -> int:
        """Read up to the final dot; the body's size in bytes, or -1 on EOF."""
        while True:
            if buf.startswith(b".\r\n"):
                del buf[:3]
                return 0
            end = buf.find(b"\r\n.\r\n")
            if end >= 0:
                del buf[: end + 5]
                return end + 2
            data = await reader.read(READ_SIZE)
            if not data:
                return -1
            turn.received(asyncio.get_running_loop().time())
            buf += data


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): a connection refused at once."""
    sock: Any = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

