"""The journal's high-water mark: what it committed, kept outside SQLite.

SQLite in WAL mode keeps recent commits only in the -wal file until a
checkpoint; a WAL deleted or damaged after a kill takes them with it, and
the database then opens as if they had never been written.  So after every
commit the writer also records the last committed event seq and the count of
accepted submissions in a small side file (``journal.sqlite.mark``).  At
startup a journal whose database holds less than its mark says has lost
acknowledged work, and `Journal` refuses to open it (one line naming what is
missing) unless told to accept the loss.

The mark is written with one ``pwrite`` and no fsync: it guards against a
lost or damaged WAL after a process crash (the page cache keeps the mark),
and after a power cut it can only lag, never raise a false alarm.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import JournalError
from engine.live.private_files import FILE_MODE

__all__ = ["JournalLossError", "Mark", "MarkFile", "loss", "mark_path", "open_mark",
           "read_mark"]

log = logging.getLogger("egress.journal")


class JournalLossError(JournalError):
    """The journal holds less than its high-water mark says was committed."""

_WIDTH = 64  # bytes written each time, so a shorter record never leaves a tail


@dataclass(frozen=True, slots=True)
class Mark:
    """The last committed event seq and the number of submissions accepted."""

    seq: int = 0
    accepted: int = 0


def mark_path(db: Path) -> Path:
    """The mark file of the journal database at `db`."""
    return db.with_name(db.name + ".mark")


def read_mark(path: Path) -> Mark | None:
    """The mark in `path`, None when there is none; `JournalError` when unreadable."""
    try:
        text = path.read_bytes().decode("ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"journal mark {str(path)!r} is unreadable: {exc}") from None
    if not text:
        return None
    try:
        seq, accepted = (int(x) for x in text.split())
    except ValueError:
        raise JournalError(f"journal mark {str(path)!r} is damaged: {text[:40]!r}") from None
    return Mark(seq, accepted)


def loss(mark: Mark | None, found: Mark) -> str | None:
    """What the database (`found`) lacks against `mark`, as one phrase; None if nothing."""
    if mark is None:
        return None
    missing = []
    if found.seq < mark.seq:
        missing.append(f"events {found.seq + 1}..{mark.seq}")
    if found.accepted < mark.accepted:
        missing.append(f"{mark.accepted - found.accepted} accepted submission(s)")
    return " and ".join(missing) or None


class MarkFile:
    """The writer's handle on the mark (created 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)

    def write(self, mark: Mark) -> None:
        os.pwrite(self._fd, f"{mark.seq} {mark.accepted}".ljust(_WIDTH).encode(), 0)

    def close(self) -> None:
        os.close(self._fd)


def open_mark(db: Path, found: Mark, accept_loss: bool) -> MarkFile:
    """The writer's mark for the database at `db` holding `found`, after checking
    the previous mark: `JournalLossError` (one line naming what is missing)
    when the database holds less, unless `accept_loss` (then a warning)."""
    path = mark_path(db)
    try:
        lost = loss(read_mark(path), found)
    except JournalError:
        if not accept_loss:
            raise
        lost = "what its damaged mark recorded"
    if lost is not None:
        problem = (f"journal {str(db)!r} lacks {lost} that were committed (the WAL was "
                   "removed or damaged?)")
        if not accept_loss:
            raise JournalLossError(f"{problem}; `egress journal salvage` copies what is "
                                   "readable, --accept-loss starts without it")
        log.warning("%s; starting without them (--accept-loss)", problem)
    mark = MarkFile(path)
    mark.write(found)
    return mark
