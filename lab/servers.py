"""One real SMTP server per scenario host, behaving as the host table says.

A `HostServer` listens on the host's lab addresses (127.0.0.x, one per
address the scenario gives the host) and answers the way `sim.world.World`
answers for the same `HostSpec`, phase by phase, so the two realisations of a
scenario can be compared:

- connect: ``connect_latency`` before the banner; 421 4.7.0 beyond
  ``max_connections``; ``refuse_connections`` closes at once (with a reset);
- one write of commands (a pipelined RSET/MAIL/RCPT.../DATA batch, or EHLO,
  STARTTLS, QUIT alone) is answered after one ``command_latency`` draw when
  the host pipelines, one draw per command when it does not;
- the body: ``data_latency`` (plus size / ``data_bandwidth``) after the dot;
- MAIL/RCPT/DATA and dot fail with the same probabilities and replies as the
  simulated world (the reply constants are `sim.world`'s own);
- STARTTLS with a trustme certificate for the host name, ``tls_latency``
  before the 220, and ``tls_failure`` aborting the handshake;
- outages on the lab clock: ``refuse`` closes the listening sockets for the
  window (a real ECONNREFUSED), ``blackhole`` accepts and never says a word,
  ``tempfail`` answers MAIL with 451 4.3.0.

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
from lab.smtp_wire import HostCounters, Txn, take_lines, wire
from lab.timing import Pacer, Turnaround
from sim import world as W
from sim.world import ehlo_reply

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
        self.max_conn = spec.max_connections if spec.max_connections is not None else 1 << 62
        self.banner = Reply(code=220, text=f"{spec.name} ESMTP egress lab server")
        self.ehlo_clear = ehlo_reply(spec, tls=False)
        self.ehlo_tls = ehlo_reply(spec, tls=True)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, port: int) -> None:
        """Listen on every address at `port`, and follow the outage schedule."""
        self.port = port
        if self.outage(self.clock()) != "refuse":
            await self._listen()
        if any(o.mode == "refuse" for o in self.spec.outages):
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
            refusing = self.outage(now) == "refuse"
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
        for o in self.spec.outages:
            if o.start <= now < o.end:
                return o.mode
        return None

    # -- one connection ----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = self.counters
        c.connections += 1
        start = asyncio.get_running_loop().time()
        self._writers.add(writer)
        counted = False
        try:
            mode = self.outage(self.clock())
            if mode == "blackhole":
                c.blackholed += 1
                while await reader.read(READ_SIZE):
                    pass
                return
            if self.spec.refuse_connections and self.rng.random() < self.spec.refuse_connections:
                c.refused += 1
                _reset(writer)
                return
            c.open += 1
            counted = True
            c.peak_connections = max(c.peak_connections, c.open)
            busy = c.open > self.max_conn
            await self.pacer.sleep(self.spec.connect_latency.sample(self.rng), start)
            if busy:
                c.busy += 1
                writer.write(wire(W.BUSY))
                await writer.drain()
                return
            writer.write(wire(self.banner))
            await self._dialog(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            # The lab is shutting down.  Ending quietly (not re-raising) matters
            # on 3.11, whose stream callback calls task.exception() on a
            # cancelled handler and logs a traceback for every connection.
            pass
        finally:
            if counted:
                c.open -= 1
            self._writers.discard(writer)
            writer.close()

    async def _dialog(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        txn = Txn()
        tls = False
        spec = self.spec
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
            delay = spec.command_latency.sample(self.rng) if spec.pipelining else 0.0
            out: list[bytes] = []
            then = "continue"
            for i, line in enumerate(lines):
                if not spec.pipelining:
                    delay += spec.command_latency.sample(self.rng)
                verb, reply, then = self._command(line, txn, tls)
                out.append(wire(reply))
                if then != "continue":
                    # Whatever followed belongs to the body (after 354) or is
                    # discarded (after STARTTLS, RFC 3207; after QUIT).
                    rest = lines[i + 1 :]
                    if then == "body":
                        buf[:0] = b"".join(rest)
                    break
            if then == "starttls":
                tls = await self._starttls(writer, delay, out, start)
                if not tls:
                    return
                buf.clear()
                txn = Txn()
                continue
            await self.pacer.sleep(delay, start)
            writer.write(b"".join(out))
            if then == "quit":
                await writer.drain()
                return
            if then == "body" or verb in ("EHLO", "HELO"):
                turn.replied(loop.time())  # the body, or the first batch, follows at once
            if then == "body":
                size = await self._read_body(reader, buf, turn)
                if size < 0:
                    return
                writer.write(await self._body_reply(size, loop.time()))
                txn = Txn()

    def _command(self, line: bytes, txn: Txn, tls: bool) -> tuple[str, Reply, str]:
        """(verb, reply, what follows) for one command line, as `sim.world` answers."""
        text = line.rstrip(b"\r\n").decode("latin-1")
        head = text.upper()
        spec, rng, c = self.spec, self.rng, self.counters
        if head.startswith("MAIL FROM:"):
            txn.mail_ok, txn.any_rcpt = False, False
            if self.outage(self.clock()) == "tempfail":
                c.deferred += 1
                return "MAIL", W.MAIL_OUTAGE, "continue"
            if spec.tempfail_mail and rng.random() < spec.tempfail_mail:
                c.deferred += 1
                return "MAIL", W.MAIL_TEMPFAIL, "continue"
            txn.mail_ok = True
            return "MAIL", W.MAIL_OK, "continue"
        if head.startswith("RCPT TO:"):
            if not txn.mail_ok:
                return "RCPT", W.NEED_MAIL, "continue"
            fail = spec.tempfail_rcpt + spec.permfail_rcpt
            if fail and (r := rng.random()) < fail:
                if r < spec.permfail_rcpt:
                    c.rejected += 1
                    return "RCPT", W.RCPT_PERMFAIL, "continue"
                c.deferred += 1
                return "RCPT", W.RCPT_TEMPFAIL, "continue"
            txn.any_rcpt = True
            return "RCPT", W.RCPT_OK, "continue"
        verb = head.split(" ", 1)[0]
        if verb == "DATA":
            if not txn.mail_ok:
                return verb, W.NEED_MAIL, "continue"
            if not txn.any_rcpt:
                return verb, W.NO_RECIPIENTS, "continue"
            return verb, W.DATA_OK, "body"
        if verb == "RSET":
            txn.mail_ok, txn.any_rcpt = False, False
            return verb, W.RSET_OK, "continue"
        if verb == "NOOP":
            return verb, W.RSET_OK, "continue"
        if verb == "QUIT":
            return verb, W.QUIT_OK, "quit"
        if verb in ("EHLO", "HELO"):
            txn.mail_ok, txn.any_rcpt = False, False
            return verb, (self.ehlo_tls if tls else self.ehlo_clear), "continue"
        if verb == "STARTTLS":
            if tls or not spec.starttls or self.tls_context is None:
                return verb, W.NOT_OFFERED, "continue"
            return verb, W.STARTTLS_OK, "starttls"
        if verb == "AUTH":
            return verb, (W.AUTH_OK if spec.auth else W.NOT_OFFERED), "continue"
        return verb, W.UNKNOWN, "continue"

    async def _starttls(
        self, writer: asyncio.StreamWriter, delay: float, out: list[bytes], start: float
    ) -> bool:
        """Say 220 and run the server side of the handshake; False if it failed."""
        spec, c = self.spec, self.counters
        latency = spec.tls_latency.sample(self.rng)
        fail = bool(spec.tls_failure) and self.rng.random() < spec.tls_failure
        c.tls_handshakes += 1
        if fail:
            c.tls_failures += 1
            await self.pacer.sleep(delay, start)
            writer.write(b"".join(out))
            await self.pacer.sleep(latency)
            _reset(writer)
            return False
        # The latency is spent before the 220: the client's hello must reach the
        # TLS layer, not a stream buffer, so the handshake starts at once after it.
        await self.pacer.sleep(delay + latency, start)
        writer.write(b"".join(out))
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

    async def _body_reply(self, size: int, start: float) -> bytes:
        spec, rng, c = self.spec, self.rng, self.counters
        delay = spec.data_latency.sample(rng)
        if spec.data_bandwidth:
            delay += size / spec.data_bandwidth
        fail = spec.tempfail_data + spec.permfail_data
        reply = W.BODY_OK
        if fail and (r := rng.random()) < fail:
            reply = W.BODY_PERMFAIL if r < spec.permfail_data else W.BODY_TEMPFAIL
        await self.pacer.sleep(delay, start)
        if reply is W.BODY_OK:
            c.accepted += 1
        elif reply is W.BODY_TEMPFAIL:
            c.deferred += 1
        else:
            c.rejected += 1
        return wire(reply)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): a connection refused at once."""
    sock: Any = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

