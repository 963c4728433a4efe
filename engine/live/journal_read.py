"""Reading a journal file: replay, the whole traffic, rows for a notebook.

Kept apart from the writer (`engine.live.journal`) because reading needs none
of its threads or futures: these functions open their own read-only
connection, read inside one read transaction (so a snapshot and the events
after it agree even while a writer is running), and decode in batches of rows
with the core's codec.  A row that does not decode raises `JournalError`
naming its seq.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine import codec
from engine.errors import JournalError
from engine.events import Event

_READ_BATCH = 4096


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the journal at `path` (autocommit; waits up to 10 s on a lock)."""
    try:
        if read_only:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False, isolation_level=None)
        else:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {str(path)!r}: {exc}") from None
    return conn


def _events_after(conn: sqlite3.Connection, after: int) -> Iterator[tuple[int, Event]]:
    try:
        cur = conn.execute("SELECT seq, data FROM events WHERE seq > ? ORDER BY seq", (after,))
        while rows := cur.fetchmany(_READ_BATCH):
            try:
                decoded = list(codec.decode_many([r[1] for r in rows]))
            except JournalError as exc:
                bad = next(s for s, d in rows if _undecodable(d))
                raise JournalError(f"journal event seq {bad}: {exc}") from None
            yield from zip([r[0] for r in rows], decoded, strict=True)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _undecodable(data: bytes) -> bool:
    try:
        codec.decode_event(data)
    except JournalError:
        return True
    return False


def read_journal(
    path: str | Path,
) -> tuple[tuple[int, bytes] | None, Iterator[tuple[int, Event]]]:
    """Open a journal file read-only: its latest snapshot and the (seq, event)s after it.

    Both come from one read transaction, so they agree even while a writer runs.
    """
    path = Path(path)
    if not path.is_file():
        raise JournalError(f"no journal at {str(path)!r}")
    conn = connect(path, read_only=True)
    try:
        conn.execute("BEGIN")
        snap = conn.execute("SELECT seq, data FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise JournalError(f"cannot read journal {str(path)!r}: {exc}") from None
    after = 0 if snap is None else snap[0]
    return (None if snap is None else (snap[0], bytes(snap[1]))), _events_after(conn, after)


def iter_events(path: str | Path, after: int = 0) -> Iterator[tuple[int, Event]]:
    """Every (seq, event) after seq `after`, in order, snapshots ignored.

    What `egress replay` and analyses want: the whole traffic, not the state.
    """
    path = Path(path)
    if not path.is_file():
        raise JournalError(f"no journal at {str(path)!r}")
    conn = connect(path, read_only=True)
    conn.execute("BEGIN")
    return _events_after(conn, after)


def load_events(path: str | Path, after: int = 0) -> list[dict[str, Any]]:
    """Every event after seq `after` as a dict (``seq``, ``kind``, then its fields).

    For notebooks: ``pandas.DataFrame(load_events("spool/journal.sqlite"))``.
    Nested values (a Reply, MX records) become dicts and lists of dicts.
    """
    out = []
    for seq, ev in iter_events(path, after):
        row: dict[str, Any] = {"seq": seq, "kind": type(ev).__name__}
        row.update(dataclasses.asdict(ev))
        out.append(row)
    return out


def engine_from_spool(spool: str | Path, policy: Any) -> Any:
    """The engine a spool's journal folds to (its latest snapshot, then the events
    after it) with `policy`: what a restart would rebuild, read-only, so `egress
    check --spool` can show the state of a running or stopped service."""
    from engine.engine import Engine
    from engine.errors import ProtocolError

    path = Path(spool)
    snap, events = read_journal(path / "journal.sqlite" if path.is_dir() else path)
    eng = Engine.restore(snap[1], policy) if snap is not None else Engine(policy)
    for seq, ev in events:
        try:
            eng.handle(ev)
        except ProtocolError as exc:
            raise JournalError(f"{str(path)!r}: the journal does not replay under this policy "
                               f"at event {seq} ({exc}); were the policy or the shaping files "
                               "changed since those events?") from None
    return eng
