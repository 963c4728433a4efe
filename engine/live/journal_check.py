"""``egress journal check SPOOL`` and ``egress journal salvage SPOOL OUT``.

`check` reads a spool's journal without writing to it and says, one line
each, what it holds and what is wrong: SQLite's integrity check, events that
do not decode, gaps in the sequence, and less than the high-water mark
(`engine.live.journal_mark`) says was committed.  `salvage` copies whatever
is readable (events row by row, bodies, the inbox, snapshots) into a new
spool that `egress deliver` opens as it is; what it could not read is
counted, never invented.  The files a spool keeps beside its journal (the
policy and its modules, the ``--shaping`` copies, the node id:
`engine.live.spool_files`, `engine.live.nodeid`) are copied too, since a
restart and a replay fold the journal with them: without them the salvaged
spool would be decided again under whatever policy is given next.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from engine import codec
from engine.errors import JournalError
from engine.live.journal import JOURNAL_FILE, Journal
from engine.live.journal_mark import Mark, MarkFile, loss, mark_path, read_mark
from engine.live.private_files import private_dir, replace_file

__all__ = ["check", "salvage"]

_PROBE_MISSES = 1000  # seqs read one by one past the last one found, when scanning fails


def _open(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise JournalError(f"no journal at {str(db)!r}")
    try:
        return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {str(db)!r}: {exc}") from None


def _events(conn: sqlite3.Connection, bad: list[str]) -> Iterator[tuple[int, float, str, bytes]]:
    """Every readable event row; what cannot be read is noted in `bad`."""
    last = 0
    try:
        for row in conn.execute("SELECT seq, at, kind, data FROM events ORDER BY seq"):
            last = row[0]
            yield row
        return
    except sqlite3.Error as exc:
        bad.append(f"reading events after seq {last} failed ({exc}); reading one by one")
    seq, misses = last, 0
    while misses < _PROBE_MISSES:
        seq += 1
        try:
            row = conn.execute("SELECT seq, at, kind, data FROM events WHERE seq = ?",
                               (seq,)).fetchone()
        except sqlite3.Error:
            row = None
        if row is None:
            misses += 1
        else:
            misses = 0
            yield row


def _rows(conn: sqlite3.Connection, sql: str, bad: list[str], what: str) -> list[tuple]:  # type: ignore[type-arg]
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.Error as exc:
        bad.append(f"{what}: unreadable ({exc})")
        return []


def _accepted(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'accepted'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def check(spool: str | Path) -> tuple[list[str], bool]:
    """What the spool's journal holds, one line each, and whether it is sound."""
    db = Path(spool) / JOURNAL_FILE
    conn = _open(db)
    lines: list[str] = []
    bad: list[str] = []
    try:
        integrity = _rows(conn, "PRAGMA integrity_check", bad, "integrity check")
        if integrity and integrity[0][0] != "ok":
            bad.extend(f"integrity: {r[0]}" for r in integrity[:5])
        seqs: list[int] = []
        undecodable: list[int] = []
        for seq, _at, _kind, data in _events(conn, bad):
            seqs.append(seq)
            try:
                codec.decode_event(bytes(data))
            except JournalError:
                undecodable.append(seq)
        last = seqs[-1] if seqs else 0
        lines.append(f"events: {len(seqs)} readable, last seq {last}")
        missing = last - len(seqs)
        if missing:
            bad.append(f"events: {missing} missing below seq {last}")
        if undecodable:
            bad.append(f"events: {len(undecodable)} do not decode (first seq {undecodable[0]})")
        accepted = _accepted(conn)
        lost = loss(read_mark(mark_path(db)), Mark(last, accepted))
        if lost:
            bad.append(f"lacks {lost} that the high-water mark says were committed")
        for table in ("bodies", "inbox", "snapshots"):
            count = _rows(conn, f"SELECT count(*) FROM {table}", bad, table)
            if count:
                lines.append(f"{table}: {count[0][0]}")
    finally:
        conn.close()
    return lines + [f"problem: {b}" for b in bad], not bad


def salvage(spool: str | Path, out: str | Path) -> list[str]:
    """Copy what is readable of `spool`'s journal into a new spool `out`; one line each
    of what was copied and what was not."""
    db = Path(spool) / JOURNAL_FILE
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise JournalError(f"salvage target {str(target)!r} is not empty")
    source = _open(db)
    Journal.in_spool(target).close()  # the schema, the meta rows and a mark
    dest = sqlite3.connect(target / JOURNAL_FILE, isolation_level=None)
    bad: list[str] = []
    try:
        dest.execute("BEGIN")
        copied = skipped = last = 0
        for seq, at, kind, data in _events(source, bad):
            try:
                codec.decode_event(bytes(data))
            except JournalError:
                skipped += 1
                continue
            dest.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (seq, at, kind, data))
            copied, last = copied + 1, seq
        counts = {}
        for table in ("bodies", "inbox", "snapshots"):
            rows = _rows(source, f"SELECT * FROM {table}", bad, table)
            dest.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", rows)
            counts[table] = len(rows)
        accepted = _accepted(source)
        dest.execute("INSERT OR REPLACE INTO meta VALUES ('accepted', ?)", (str(accepted),))
        dest.execute("COMMIT")
    finally:
        source.close()
        dest.close()
    mark = MarkFile(mark_path(target / JOURNAL_FILE))
    mark.write(Mark(last, accepted))
    mark.close()
    lines = [f"events: {copied} copied, last seq {last}"
             + (f", {skipped} undecodable skipped" if skipped else "")]
    lines += [f"{table}: {n} copied" for table, n in counts.items()]
    kept = _copy_kept_files(Path(spool), target, bad)
    if kept:
        lines.append(f"kept files: {len(kept)} copied ({', '.join(kept)})")
    return lines + [f"problem: {b}" for b in bad]


def _is_journal_file(name: str) -> bool:
    """The journal's own files (the database, its WAL, shared memory and
    rollback journal, the mark), which salvage rebuilds rather than copies."""
    return name.startswith(JOURNAL_FILE)


def _copy_kept_files(spool: Path, target: Path, bad: list[str]) -> list[str]:
    """Copy every file of `spool` that is not the journal's own (nor a leftover
    temporary, named with a leading dot) into `target`, 0600 in 0700
    directories; their paths relative to the spool, sorted.  A file that cannot
    be read is noted in `bad` and the rest still copied."""
    copied = []
    for path in sorted(spool.rglob("*")):
        rel = path.relative_to(spool)
        if (not path.is_file() or any(part.startswith(".") for part in rel.parts)
                or (len(rel.parts) == 1 and _is_journal_file(rel.name))):
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            bad.append(f"{rel.as_posix()}: not copied ({exc.strerror or exc})")
            continue
        private_dir((target / rel).parent)
        replace_file(target / rel, data)
        copied.append(rel.as_posix())
    return copied
