"""One group commit of the journal: the pending requests written in one
SQLite transaction, then their futures completed.

Split from `engine.live.journal` (the writer thread, the queue and the
failure policy) so each stays short; this part knows the tables (`SCHEMA`,
`prepare`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engine import codec
from engine.errors import JournalError
from engine.live.journal_mark import Mark

__all__ = ["KEEP_SNAPSHOTS", "Request", "complete", "prepare", "write_batch"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bodies (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE VIEW IF NOT EXISTS event_log AS
    SELECT seq, strftime('%Y-%m-%d %H:%M:%f', at, 'unixepoch') AS time, at, kind,
           length(data) AS bytes
    FROM events;
"""


def prepare(conn: sqlite3.Connection, path: Path) -> Mark:
    """Put the writer connection in WAL mode, create the tables, check the codec
    the file was written with; what the file holds (last seq, accepted count).
    `JournalError` for a file this build cannot use, `sqlite3.Error` for one
    SQLite cannot read."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise JournalError(f"journal {str(path)!r}: cannot use WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(SCHEMA)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    want = {"codec_version": str(codec.VERSION), "schema": codec.SCHEMA_FINGERPRINT.hex()}
    if not meta:
        conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(want.items()))
    for key, value in want.items():
        if meta and meta.get(key) != value:
            raise JournalError(f"journal {str(path)!r} was written with {key} "
                               f"{meta.get(key)!r}; this build has {value!r}")
    seq = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
    return Mark(seq, int(meta.get("accepted", 0)))

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
    durable: bool = True  # fsync'd at commit (`Journal.record`'s are not)


def write_batch(cur: sqlite3.Cursor, batch: list[Request], accepted: int) -> None:
    """Write `batch` in one transaction, with `accepted` (submissions accepted in
    all, this batch's included); `sqlite3.Error` (rolled back by the caller)
    when it fails.

    `cur` is the writer's one cursor, kept for the journal's life: each
    `Connection.execute` makes a cursor, and the connection keeps a weak
    reference to each until its next sweep of them, 200 cursors later, so a
    burst of commits left up to 200 small objects that outlived it, each
    pinning the allocator page it was made in (`engine.live.memory`)."""
    rows = [row for req in batch for row in req.rows]
    bodies: dict[str, bytes | None] = {}
    snapshots = []
    inbox = [row for req in batch for row in req.inbox]
    inbox_done = [(mid,) for req in batch for mid in req.inbox_done]
    for req in batch:  # later requests win: a drop after an insert deletes it
        bodies.update(req.bodies)
        if req.snapshot is not None:
            snapshots.append(req.snapshot)
    cur.execute("BEGIN IMMEDIATE")
    if rows:
        cur.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    keep = [(k, v) for k, v in bodies.items() if v is not None]
    if keep:
        cur.executemany("INSERT OR REPLACE INTO bodies VALUES (?, ?)", keep)
    drop = [(k,) for k, v in bodies.items() if v is None]
    if drop:
        cur.executemany("DELETE FROM bodies WHERE id = ?", drop)
    if inbox:
        cur.executemany("INSERT OR REPLACE INTO inbox VALUES (?, ?)", inbox)
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('accepted', ?)", (str(accepted),))
    if inbox_done:
        cur.executemany("DELETE FROM inbox WHERE id = ?", inbox_done)
    if snapshots:
        for seq, data in snapshots:
            _write_snapshot(cur, seq, data)
        cur.execute(
            "DELETE FROM snapshots WHERE seq NOT IN "
            "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)", (KEEP_SNAPSHOTS,)
        )
    cur.execute("COMMIT")


def _write_snapshot(cur: sqlite3.Cursor, seq: int, data: bytes) -> None:
    """One snapshot row, its bytes written through incremental blob I/O.

    Bound as a statement's parameter, the snapshot would be copied into SQLite's
    memory and stay there after the row is written: SQLite keeps a statement's
    bindings until they are bound again, and Python's sqlite3 keeps the
    statement in its cache, so the next snapshot, possibly hours later, was
    what freed the last one (5 MB after a burst to 10 k domains)."""
    cur.execute("INSERT OR REPLACE INTO snapshots VALUES (?, zeroblob(?))", (seq, len(data)))
    if data:
        with cur.connection.blobopen("snapshots", "data", seq) as blob:
            blob.write(data)


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
