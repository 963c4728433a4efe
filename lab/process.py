"""A `Lab` in a child process, so its servers' timers do not queue behind the engine.

In one process the lab's servers and the live engine share one event loop:
every reply's latency is an `asyncio.sleep` that wakes only once the engine
has finished whatever it was doing, which adds the engine's own processing
to the remote side's latency.  `LabProcess` runs the lab on its own loop in
a spawned child (its own interpreter, its own core when there is one) and
exposes what `lab.run` needs of a `Lab`: `port`, `dns` (host, port),
`cafile`, `host_addresses`, `origin`, `counters()`.

The parent and child talk over a `multiprocessing` pipe: the child sends its
description once it listens; the parent sends ``("origin", t)`` when the
traffic starts and ``("stop",)`` at the end, and receives the counters.
The scenario travels as its validated dict (`Scenario.raw`), never pickled.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class _Dns:
    host: str
    port: int
    queries: int = 0


def _child(raw: dict[str, Any], source: str, base_dir: str | None, conn: Any,
           compensate: bool = True) -> None:
    from lab.world import Lab
    from sim.scenario import Scenario

    async def main() -> None:
        scenario = Scenario.from_dict(raw, source=source, base_dir=base_dir)
        lab = Lab(scenario, compensate=compensate)
        await lab.start()
        loop = asyncio.get_running_loop()
        conn.send(("ready", lab.port, lab.dns.host, lab.dns.port, str(lab.cafile),
                   lab.host_addresses))
        try:
            while True:
                msg = await loop.run_in_executor(None, conn.recv)
                if msg[0] == "origin":
                    lab.origin = msg[1]
                elif msg[0] == "counters":
                    conn.send(("counters", lab.counters(), lab.dns.queries, lab.timing()))
                elif msg[0] == "stop":
                    break
        finally:
            await lab.stop()
            conn.send(("counters", lab.counters(), lab.dns.queries, lab.timing()))
            lab.close()

    asyncio.run(main())


class LabProcess:
    """A lab in a spawned child process; start with `await start()`."""

    def __init__(self, scenario: Any, *, compensate: bool = True) -> None:
        self.scenario = scenario
        self.port = 0
        self.dns = _Dns("127.0.0.1", 0)
        self.cafile = Path()
        self.host_addresses: dict[str, tuple[str, ...]] = {}
        self._origin = 0.0
        self._counters: dict[str, dict[str, int]] = {}
        self._timing: dict[str, Any] = {}
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        base = str(scenario.base_dir) if scenario.base_dir is not None else None
        self._proc = ctx.Process(
            target=_child, args=(dict(scenario.raw), scenario.source, base, child, compensate),
            name="egress-lab", daemon=True,
        )

    @property
    def origin(self) -> float:
        return self._origin

    @origin.setter
    def origin(self, value: float) -> None:
        self._origin = value
        self._conn.send(("origin", value))

    async def start(self) -> None:
        """Spawn the child and wait until it listens."""
        self._proc.start()
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self._conn.poll, START_TIMEOUT)
        if not ready:
            self._proc.kill()
            raise OSError(f"the lab process did not start within {START_TIMEOUT:g} s")
        try:
            _, self.port, host, port, cafile, addrs = self._conn.recv()
        except EOFError:
            await loop.run_in_executor(None, self._proc.join, 5.0)
            raise OSError(f"the lab process exited (status {self._proc.exitcode}) before it "
                          "listened; its error is on stderr") from None
        self.dns = _Dns(host, port)
        self.cafile = Path(cafile)
        self.host_addresses = addrs

    async def stop(self) -> None:
        """Stop the child's servers and collect their counters."""
        if not self._proc.is_alive():
            return
        self._conn.send(("stop",))
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, self._conn.poll, START_TIMEOUT):
            _, self._counters, queries, self._timing = self._conn.recv()
            self.dns = _Dns(self.dns.host, self.dns.port, queries)
        await loop.run_in_executor(None, self._proc.join, 5.0)
        if self._proc.is_alive():
            self._proc.kill()

    def close(self) -> None:
        """Nothing to remove here: the child cleans up its own directory."""

    def counters(self) -> dict[str, dict[str, int]]:
        """The host counters now (the last ones seen, once stopped)."""
        if self._proc.is_alive():
            self._conn.send(("counters",))
            if self._conn.poll(START_TIMEOUT):
                _, self._counters, queries, self._timing = self._conn.recv()
                self.dns = _Dns(self.dns.host, self.dns.port, queries)
        return self._counters

    def timing(self) -> dict[str, Any]:
        """`Lab.timing` of the child, as of the last `counters()` (or the stop)."""
        return self._timing
