"""The durable journal: the engine's input events and message bodies in SQLite.

Why it is shaped so:

* **One SQLite file, stdlib `sqlite3`, WAL mode, ``synchronous=FULL``.**  A
  submission (its `MessageSubmitted` event and body) is committed to the
  inbox (`accept`) before the engine sees it and the client is told 250, and
  FULL makes that commit survive a power cut (NORMAL in WAL mode does not).
* **A failed commit is an episode, not the end.**  An `accept` whose commit
  fails fails (the client gets 451; nothing is kept).  Everything else was
  already handled by the engine and holds its seq: it is kept and retried,
  with a growing pause, until a commit succeeds (the disk has room again).
  One line is logged when an episode starts and one when it ends.
* **Group commit by one writer thread.**  The writer thread owns the only
  write connection; every request queued while it was committing goes into
  the next transaction, so one fsync acknowledges many sessions.  Callers
  ``await journal.append(...)``: the asyncio future is completed after the
  commit, with one ``loop.call_soon_threadsafe`` per commit per event loop
  (not one per request).  Events are encoded and given their sequence numbers
  in the caller's thread, at call time, so the journal's order is the order in
  which the engine handled them, whenever the caller awaits.
* **Plain tables, readable from a notebook.**  ``events(seq, at, kind, data)``
  (data is `engine.codec`'s encoding of one event; `at` and `kind` are copied
  out so SQL alone can count and plot), ``bodies(id, data)`` (dropped when the
  engine discards the message), ``snapshots(seq, data)`` (the engine's
  ``snapshot()`` after handling event `seq`; the last two are kept),
  ``inbox(id, data)`` (accepted submissions whose event is not yet in
  ``events``: what a restart must still hand to the engine), ``meta``
  (codec version and schema fingerprint, checked on open) and a view
  ``event_log``.  `load_events` turns the events into dicts for pandas.

Reading (replay, the whole traffic, dicts for pandas) is in
`engine.live.journal_read`, re-exported here: it needs none of the writer's
threads, only a read transaction so a snapshot and the events after it agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engine import codec
from engine.errors import JournalError
from engine.events import Event, MessageSubmitted
from engine.live.journal_batch import Request, complete, prepare, write_batch
from engine.live.journal_mark import JournalLossError, Mark, open_mark
from engine.live.journal_read import connect, iter_events, load_events, read_journal
from engine.live.private_files import private_dir, private_file

__all__ = ["JOURNAL_FILE", "Journal", "JournalLossError", "iter_events", "load_events",
           "read_journal"]

RETRY_PAUSE = 0.2  # seconds before retrying after a failed commit, times the failures
MAX_RETRY_PAUSE = 2.0
CLOSE_RETRIES = 3  # failed commits while closing before what is kept is given up

log = logging.getLogger("egress.journal")
_NO_BODIES: dict[str, bytes | None] = {}  # shared, never written: requests without bodies

JOURNAL_FILE = "journal.sqlite"


class Journal:
    """A durable, group-committed journal of events and bodies in one SQLite file.

    ``Journal(path, max_batch=None)``: `max_batch` caps the requests per
    transaction (1 gives one commit per append, for comparison).
    """

    def __init__(self, path: str | Path, *, max_batch: int | None = None,
                 accept_loss: bool = False) -> None:
        self.path = Path(path)
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"Journal max_batch must be >= 1 or None, not {max_batch!r}")
        if not self.path.parent.is_dir():
            raise JournalError(
                f"cannot open journal {str(self.path)!r}: directory {str(self.path.parent)!r} "
                "does not exist"
            )
        self._max_batch = max_batch
        try:
            private_file(self.path)  # before SQLite creates it: its -wal/-shm take its mode
        except OSError as exc:
            raise JournalError(f"cannot open journal {str(self.path)!r}: {exc.strerror}") from None
        self._conn = connect(self.path)
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise
        try:
            self._mark = open_mark(self.path, self._committed, accept_loss)
        except BaseException:
            self._conn.close()
            raise
        self._reader = connect(self.path)
        # one cursor each, kept: see `write_batch` for what a cursor per call left
        self._read = self._reader.cursor()
        self._write = self._conn.cursor()
        self._reader_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: list[Request] = []
        self._closing = False
        self._idle = False  # the writer waits on _cond (guarded by it)
        self._closed = False
        # the writer is asked to hand back its page cache, then to call this (guarded by _cond)
        self._shrink: Callable[[], object] | None = None
        self.failures = 0  # failed commits in the current episode (0: writing fine)
        self.commits = 0  # transactions committed (for benchmarks and tests)
        self._synced = True  # the writer connection's synchronous is FULL
        self._writer = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._writer.start()

    @classmethod
    def in_spool(cls, spool: str | Path, **kwargs: Any) -> Journal:
        """The journal of a spool directory (created if missing): ``SPOOL/journal.sqlite``."""
        directory = Path(spool)
        private_dir(directory)
        return cls(directory / JOURNAL_FILE, **kwargs)

    def _setup(self) -> None:
        try:
            found = prepare(self._conn, self.path)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {str(self.path)!r}: {exc}") from None
        self._last_seq: int = found.seq
        self._committed = found

    def cap_pages(self, pages: int) -> int:
        """Cap the database at `pages` pages (a spool quota); the cap in force,
        which SQLite keeps at least the current size.  A commit that would pass
        it fails as on a full disk."""
        row = self._conn.execute(f"PRAGMA max_page_count = {int(pages)}").fetchone()
        return int(row[0])

    @property
    def last_seq(self) -> int:
        """The sequence number given to the latest appended event (0 when empty)."""
        return self._last_seq

    # --- writing ---------------------------------------------------------

    def _enqueue(
        self,
        events: Sequence[Event],
        bodies: Mapping[str, bytes | None],
        snapshot: tuple[int, bytes] | None,
        future: Future[int] | asyncio.Future[int],
        loop: asyncio.AbstractEventLoop | None,
        *,
        drops_only: bool = False,
        inbox: tuple[tuple[str, bytes], ...] = (),
        withdrawn: tuple[str, ...] = (),
        durable: bool = True,
    ) -> None:
        datas = codec.encode_each(events)
        done = withdrawn + tuple(ev.id for ev in events if type(ev) is MessageSubmitted)
        for key, data in bodies.items():
            if not isinstance(key, str) or not (data is None or isinstance(data, bytes)):
                raise JournalError(
                    f"bodies must map message ids (str) to bytes, not {key!r} -> {type(data)}"
                )
        with self._cond:
            if self._closing:
                raise JournalError(f"journal {str(self.path)!r} is closed")
            if snapshot is not None and not 0 <= snapshot[0] <= self._last_seq:
                raise JournalError(
                    f"snapshot seq {snapshot[0]} is not between 0 and the last event's "
                    f"seq {self._last_seq}"
                )
            first = self._last_seq + 1
            rows = [(first + i, ev.at, ev.__class__.__name__, data)
                    for i, (ev, data) in enumerate(zip(events, datas, strict=True))]
            self._last_seq += len(rows)
            self._pending.append(
                Request(rows, dict(bodies) if bodies else _NO_BODIES, snapshot,
                         self._last_seq, future, loop, drops_only, inbox, done,
                         retry=not inbox, durable=durable)
            )
            if self._idle:  # the writer sleeps: wake it (else it takes this batch next)
                self._cond.notify()

    def append(
        self, events: Sequence[Event], bodies: Mapping[str, bytes] | None = None
    ) -> asyncio.Future[int]:
        """Queue events (and bodies) now; the returned future completes after the commit.

        Its result is the seq of the last event appended.  Call it from a running
        event loop; ordering is fixed when called, not when awaited.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise JournalError("Journal.append needs a running event loop; "
                               "use append_sync() outside asyncio") from None
        fut: asyncio.Future[int] = loop.create_future()
        self._enqueue(events, bodies or {}, None, fut, loop)
        return fut

    def accept(self, event: MessageSubmitted, body: bytes) -> asyncio.Future[int]:
        """Make a submission durable before the engine sees it: its body and its
        event go to the inbox; the returned future completes after the commit.

        If that commit fails the future fails and nothing is kept or retried
        (the client is told 451).  The event itself is journaled later, in the
        engine's order, like any other (`append`/`submit`); the same commit
        takes it out of the inbox.  What is still in the inbox at startup was
        accepted but never reached the events (`inbox`).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._enqueue((), {event.id: body}, None, fut, loop,
                      inbox=((event.id, codec.encode_event(event)),))
        return fut

    def withdraw(self, message_id: str) -> Future[int]:
        """Take an accepted submission back out of the inbox, with its body."""
        fut: Future[int] = Future()
        self._enqueue((), {message_id: None}, None, fut, None, withdrawn=(message_id,))
        return fut

    def inbox(self) -> list[MessageSubmitted]:
        """The accepted submissions whose event was never journaled, oldest first."""
        with self._reader_lock:
            rows = self._read.execute("SELECT data FROM inbox ORDER BY rowid").fetchall()
        out = []
        for (data,) in rows:
            ev = codec.decode_event(bytes(data))
            assert isinstance(ev, MessageSubmitted)
            out.append(ev)
        return out

    def submit(
        self, events: Sequence[Event], bodies: Mapping[str, bytes] | None = None
    ) -> Future[int]:
        """Like `append`, for threads: a `concurrent.futures.Future` completed after commit."""
        fut: Future[int] = Future()
        self._enqueue(events, bodies or {}, None, fut, None)
        return fut

    def record(self, events: Sequence[Event]) -> Future[int]:
        """Like `submit` for events nobody waits on (the driver's): their commit
        may skip the fsync (``synchronous=NORMAL``: safe from a process crash;
        a power cut may lose them, which only retries what was in flight); a
        later durable commit syncs them with it."""
        fut: Future[int] = Future()
        self._enqueue(events, {}, None, fut, None, durable=False)
        return fut

    def append_sync(
        self,
        events: Sequence[Event],
        bodies: Mapping[str, bytes] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Append and wait for the commit; return the seq of the last event."""
        return self.submit(events, bodies).result(timeout)

    def drop_body(self, message_id: str) -> Future[int]:
        """Delete a message's body (on Discard); returns a future for the commit.

        Drops queued back to back (a batch's Discards) share one request and
        one future, while the writer has not taken it yet: they commit
        together anyway, and each drop stays after everything queued before it.
        """
        if not isinstance(message_id, str):
            raise JournalError(f"drop_body needs a message id (str), not {message_id!r}")
        with self._cond:
            last = self._pending[-1] if self._pending else None
            if last is not None and last.drops_only and not self._closing:
                last.bodies[message_id] = None
                return last.future  # type: ignore[return-value]
        fut: Future[int] = Future()
        self._enqueue((), {message_id: None}, None, fut, None, drops_only=True)
        return fut

    def write_snapshot(self, seq: int, data: bytes) -> Future[int]:
        """Store the engine's snapshot taken after event `seq`; keeps the last two."""
        if not isinstance(data, bytes):
            raise JournalError(f"snapshot data must be bytes, not {type(data).__name__}")
        fut: Future[int] = Future()
        self._enqueue((), {}, (seq, data), fut, None)
        return fut

    def _run(self) -> None:
        conn = self._conn
        while True:
            with self._cond:
                if self.failures and self._pending and not self._closing:
                    # Writing failed: retry what is kept after a pause (or when
                    # something new arrives), not in a tight loop.
                    self._idle = True
                    self._cond.wait(min(RETRY_PAUSE * self.failures, MAX_RETRY_PAUSE))
                    self._idle = False
                while not self._pending and not self._closing and self._shrink is None:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                cut = len(self._pending) if self._max_batch is None else self._max_batch
                batch = self._pending[:cut]
                del self._pending[:cut]
                shrink, self._shrink = self._shrink, None
            if batch:
                self._commit(batch)
                del batch  # its requests freed before a trim
                if self._closing and self.failures and self.failures >= CLOSE_RETRIES:
                    self._give_up()
            elif self._closing:
                break
            if shrink is not None:  # after the batch taken with it: what it held is free
                _shrink_memory(self._write)
                try:
                    shrink()
                except Exception:  # the writer must outlive a bad callback
                    log.exception("journal: release_memory's callback failed")
        with contextlib.suppress(sqlite3.Error):  # if so, the next open replays the WAL
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        self._mark.close()

    def _commit(self, batch: list[Request]) -> None:
        outcome: int | JournalError | None = None
        accepted = self._committed.accepted + sum(len(req.inbox) for req in batch)
        durable = any(req.durable for req in batch)
        try:
            if durable != self._synced:
                self._write.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._synced = durable
            write_batch(self._write, batch, accepted)
            self.commits += 1
        except sqlite3.Error as exc:
            outcome = JournalError(f"journal {str(self.path)!r}: commit failed: {exc}")
            with contextlib.suppress(sqlite3.Error):
                self._write.execute("ROLLBACK")
            if not self.failures:  # one line per episode, not per commit
                log.error("%s; submissions are refused (451) and the rest kept and "
                          "retried until a commit succeeds", outcome)
            self.failures += 1
            # What the engine already handled keeps its seqs and is written by a
            # later commit; only the accepted-but-unanswered submissions fail.
            kept = [req for req in batch if req.retry]
            batch = [req for req in batch if not req.retry]
            with self._cond:
                self._pending[:0] = kept
        else:
            seq = max((req.rows[-1][0] for req in batch if req.rows),
                      default=self._committed.seq)
            self._committed = Mark(max(seq, self._committed.seq), accepted)
            if durable:  # the mark never runs ahead of what is on disk
                self._mark.write(self._committed)
            if self.failures:
                log.warning("journal %r: commits succeed again after %d failed",
                            str(self.path), self.failures)
                self.failures = 0
        complete(batch, outcome)

    def _give_up(self) -> None:
        """Closing while commits still fail: fail what is kept (it is lost, as in a
        crash: the next start retries what was in flight)."""
        with self._cond:
            kept, self._pending[:] = list(self._pending), []
        complete(kept, JournalError(f"journal {str(self.path)!r}: closed while commits "
                                        "were failing"))

    def release_memory(self, then: Callable[[], object] = lambda: None) -> None:
        """Hand back the SQLite page caches of both connections (``PRAGMA
        shrink_memory``), the writer's on its own thread at its next turn,
        which then calls `then` (``malloc_trim``: the pages are freed only
        now).  Called when the engine's idle state is reaped (issue 13.6):
        each cache fills to SQLite's ``cache_size`` while bodies flow and
        would otherwise stay at that size, unused, until the next burst."""
        with self._cond:
            if self._closing:
                return
            self._shrink = then
            if self._idle:
                self._cond.notify()
        with self._reader_lock:
            _shrink_memory(self._read)

    def close(self) -> None:
        """Commit what is pending, checkpoint the WAL into the file and close."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._closed = True
            self._cond.notify()
        self._writer.join()
        with self._reader_lock:
            self._reader.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ---------------------------------------------------------

    def body(self, message_id: str) -> bytes:
        """The committed body of a message; `KeyError` naming it when there is none."""
        with self._reader_lock:
            # fetchall, not fetchone: the statement runs to its end and is reset,
            # so the kept cursor holds no read transaction (and no WAL) open
            rows = self._read.execute(
                "SELECT data FROM bodies WHERE id = ?", (message_id,)
            ).fetchall()
        if not rows:
            raise KeyError(f"no body for message {message_id!r} in journal {str(self.path)!r}")
        return bytes(rows[0][0])

    def replay(self) -> tuple[bytes | None, Iterator[Event]]:
        """The latest snapshot (or None) and an iterator over the events after it."""
        snap, events = self.replay_from_snapshot()
        return (None if snap is None else snap[1]), (ev for _, ev in events)

    def replay_from_snapshot(
        self,
    ) -> tuple[tuple[int, bytes] | None, Iterator[tuple[int, Event]]]:
        """Like `replay`, with sequence numbers: ``((seq, data) | None, (seq, event)...)``."""
        return read_journal(self.path)


def _shrink_memory(cur: sqlite3.Cursor) -> None:
    """Free what the page cache of `cur`'s connection holds unused (a failure
    only keeps it)."""
    with contextlib.suppress(sqlite3.Error):
        cur.execute("PRAGMA shrink_memory")
