"""A scriptable DNS server on 127.0.0.1 for the live resolver's tests.

It is a plain UDP loop in a thread, with dnslib doing the wire format, rather
than dnslib's `DNSServer`, because the tests need to misbehave on purpose:
answer SERVFAIL or NXDOMAIN for a name, drop a query so the client times out,
set the AD flag (as a validating resolver does), and count the queries that
actually arrived (to prove what the client's cache saved).

The zone is a dict keyed by name (no trailing dot, case-insensitive)::

    {
        "example.com": {"MX": [(10, "mx1.example.com")], "ttl": 60},
        "mx1.example.com": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "_mta-sts.example.com": {"TXT": ["v=STSv1; id=20240101"]},
        "_25._tcp.mx1.example.com": {"TLSA": [(3, 1, 1, b"...32 bytes...")]},
    }

A name that is absent answers NXDOMAIN; a name present without the asked type
answers NOERROR with no records (NODATA).  The zone may be edited while the
server runs (tests change a TXT id, for instance).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any, Literal

import dnslib

Fault = Literal["SERVFAIL", "NXDOMAIN", "DROP"]


@dataclass(frozen=True)
class Query:
    """One query the server received: name (lowercase, no trailing dot), type, DO bit."""

    name: str
    rtype: str
    do: bool


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


class DnsServer:
    """A DNS server answering from `zone`, on 127.0.0.1 and a free UDP port.

    Use as a context manager; `port` is set once it is started.  `faults`
    maps a name (or ``(name, type)``) to a fault; `secure` holds the names
    whose answers carry the AD flag (``"*"`` for all); `queries` records every
    query received, in order.
    """

    def __init__(self, zone: dict[str, dict[str, Any]], *, default_ttl: int = 300) -> None:
        self.zone = zone
        self.default_ttl = default_ttl
        self.faults: dict[str | tuple[str, str], Fault] = {}
        self.secure: set[str] = set()
        self.queries: list[Query] = []
        self.port = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle

    def start(self) -> DnsServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection

    def count(self, name: str | None = None, rtype: str | None = None) -> int:
        """How many queries arrived, optionally only for `name` and/or `rtype`."""
        with self._lock:
            return sum(
                1
                for q in self.queries
                if (name is None or q.name == _norm(name)) and (rtype is None or q.rtype == rtype)
            )

    # -- serving

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._answer(data)
            if reply is not None:
                self._sock.sendto(reply, peer)

    def _answer(self, data: bytes) -> bytes | None:
        try:
            request = dnslib.DNSRecord.parse(data)
        except Exception:
            return None
        qname = _norm(str(request.q.qname))
        rtype = dnslib.QTYPE.get(request.q.qtype)
        do = any(rr.rtype == dnslib.QTYPE.OPT and (rr.ttl & 0x8000) for rr in request.ar)
        with self._lock:
            self.queries.append(Query(qname, str(rtype), do))
        fault = self.faults.get((qname, str(rtype))) or self.faults.get(qname)
        if fault == "DROP":
            return None
        reply = request.reply()
        reply.header.ad = 0  # dnslib copies the query's AD bit; only `secure` sets it
        if fault == "SERVFAIL":
            reply.header.rcode = dnslib.RCODE.SERVFAIL
            return reply.pack()
        entry = self.zone.get(qname)
        if entry is None or fault == "NXDOMAIN":
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            return reply.pack()
        ttl = int(entry.get("ttl", self.default_ttl))
        for value in entry.get(str(rtype), []):
            reply.add_answer(
                dnslib.RR(qname, getattr(dnslib.QTYPE, str(rtype)), ttl=ttl,
                          rdata=_rdata(str(rtype), value))
            )
        if "*" in self.secure or qname in self.secure:
            reply.header.ad = 1
        return reply.pack()


def _rdata(rtype: str, value: Any) -> dnslib.RD:
    if rtype == "A":
        return dnslib.A(value)
    if rtype == "AAAA":
        return dnslib.AAAA(value)
    if rtype == "MX":
        preference, host = value
        return dnslib.MX(host if host != "." else ".", preference)
    if rtype == "TXT":
        chunks = value if isinstance(value, list | tuple) else [value]
        return dnslib.TXT([c.encode() if isinstance(c, str) else c for c in chunks])
    if rtype == "TLSA":
        usage, selector, mtype, cert_data = value
        return dnslib.TLSA(usage, selector, mtype, cert_data)
    raise ValueError(f"test DNS server: unsupported record type {rtype!r} (value {value!r})")
