"""engine.live (listener + service): the listener's bounds, on a real service.

Connections over the global cap or the per-client cap are told 421 before
any banner; a DATA body that would take the memory held by all connections
over its cap is dropped and answered 452 (nothing journaled); AUTH failures
are answered ever more slowly and, past the limit, the client's AUTH is
refused with 421 even with the right password.
"""

from __future__ import annotations

import asyncio
import base64
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engine.live.journal import iter_events
from engine.live.listener_limits import LimitSettings
from engine.live.service import Service
from engine.policy import Policy
from tests.support.smtp_raw import RawClient

pytestmark = pytest.mark.timeout(60)


class _Silent:
    """Lookups that never answer: delivery is not under test."""

    async def resolve_mx(self, domain: str, now: float) -> Any:
        await asyncio.Event().wait()

    async def resolve_tlsa(self, host: str, port: int, now: float) -> Any:
        await asyncio.Event().wait()


def run(tmp_path: pathlib.Path, limits: LimitSettings,
        script: Callable[[Service, int], Awaitable[None]], **kw: Any) -> list[Any]:
    """Run `script(service, port)` on a fresh service; the journal's events after."""
    spool = tmp_path / "spool"

    async def go() -> None:
        async with Service(Policy(), spool, listen=("127.0.0.1", 0), resolver=_Silent(),
                           limits=limits, **kw) as svc:
            assert svc.listen_port is not None
            await script(svc, svc.listen_port)

    asyncio.run(go())
    return [ev for _, ev in iter_events(spool / "journal.sqlite")]


async def first_line(port: int, source: str = "127.0.0.1") -> bytes:
    """Connect from `source` and read the first line the server sends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} not met")


def test_connections_over_the_global_cap_get_421(tmp_path: pathlib.Path) -> None:
    async def script(svc: Service, port: int) -> None:
        async with RawClient(port) as a, RawClient(port) as b:
            assert a.greeting[0] == b.greeting[0] == 220
            assert (await first_line(port)).startswith(b"421 4.7.0 too many connections")
        assert svc.ingest is not None
        await until(lambda: svc.ingest.limits.connections == 0, "connections released")
        assert (await first_line(port)).startswith(b"220 ")

    run(tmp_path, LimitSettings(max_connections=2), script)


def test_connections_over_the_per_client_cap_get_421(tmp_path: pathlib.Path) -> None:
    async def script(svc: Service, port: int) -> None:
        async with RawClient(port) as a:
            assert a.greeting[0] == 220
            assert (await first_line(port)).startswith(b"421 4.7.0 too many connections from")
            assert (await first_line(port, source="127.0.0.2")).startswith(b"220 ")

    run(tmp_path, LimitSettings(max_connections_per_client=1), script)


def test_data_over_the_memory_cap_is_dropped_and_answered_452(tmp_path: pathlib.Path) -> None:
    chunk = b"x" * 1000 + b"\r\n"

    async def script(svc: Service, port: int) -> None:
        assert svc.ingest is not None
        limits = svc.ingest.limits
        async with RawClient(port) as a, RawClient(port) as b:
            for c in (a, b):
                assert (await c.cmd(b"EHLO c.test"))[0] == 250
                assert (await c.cmd(b"MAIL FROM:<s@s.test>"))[0] == 250
                assert (await c.cmd(b"RCPT TO:<r@example.com>"))[0] == 250
                assert (await c.cmd(b"DATA"))[0] == 354
            await a.send(chunk * 40)
            await until(lambda: limits.buffered >= 40 * len(chunk), "a's body buffered")
            await b.send(chunk * 40)
            # b's body passed the cap once all of it arrived: dropped but for the 4
            # bytes that may begin its terminator.
            await until(lambda: limits.buffered == 40 * len(chunk) + 4, "b's body dropped")
            assert (await b.cmd(b"."))[0] == 452
            assert (await a.cmd(b"."))[0] == 250
            assert (await b.cmd(b"NOOP"))[0] == 250  # the connection goes on

    events = run(tmp_path, LimitSettings(max_buffered_data=64 * 1024), script)
    assert sum(type(ev).__name__ == "MessageSubmitted" for ev in events) == 1


def _plain(user: str, password: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode())


def test_auth_failures_are_slowed_then_refused(tmp_path: pathlib.Path) -> None:
    delay = 0.2

    async def script(svc: Service, port: int) -> None:
        loop = asyncio.get_running_loop()
        async with RawClient(port) as c:
            assert (await c.cmd(b"EHLO c.test"))[0] == 250
            for n in (1, 2, 3):
                started = loop.time()
                assert (await c.cmd(_plain("u", "wrong")))[0] == 535
                assert loop.time() - started >= delay * n * 0.9  # held back, longer each time
            assert (await c.cmd(_plain("u", "right")))[0] == 421
            assert (await c.reply())[0] == 0  # closed
        async with RawClient(port) as c:  # a new connection from the same client
            assert (await c.cmd(b"EHLO c.test"))[0] == 250
            assert (await c.cmd(_plain("u", "right")))[0] == 421

    run(tmp_path, LimitSettings(auth_max_failures=3, auth_delay=delay), script,
        ingest_auth={"u": "right"})


def test_a_right_password_within_the_limit_is_accepted(tmp_path: pathlib.Path) -> None:
    async def script(svc: Service, port: int) -> None:
        async with RawClient(port) as c:
            assert (await c.cmd(b"EHLO c.test"))[0] == 250
            assert (await c.cmd(_plain("u", "wrong")))[0] == 535
            assert (await c.cmd(_plain("u", "right")))[0] == 235

    run(tmp_path, LimitSettings(auth_max_failures=3, auth_delay=0.0), script,
        ingest_auth={"u": "right"})
