"""One group commit of the journal: the pending requests written in one
SQLite transaction, then their futures completed.

Split from `engine.live.journal` (the writer thread, the queue and the
failure policy) so each stays short; this part knows the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from concurrent.futures import Future
from typing import Any

from engine.errors import JournalError

__all__ = ["KEEP_SNAPSHOTS", "Request", "complete", "write_batch"]

KEEP_SNAPSHOTS = 2


@dataclasses.dataclass(slots=True)
class Request:
    """One caller's writes, committed atomically with whatever else is pending."""

    rows: list[tuple[int, float, str, bytes]]
    bodies: dict[str, bytes | None]  # None: drop the body
    snapshot: tuple[int, bytes] | None
    result: int
    future: Future[int] | asyncio.Future[int]
    loop: asyncio.AbstractEventLoop | None  # set for asyncio futures
    drops_only: bool = False  # made by drop_body: later drops may join it
    inbox: tuple[tuple[str, bytes], ...] = ()  # accepted submissions: (id, event)
    inbox_done: tuple[str, ...] = ()  # submissions whose event is in `rows`
    retry: bool = True  # kept and retried after a failed commit (not for `accept`)


def write_batch(conn: sqlite3.Connection, batch: list[Request], accepted: int) -> None:
    """Write `batch` in one transaction, with `accepted` (submissions accepted in
    all, this batch's included); `sqlite3.Error` (rolled back by the caller)
    when it fails."""
    rows = [row for req in batch for row in req.rows]
    bodies: dict[str, bytes | None] = {}
    snapshots = []
    inbox = [row for req in batch for row in req.inbox]
    inbox_done = [(mid,) for req in batch for mid in req.inbox_done]
    for req in batch:  # later requests win: a drop after an insert deletes it
        bodies.update(req.bodies)
        if req.snapshot is not None:
            snapshots.append(req.snapshot)
    conn.execute("BEGIN IMMEDIATE")
    if rows:
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    keep = [(k, v) for k, v in bodies.items() if v is not None]
    if keep:
        conn.executemany("INSERT OR REPLACE INTO bodies VALUES (?, ?)", keep)
    drop = [(k,) for k, v in bodies.items() if v is None]
    if drop:
        conn.executemany("DELETE FROM bodies WHERE id = ?", drop)
    if inbox:
        conn.executemany("INSERT OR REPLACE INTO inbox VALUES (?, ?)", inbox)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('accepted', ?)", (str(accepted),))
    if inbox_done:
        conn.executemany("DELETE FROM inbox WHERE id = ?", inbox_done)
    if snapshots:
        conn.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", snapshots)
        conn.execute(
            "DELETE FROM snapshots WHERE seq NOT IN "
            "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)", (KEEP_SNAPSHOTS,)
        )
    conn.execute("COMMIT")


def _settle(items: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    """Complete asyncio futures in their loop's thread (one call per commit)."""
    for fut, value in items:
        if fut.done():  # the awaiting task was cancelled: nothing to tell
            continue
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)


def complete(batch: list[Request], outcome: int | JournalError | None) -> None:
    """Complete the futures of `batch`: each request's seq, or `outcome`'s error;
    one ``call_soon_threadsafe`` per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for req in batch:
        value = outcome if outcome is not None else req.result
        if req.loop is None:
            fut = req.future
            assert isinstance(fut, Future)
            if isinstance(value, BaseException):
                fut.set_exception(value)
            else:
                fut.set_result(value)
        else:
            by_loop.setdefault(req.loop, []).append((req.future, value))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            loop.call_soon_threadsafe(_settle, items)
