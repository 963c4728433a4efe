"""Which event loop runs the live service: asyncio's own, or uvloop's.

The live relay is bound by its one event loop (BENCHMARKS.md, "Delivery and
end to end"), so the loop's own cost per callback, per socket read and per
write counts.  uvloop (libuv under asyncio's API, maintained by the asyncio
authors) does that work in C.  It is optional: egress installs and runs
without it, ``--loop asyncio`` never touches it, and ``--loop uvloop`` is
refused with one line when it is missing.  ``auto`` (the default) takes
uvloop when it is installed; BENCHMARKS.md ("Event loop: asyncio and uvloop")
has the alternated figures that chose that default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from engine.errors import ConfigError

__all__ = ["LOOPS", "loop_factory", "resolve_loop", "run"]

LOOPS = ("auto", "asyncio", "uvloop")

T = TypeVar("T")


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def resolve_loop(name: str) -> str:
    """``asyncio`` or ``uvloop``: what `name` (one of `LOOPS`) runs on this machine;
    a `ConfigError` naming the option for an unknown name or a missing uvloop."""
    if name not in LOOPS:
        raise ConfigError(f"--loop: {name!r} is not one of {', '.join(LOOPS)}")
    if name == "asyncio":
        return "asyncio"
    if _uvloop_factory() is None:
        if name == "uvloop":
            raise ConfigError("--loop uvloop: uvloop is not installed "
                              "(pip install uvloop, or --loop asyncio)")
        return "asyncio"
    return "uvloop"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for `name` (None: asyncio's default loop)."""
    return _uvloop_factory() if resolve_loop(name) == "uvloop" else None


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop `loop` names."""
    factory = loop_factory(loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
