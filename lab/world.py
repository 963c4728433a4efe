"""`Lab`: every host server and the DNS server of one scenario, started together.

Addresses are assigned deterministically: the scenario's hosts in name order,
each of their addresses in the order given, take 127.0.0.10, 127.0.0.11, ...
(carrying into 127.0.1.x past .255), so the same scenario always gives the
same lab addresses.  Every host listens on the same port (free ports are
found once for all of them; an engine needs one ``smtp_port``).

TLS: one trustme CA per lab; every host that offers STARTTLS presents a leaf
for its own name, made on the fly.  `cafile` is the CA's PEM, for a client
that verifies.

The lab clock (`clock()`, seconds since `origin`) is what outage windows and
DNS outages are measured on; `lab.run` sets the origin to the moment the
traffic starts so the windows line up with the simulator's.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.dns import DnsServer, LabZone
from lab.servers import HostServer
from lab.timing import Pacer, turnaround_summary

if TYPE_CHECKING:
    from sim.scenario import Scenario

FIRST_ADDRESS = ipaddress.IPv4Address("127.0.0.10")
LAST_ADDRESS = ipaddress.IPv4Address("127.255.255.254")
PORT_TRIES = 20


def lab_addresses(scenario: Scenario) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(scenario address -> lab address, host -> its lab addresses), deterministic."""
    address_map: dict[str, str] = {}
    per_host: dict[str, tuple[str, ...]] = {}
    n = 0
    for host in sorted(scenario.hosts):
        mine = []
        for a in scenario.hosts[host].addresses:
            if a not in address_map:
                ip = FIRST_ADDRESS + n
                if ip > LAST_ADDRESS:
                    raise ValueError(
                        f"the scenario has more host addresses than 127.0.0.0/8 holds ({n})"
                    )
                address_map[a] = str(ip)
                n += 1
            mine.append(address_map[a])
        per_host[host] = tuple(mine)
    return address_map, per_host


def _pushback(server: HostServer) -> dict[str, int]:
    """A pushing-back host's tallies (`sim.host_pushback.Pushback.tallies`), else none."""
    pushback = server.behaviour.pushback
    return pushback.tallies() if pushback is not None else {}


class Lab:
    """The scenario's world on loopback: `await lab.start()`, `await lab.stop()`."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        port: int = 0,
        dns_port: int = 0,
        seed: int | None = None,
        origin: float | None = None,
        workdir: str | Path | None = None,
        compensate: bool = True,
    ) -> None:
        self.scenario = scenario
        # One pacer for every host: timer lateness is the loop's (lab.timing).
        # compensate=False sleeps plainly (for measuring what pacing changes).
        self.pacer = Pacer(compensate=compensate)
        self.port = port
        self.origin = time.time() if origin is None else origin
        self.seed = scenario.seed if seed is None else seed
        self.address_map, self.host_addresses = lab_addresses(scenario)
        self.zone = LabZone(scenario, self.address_map)
        self.dns = DnsServer(self.zone, self.clock, port=dns_port)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="egress-lab-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.cafile = self.workdir / "lab-ca.pem"
        self.hosts: dict[str, HostServer] = {}

    def clock(self) -> float:
        """Seconds since the lab's origin (outage schedules are on this clock)."""
        return time.time() - self.origin

    def _tls_contexts(self) -> dict[str, ssl.SSLContext]:
        import trustme

        ca = trustme.CA(organization_name="egress lab")
        ca.cert_pem.write_to_path(str(self.cafile))
        out = {}
        for name, spec in self.scenario.hosts.items():
            if spec.starttls:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ca.issue_cert(name).configure_cert(ctx)
                out[name] = ctx
        return out

    async def start(self) -> None:
        """Make the certificates, start the DNS server and every host server."""
        contexts = self._tls_contexts()
        for name, spec in sorted(self.scenario.hosts.items()):
            self.hosts[name] = HostServer(
                spec,
                self.host_addresses[name],
                rng=random.Random(f"lab:{self.seed}:{name}"),
                clock=self.clock,
                tls_context=contexts.get(name),
                pacer=self.pacer,
            )
        await self.dns.start()
        await self._start_hosts()

    async def _start_hosts(self) -> None:
        fixed = self.port != 0
        for _ in range(1 if fixed else PORT_TRIES):
            port = self.port if fixed else _free_port(next(iter(self.address_map.values()),
                                                           "127.0.0.1"))
            try:
                for server in self.hosts.values():
                    await server.start(port)
            except OSError as exc:
                for server in self.hosts.values():
                    await server.stop()
                if fixed or exc.errno != errno.EADDRINUSE:
                    raise OSError(exc.errno, f"the lab cannot listen on port {port}: "
                                  f"{exc.strerror}") from None
                continue
            self.port = port
            return
        raise OSError(errno.EADDRINUSE, f"no port free on every lab address after "
                      f"{PORT_TRIES} tries")

    async def stop(self) -> None:
        """Stop every server; the counters stay readable."""
        for server in self.hosts.values():
            await server.stop()
        await self.dns.stop()

    def close(self) -> None:
        """Remove the lab's temporary directory (the CA file)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self.close()

    # -- reading -------------------------------------------------------------------

    def counters(self) -> dict[str, dict[str, int]]:
        """Per host: connections, accepted, deferred, rejected, refused, busy,
        blackholed, tls_handshakes, tls_failures, open, peak_connections."""
        return {name: {**s.counters.to_dict(), **_pushback(s)}
                for name, s in sorted(self.hosts.items())}

    def timing(self) -> dict[str, Any]:
        """How exactly the servers kept their latencies, and the client's turnaround.

        ``server``: sleeps, mean timer lateness (``wake_lag_ms``), mean and
        mean absolute error of the realised latencies against the scenario's
        (``error_ms``, ``abs_error_ms``); ``client_turnaround``: count, mean and
        median milliseconds from a reply the client answers at once to its
        next bytes (what ``[client] round_trip_overhead`` stands for).
        """
        st = self.pacer.stats()
        turn = turnaround_summary([x for s in self.hosts.values() for x in s.turnaround])
        return {
            "server": {"sleeps": st.sleeps, "compensate": self.pacer.compensate,
                       "wake_lag_ms": st.wake_lag * 1e3, "error_ms": st.error * 1e3,
                       "abs_error_ms": st.abs_error * 1e3},
            "client_turnaround": {"count": turn["count"], "mean_ms": turn["mean"] * 1e3,
                                  "median_ms": turn["median"] * 1e3},
        }

    def describe(self) -> dict[str, Any]:
        """What a person (or a resolver) needs to use the lab."""
        return {
            "dns": f"{self.dns.host}:{self.dns.port}",
            "smtp_port": self.port,
            "cafile": str(self.cafile),
            "hosts": {h: list(a) for h, a in sorted(self.host_addresses.items())},
        }


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])
