"""What the lab tests share: a one-host scenario, a started `Lab`, a raw SMTP client.

tests/test_lab.py (wire, DNS, the happy path), tests/test_lab_faults.py
(failures, connections, outages, TLS) and tests/test_lab_run.py (the live
engine delivering into a lab, the commands) start a lab for a scenario and
run a body against it; the first two talk to its servers byte by byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from lab.world import Lab
from sim.scenario import Scenario

__all__ = ["Client", "greet", "scenario", "with_lab"]


def with_lab(sc: Scenario, body: Callable[[Lab], Awaitable[Any]]) -> Any:
    """Start a `Lab` for `sc`, await ``body(lab)``, stop the lab; body's result."""
    async def main() -> Any:
        async with Lab(sc) as lab:
            return await body(lab)

    return asyncio.run(main())


def scenario(hosts: dict[str, dict[str, Any]] | None = None, **extra: Any) -> Scenario:
    """A one-domain scenario whose single host `mx.lab.test` has `hosts` fields."""
    host = {"connect_latency": "0ms", "command_latency": "0ms", "data_latency": "0ms",
            "tls_latency": "0ms", **(hosts or {})}
    data: dict[str, Any] = {
        "name": "t",
        "traffic": [{"domain": "lab.test", "messages": 1}],
        "domains": {"lab.test": {"mx": [{"host": "mx.lab.test", "preference": 10}]}},
        "hosts": {"mx.lab.test": host},
    }
    data.update(extra)
    return Scenario.from_dict(data)


class Client:
    """A raw SMTP client: send lines, read whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, lab: Lab, host: str = "mx.lab.test") -> Client:
        r, w = await asyncio.open_connection(lab.host_addresses[host][0], lab.port)
        return cls(r, w)

    async def reply(self) -> str:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 5)
            if not line:
                raise ConnectionError("closed")
            lines.append(line.decode().rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    async def send(self, *lines: str) -> list[str]:
        self.writer.write(b"".join(x.encode() + b"\r\n" for x in lines))
        return [await self.reply() for _ in lines]

    def close(self) -> None:
        self.writer.close()


async def greet(lab: Lab) -> Client:
    c = await Client.open(lab)
    assert (await c.reply()).startswith("220 mx.lab.test ")
    await c.send("EHLO client.test")
    return c
