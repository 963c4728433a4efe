"""SQLite's own count of the memory it holds, for tests that show it handed back."""

from __future__ import annotations

import ctypes
import ctypes.util


def sqlite_memory_used() -> int | None:
    """SQLite's own count of the bytes it holds (``sqlite3_memory_used``), or
    None where the library cannot be found or keeps no count."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used()) or None
