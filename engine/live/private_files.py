"""Spool and log files are private: 0600 files in 0700 directories.

The journal holds message bodies and the logs hold addresses, so neither is
for other local users.  Directories are created 0700 (and an existing one
is narrowed to 0700); files are created 0600 whatever the umask, and
SQLite creates its -wal and -shm files with the database file's mode.
`replace_file` writes a file whole under a temporary name and renames it over
the old one, so a reader or a crash sees the old content or the new, never a
part of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

__all__ = ["DIR_MODE", "FILE_MODE", "open_new", "private_dir", "private_file", "replace_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Create `path` (and parents) if missing; make it 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create `path` empty if missing; make it 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    os.chmod(path, FILE_MODE)


def open_new(path: Path) -> IO[bytes]:
    """Open a new file (FileExistsError if it exists) for binary writing, 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    return os.fdopen(fd, "wb")


def replace_file(path: Path, data: bytes) -> None:
    """Make `path` hold `data` (0600), atomically: written and synced under a
    temporary name beside it, renamed over it, and the rename synced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash of this pid's predecessor
    try:
        with open_new(tmp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
