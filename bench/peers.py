"""The peers and ceilings the delivery benchmarks run against, started and stopped.

Every benchmark here compares egress with something else measured in the same
run, so this module is the one place that knows how to run those somethings:

* `SmtpSink`: Postfix's C ``smtp-sink`` with ``-c``, whose running counter
  (``mesg=N``) is read on a thread so "the sink's last message" has a time;
* `run_smtp_source`: Postfix's C ``smtp-source``, the sending ceiling;
* `aiosmtplib_send`: a plain aiosmtplib sender, the Python delivery peer;
* `DnsServer`: a dnslib server on 127.0.0.1 answering MX -> A 127.0.0.x.

Everything listens and connects on loopback only, every wait is bounded, and
each peer is a context manager that stops what it started (by its own pid).
A missing tool raises `PeerUnavailable` with the reason and the fix, so the
harness can print "not available" instead of crashing.  The relays of the
end-to-end benchmark (Postfix, python-slimta) are in `bench.relays`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLIMTA_PYTHON = ROOT / "bench" / ".slimta-venv" / "bin" / "python"
SETUP_HINT = "run scripts/bench-setup.sh (as root) to install it"
SENDER = "bench@source.test"


class PeerUnavailable(RuntimeError):
    """A peer cannot run on this machine; the message says what is missing and how to fix it."""


def tool(name: str) -> str:
    """The path of a Postfix tool (``smtp-sink``, ``smtp-source``, ``postfix``), or raise."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise PeerUnavailable(f"{name} is not installed (Debian package postfix); {SETUP_HINT}")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (loopback only)."""
    _check_loopback(host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, timeout: float, proc: subprocess.Popen[Any] | None = None
                   ) -> None:
    """Return once `host:port` accepts a TCP connection; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerUnavailable(
                f"the process meant to serve {host}:{port} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:g} s")


def _check_loopback(host: str) -> None:
    if not (host.startswith("127.") or host == "::1"):
        raise ValueError(f"benchmarks use loopback only; {host!r} is not in 127.0.0.0/8 or ::1")


def stop_process(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def message(size: int = 2000, index: int = 0) -> bytes:
    """A plain RFC 5322 message of about `size` bytes, 76-character CRLF lines."""
    head = (f"From: <{SENDER}>\r\nTo: <user@sink.test>\r\nSubject: bench {index}\r\n"
            f"Message-ID: <{index}@source.test>\r\n\r\n").encode()
    line = b"x" * 74 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body + b"y" * max(0, size - len(head) - len(body) - 2) + b"\r\n"


# -- smtp-sink ------------------------------------------------------------------


class SmtpSink:
    """``smtp-sink -c`` on `host:port`; `count` is its running message counter.

    `wait_for(n, timeout)` returns the `time.monotonic()` at which the counter
    reached `n` (the reader thread stamps each update as it arrives), or None.
    CLOCK_MONOTONIC is system-wide, so a stamp compares with one taken in
    another process.
    """

    _COUNTER = re.compile(rb"mesg=(\d+)")

    def __init__(self, host: str = "127.0.0.2", port: int | None = None,
                 backlog: int = 1024) -> None:
        _check_loopback(host)
        self.host = host
        self.port = port or free_port(host)
        self.backlog = backlog
        self.count = 0
        self.reached_at: dict[int, float] = {}
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SmtpSink:
        """Start the sink and return once it accepts connections."""
        cmd = [tool("smtp-sink"), "-c", "-m", "1024"]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        cmd += [f"{self.host}:{self.port}", str(self.backlog)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._thread = threading.Thread(target=self._read, name="smtp-sink-counter", daemon=True)
        self._thread.start()
        wait_listening(self.host, self.port, 5.0, self._proc)
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        tail = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            now = time.monotonic()
            found = self._COUNTER.findall(tail + chunk)
            tail = chunk[-32:]
            if found:
                with self._cond:
                    n = int(found[-1])
                    if n > self.count:
                        self.count = n
                        self.reached_at.setdefault(n, now)
                        self._cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> float | None:
        """The monotonic time the counter reached `n`, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return min(t for k, t in self.reached_at.items() if k >= n)

    def stop(self) -> None:
        """Stop the sink (SIGTERM, then SIGKILL)."""
        if self._proc is not None:
            stop_process(self._proc)
            if self._thread is not None:
                self._thread.join(2.0)
            self._proc = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- smtp-source ----------------------------------------------------------------


def smtp_source_command(host: str, port: int, *, sessions: int, messages: int,
                        size: int = 2000, recipients: int = 1, reuse: bool = True,
                        to: str = "user@sink.test") -> list[str]:
    """The ``smtp-source`` command line for one run (``-d`` reuses connections)."""
    _check_loopback(host)
    cmd = [tool("smtp-source")]
    if reuse:
        cmd.append("-d")
    cmd += ["-s", str(sessions), "-m", str(messages), "-l", str(size), "-f", SENDER, "-t", to]
    if recipients > 1:
        cmd += ["-r", str(recipients)]
    return [*cmd, f"{host}:{port}"]


def run_smtp_source(host: str, port: int, *, timeout: float, **kw: Any) -> float:
    """Run ``smtp-source`` to completion; returns the monotonic time it was started."""
    cmd = smtp_source_command(host, port, **kw)
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"smtp-source exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-500:]}")
    return started


# -- DNS ------------------------------------------------------------------------


class DnsServer:
    """A dnslib UDP server on 127.0.0.1: MX of each domain -> one host -> its A address.

    ``DnsServer({"sink.test": "127.0.0.2"})`` answers ``sink.test MX 10
    mx.sink.test`` and ``mx.sink.test A 127.0.0.2``; anything else NXDOMAIN.
    """

    def __init__(self, domains: dict[str, str]) -> None:
        for addr in domains.values():
            _check_loopback(addr)
        self.domains = {d.lower(): a for d, a in domains.items()}
        self.port = 0
        self._server: Any = None

    def start(self) -> DnsServer:
        """Bind a free UDP port on 127.0.0.1 and serve on a daemon thread."""
        import dnslib
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        domains = self.domains

        class _Resolver(BaseResolver):  # type: ignore[misc]
            def resolve(self, request: Any, handler: Any) -> Any:
                reply = request.reply()
                reply.header.ad = 0  # dnslib echoes the query's AD; nothing here is validated
                name = str(request.q.qname).rstrip(".").lower()
                qtype = dnslib.QTYPE.get(request.q.qtype)
                if name in domains and qtype == "MX":
                    reply.add_answer(dnslib.RR(name, dnslib.QTYPE.MX, ttl=86400,
                                               rdata=dnslib.MX(f"mx.{name}", 10)))
                elif name.startswith("mx.") and name[3:] in domains:
                    if qtype == "A":
                        reply.add_answer(dnslib.RR(name, dnslib.QTYPE.A, ttl=86400,
                                                   rdata=dnslib.A(domains[name[3:]])))
                elif name not in domains:
                    reply.header.rcode = dnslib.RCODE.NXDOMAIN
                return reply

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._server = DNSServer(_Resolver(), port=self.port, address="127.0.0.1",
                                 logger=DNSLogger("-request,-reply,-truncated,-error,-recv,"
                                                  "-send,-data"))
        self._server.start_thread()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- aiosmtplib -------------------------------------------------------------------


async def aiosmtplib_send(host: str, port: int, *, messages: int, connections: int,
                          size: int = 2000, recipients: int = 1, per_connection: int = 0,
                          domain: str = "sink.test") -> int:
    """Send `messages` over `connections` aiosmtplib clients; returns how many got a 250.

    Each client takes the next message from a shared counter; with
    `per_connection` > 0 it reconnects after that many (1: one per message).
    """
    import aiosmtplib

    _check_loopback(host)
    body = message(size)
    rcpts = [f"user{r}@{domain}" for r in range(recipients)]
    left = [messages]
    sent = [0]

    async def worker() -> None:
        while left[0] > 0:
            client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False,
                                     local_hostname="source.test", timeout=30)
            await client.connect()
            done = 0
            while left[0] > 0 and (per_connection <= 0 or done < per_connection):
                left[0] -= 1
                errors, _ = await client.sendmail(SENDER, rcpts, body)
                sent[0] += not errors
                done += 1
            await client.quit()

    await asyncio.gather(*(worker() for _ in range(min(connections, messages))))
    return sent[0]


def python_version() -> str:
    """``3.11.7`` for the table header."""
    return ".".join(map(str, sys.version_info[:3]))
