"""Hand memory back to the system once idle state is reaped (issue 13.6).

Reaping drops the engine's per-domain state, but freeing an object only gives
its memory back to the allocator that holds it:

* CPython's small-object allocator (pymalloc) returns a 1 MiB arena only
  when every object in it is gone, and never the empty pools inside one that
  lives.  Whatever is made during a burst and kept (a memo entry, a counter's
  new value, a journal row) pins the arena it landed in: after one message
  to each of 10 k domains about 30 of 50 arenas stay, although the live
  objects are back to the idle ones (BENCHMARKS.md, "Memory after many
  domains, reaped").  So `egress deliver` runs on jemalloc where the machine
  has it (`use_allocator`: every object from jemalloc, whose size classes
  live in slabs of a few pages and whose empty pages are purged one by one),
  and memos that outlive a burst are emptied when it is reaped.
* glibc keeps freed chunks for reuse and returns the top of its heap only;
  pages in the middle stay resident until ``malloc_trim`` releases every whole
  free page, in every malloc arena (the journal writer's thread has its own).
* SQLite keeps each connection's page cache at ``cache_size`` once filled
  (`engine.live.journal.Journal.release_memory`).
* a dict or set keeps its largest table (`engine.lifecycle.compact`).

`hand_back` is what the live service calls after each reap sweep that dropped
something; `trim` is what hands free pages back, on the thread that calls it
(jemalloc keeps a cache of freed objects per thread).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import sys
from collections.abc import Callable

from engine.errors import ConfigError

__all__ = ["ALLOCATORS", "COLLECT_BELOW", "HandBacks", "allocator", "hand_back", "malloc_trim",
           "trim", "use_allocator"]

ALLOCATORS = ("auto", "jemalloc", "pymalloc")
JEMALLOC = "libjemalloc.so.2"
# jemalloc's options for `egress deliver`: a background thread purges unused
# dirty pages (10 s after they were freed, its default), off the event loop;
# `trim` purges at once after a reap.
JEMALLOC_CONF = "background_thread:true"
# set by `use_allocator` for the process it re-executes: the variables it
# changed and their values before (JSON; null: unset), put back once running
_REEXEC = "EGRESS_ALLOCATOR_ENV"
_VARS = ("LD_PRELOAD", "PYTHONMALLOC", "MALLOC_CONF")


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _load_mallctl() -> Callable[..., int] | None:
    """jemalloc's ``mallctl`` when jemalloc is this process's malloc (preloaded),
    else None."""
    try:
        fn = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def _load_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library (musl, macOS)."""
    libc = _libc()
    if libc is None:
        return None
    try:
        fn = libc.malloc_trim
    except AttributeError:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_MALLCTL = _load_mallctl()
_TRIM = _load_trim()


def _python_allocator() -> str:
    """CPython's name for its object allocator (``pymalloc``, ``malloc``,
    ``pymalloc_debug``...), as PYTHONMALLOC set it at start."""
    try:
        fn = ctypes.pythonapi._PyMem_GetCurrentAllocatorName
    except AttributeError:  # not exported by this build
        return os.environ.get("PYTHONMALLOC") or "pymalloc"
    fn.restype = ctypes.c_char_p
    name = fn()
    return name.decode() if name else "custom"


def allocator() -> str:
    """What allocates this process's objects: ``"jemalloc"`` (preloaded and
    PYTHONMALLOC=malloc), ``"malloc"`` (the C library's), or CPython's own
    name for another (``"pymalloc"``)."""
    name = _python_allocator()
    if name != "malloc":
        return name
    return "jemalloc" if _MALLCTL is not None else "malloc"


def _find_jemalloc() -> str | None:
    """jemalloc's shared library as the dynamic loader knows it (a soname such
    as ``libjemalloc.so.2``, which LD_PRELOAD looks up like any library), or
    None where it is not installed."""
    return ctypes.util.find_library("jemalloc")


def use_allocator(choice: str) -> None:
    """Make this process run on the allocator `choice` asks for, before it
    starts anything: ``auto`` and ``jemalloc`` re-execute the same command
    line with jemalloc preloaded and ``PYTHONMALLOC=malloc`` (the same pid;
    returns only in the re-executed process, with the environment put back
    as it was, so children do not inherit it); ``auto`` keeps pymalloc where
    jemalloc is not installed, ``jemalloc`` refuses to start then;
    ``pymalloc`` changes nothing."""
    if choice not in ALLOCATORS:
        raise ConfigError(f"--allocator: {choice!r} is not one of {', '.join(ALLOCATORS)}")
    saved = os.environ.pop(_REEXEC, None)
    if saved is not None:  # the re-executed process
        for var, value in json.loads(saved).items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if choice == "jemalloc" and allocator() != "jemalloc":
            raise ConfigError(f"--allocator jemalloc: {JEMALLOC} did not load")
        return
    if choice == "pymalloc" or allocator() == "jemalloc":
        return  # asked for, or already so (an operator's own LD_PRELOAD)
    lib = _find_jemalloc()
    if lib is None:
        if choice == "jemalloc":
            raise ConfigError(f"--allocator jemalloc: {JEMALLOC} is not installed "
                              "(Debian: apt-get install libjemalloc2)")
        return
    env = dict(os.environ)
    env[_REEXEC] = json.dumps({var: os.environ.get(var) for var in _VARS})
    preload = os.environ.get("LD_PRELOAD")
    env["LD_PRELOAD"] = lib if not preload else f"{lib}:{preload}"
    env["PYTHONMALLOC"] = "malloc"
    env["MALLOC_CONF"] = os.environ.get("MALLOC_CONF") or JEMALLOC_CONF
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def malloc_trim() -> bool:
    """Release the free pages of every glibc malloc arena; False where there is none."""
    if _TRIM is None:
        return False
    return bool(_TRIM(0))


def trim() -> bool:
    """Hand free pages back to the system: under jemalloc, this thread's cache
    of freed objects, then every arena's unused pages (``arena.<all>.purge``);
    under glibc, ``malloc_trim``.  False where neither is there.

    jemalloc's background thread is stopped (joined) for the purge and started
    again: pages it had taken to purge itself when the purge came were not
    found by it, and stayed resident until the thread got round to them, which
    a loaded machine can delay past any reading of the RSS (seen as a purge
    that handed back nothing, one time in about 30)."""
    if _MALLCTL is None:
        return malloc_trim()
    _MALLCTL(b"thread.tcache.flush", None, None, None, ctypes.c_size_t(0))
    was, size, off = ctypes.c_bool(False), ctypes.c_size_t(1), ctypes.c_bool(False)
    stopped = _MALLCTL(b"background_thread", ctypes.byref(was), ctypes.byref(size),
                       ctypes.byref(off), ctypes.c_size_t(1)) == 0 and was.value
    _MALLCTL(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))  # MALLCTL_ARENAS_ALL
    if stopped:
        on = ctypes.c_bool(True)
        _MALLCTL(b"background_thread", None, None, ctypes.byref(on), ctypes.c_size_t(1))
    malloc_trim()  # what the C library allocated before jemalloc took over
    return True


# A full garbage collection walks every tracked object, so it costs in
# proportion to what is queued: it is left to Python's own schedule while more
# than this many messages are.
COLLECT_BELOW = 10_000


def hand_back(release: Callable[[Callable[[], object]], None] | None = None,
              queued: int = 0) -> None:
    """After a reap: `release` (the journal's page caches, freed on its writer
    thread, which trims again after), a full garbage collection when fewer
    than `COLLECT_BELOW` messages are `queued` (the reaped state's reference
    cycles, and CPython's free lists, which only a full collection empties),
    then `trim`."""
    if release is not None:
        release(trim)
    if queued < COLLECT_BELOW:
        gc.collect()
    trim()


class HandBacks:
    """When a reap sweep dropped something (call it then): `run` at the loop's
    next turn, and once more `later` seconds after the last such sweep.

    At the next turn, because the sweep's own frames still hold what it
    dropped, and a cycle the collector cannot free then would wait for
    Python's next full collection (it can take hours).  Once more later,
    because what was still in use at the first (a /metrics answer being
    written out, a batch on the journal's thread) is free by then; the
    engine sweeps no more once nothing is left to reap, and without
    jemalloc's background thread nothing else would hand that back."""

    def __init__(self, run: Callable[[], None], later: float) -> None:
        self._run = run
        self._later = later
        self._again: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(self._run)
        self.cancel()
        self._again = loop.call_later(self._later, self._last)

    def _last(self) -> None:
        self._again = None
        self._run()

    def cancel(self) -> None:
        """Forget the later hand-back (shutdown)."""
        if self._again is not None:
            self._again.cancel()
            self._again = None
