"""An Engine + LiveDriver + LiveResolver wired together for the live tests.

`Live` runs on the test's own event loop (``async with Live(...) as live``):
it owns the engine, the driver, an in-memory body store and the records the
engine logs, and offers `submit` / `wait_done` so a test reads like a story.
`zone_for` builds the test DNS zone (MX -> host name -> A 127.0.0.x) and
`path_policy` a policy whose every egress path gets the given keys, with
loopback allowed (the default prohibited_hosts refuse 127.0.0.0/8).  For
tests that run ``egress deliver`` as a subprocess: `LOOPBACK_POLICY_FILE`
(the same, as a policy file's text) and `free_port`.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Callable
from typing import Any

from engine.config import make_egress_path
from engine.engine import Engine
from engine.events import MessageSubmitted
from engine.live.dns import LiveResolver
from engine.live.driver import LiveDriver
from engine.policy import Policy
from engine.queue_config import make_egress_pool, make_egress_source, make_queue_config

_ids = itertools.count(1)

LOOPBACK_POLICY_FILE = """
from engine import Policy, make_egress_path

policy = Policy()


@policy.on("get_egress_path_config")
def path(domain, source_name, site_name):
    return make_egress_path(smtp_port={port}, prohibited_hosts=[], enable_tls="Disabled",
                            enable_mta_sts=False)
"""
"""A policy file (``.format(port=N)``): every path to port N, loopback allowed, no TLS."""

LIMITED_POLICY_FILE = LOOPBACK_POLICY_FILE.replace(
    'enable_mta_sts=False)', 'enable_mta_sts=False, connection_limit={limit})')
"""The same with ``connection_limit`` (``.format(port=N, limit=L)``): reload tests rewrite it."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def zone_for(domain: str = "example.com", host: str = "mx1.example.com",
             address: str = "127.0.0.1") -> dict[str, dict[str, Any]]:
    """MX `domain` -> `host` -> A `address`."""
    return {domain: {"MX": [(10, host)]}, host: {"A": [address]}}


def path_policy(port: int, *, source_address: str | None = None,
                queue: dict[str, Any] | None = None, **keys: Any) -> Policy:
    """Every path: `keys` plus smtp_port=`port`, MTA-STS off, loopback allowed.

    With `source_address` every message goes out of egress source "src" bound
    to that address.
    """
    keys.setdefault("enable_mta_sts", False)
    keys.setdefault("prohibited_hosts", [])
    keys.setdefault("enable_tls", "Disabled")
    cfg = make_egress_path(smtp_port=port, **keys)
    qkeys = dict(queue or {})
    if source_address is not None:
        qkeys["egress_pool"] = "pool"
    qcfg = make_queue_config(**qkeys)
    p = Policy()

    @p.on("get_egress_path_config")
    def _path(domain: str, source: str, site: str) -> Any:
        return cfg

    @p.on("get_queue_config")
    def _queue(domain: str, tenant: str, campaign: str, routing: str) -> Any:
        return qcfg

    if source_address is not None:
        @p.on("get_egress_pool")
        def _pool(name: str) -> Any:
            return make_egress_pool(name, entries=[{"name": "src", "weight": 1}])

        @p.on("get_egress_source")
        def _source(name: str) -> Any:
            return make_egress_source(name, source_address=source_address)

    return p


def message(n: int, to: str = "user@example.com") -> bytes:
    """A small RFC 5322 message numbered `n`."""
    return (f"From: s@sender.test\r\nTo: {to}\r\nSubject: message {n}\r\n"
            f"Message-ID: <m{n}@sender.test>\r\n\r\nbody of message {n}\r\n").encode()


class Live:
    """Engine + LiveDriver + LiveResolver on the running loop."""

    def __init__(self, policy: Policy, dns_port: int, *, tls_cafile: str | None = None,
                 resolver_timeout: float = 2.0) -> None:
        self.policy = policy
        self.dns_port = dns_port
        self.tls_cafile = tls_cafile
        self.resolver_timeout = resolver_timeout
        self.bodies: dict[str, bytes] = {}
        self.records: list[dict[str, Any]] = []
        self.events: list[Any] = []
        self.discarded: list[str] = []

    async def __aenter__(self) -> Live:
        self.engine = Engine(self.policy)
        self.resolver = LiveResolver(["127.0.0.1"], port=self.dns_port,
                                     timeout=self.resolver_timeout)
        self.driver = LiveDriver(
            self.engine, resolver=self.resolver, bodies=self.bodies.__getitem__,
            records=self.records.append, journal=self.events.append,
            tls_cafile=self.tls_cafile, on_discard=self.discarded.append,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.driver.abort_all()
        assert self.driver.protocol_errors == 0

    def submit(self, rcpts: tuple[str, ...] = ("user@example.com",), *,
               content: bytes | None = None, sender: str = "s@sender.test") -> str:
        """Submit one message now; returns its id."""
        n = next(_ids)
        mid = f"t{n}"
        data = content if content is not None else message(n, rcpts[0])
        self.bodies[mid] = data
        self.driver.feed(MessageSubmitted(at=time.time(), id=mid, sender=sender,
                                          recipients=rcpts, size=len(data)))
        return mid

    async def wait_done(self, timeout: float = 5.0) -> None:
        """Until every message is finished (delivered, bounced or expired)."""
        await self.wait_for(lambda: self.engine.queued_count == 0, timeout,
                            what="every message finished")

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0,
                       what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                types = [r["type"] for r in self.records]
                raise TimeoutError(f"{what} not met after {timeout}s; records: {types}")
            await asyncio.sleep(0.01)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == kind]
