"""The plumbing shared by the test servers: loopback-only binding and two ways to run.

Every test server starts either on the test's own event loop (``async with``)
or on a private loop in a background thread (``with``), so synchronous tests
and a delivery driver running its own loop can use the same servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"test servers bind loopback only, not host={host!r}")


class LoopThread:
    """An event loop running in a daemon thread; `run` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class ServerBase:
    """Start/stop on the current loop (``async with``) or a background one (``with``)."""

    host: str
    port: int

    def __init__(self) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._thread: LoopThread | None = None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(AttributeError):
                self._server.close_clients()  # type: ignore[attr-defined]  # 3.13+
            self._server = None

    def _bound(self, server: asyncio.AbstractServer) -> None:
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        return self.host, self.port

    async def __aenter__(self) -> ServerBase:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> ServerBase:
        self._thread = LoopThread()
        self._thread.run(self.start())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None
        self._thread.run(self.stop())
        self._thread.close()
        self._thread = None
