"""Hand memory back to the system once idle state is reaped (issue 13.6).

Reaping drops the engine's per-domain state, but freeing an object only gives
its memory back to the allocator that holds it:

* glibc keeps freed chunks for reuse and returns the top of its heap only;
  pages in the middle stay resident until ``malloc_trim`` releases every whole
  free page (``madvise(MADV_DONTNEED)``), in every malloc arena (the journal
  writer's thread has its own);
* SQLite keeps each connection's page cache at ``cache_size`` once filled
  (`engine.live.journal.Journal.release_memory`);
* a dict or set keeps its largest table (`engine.lifecycle.compact`).

`hand_back` is what the live driver calls after each reap sweep that dropped
something.  Python's own small-object arenas (pymalloc) are returned only
when every object in them is gone, and their empty pools stay resident:
whatever is made during or after a burst and kept (a cache entry, a timer,
a journal row) pins the arena it landed in, so after 10 k domains about
28 of 50 MiB arenas stay although the live objects are back to the idle
ones (BENCHMARKS.md, "Memory after many domains, reaped").  Caches that
outlive a domain are kept small for that reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

__all__ = ["COLLECT_BELOW", "hand_back", "malloc_trim"]


def _load_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_TRIM = _load_trim()


def malloc_trim() -> bool:
    """Release the free pages of every glibc malloc arena; False where there is none."""
    if _TRIM is None:
        return False
    return bool(_TRIM(0))


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
    then `malloc_trim`."""
    if release is not None:
        release(malloc_trim)
    if queued < COLLECT_BELOW:
        gc.collect()
    malloc_trim()
