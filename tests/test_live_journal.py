"""The SQLite journal: durable group commit, bodies, snapshots, replay, crash safety.

Everything runs against real SQLite files in a temporary directory; the crash
test SIGKILLs a real writer process at random points.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine import codec
from engine.errors import JournalError
from engine.events import MessageSubmitted, Response, TimerFired
from engine.live.journal import (
    JOURNAL_FILE,
    Journal,
    iter_events,
    load_events,
    read_journal,
)
from engine.reply import Reply
from tests.support.sqlite_memory import sqlite_memory_used

ROOT = Path(__file__).resolve().parent.parent


def msg(i: int, at: float = 1000.0) -> MessageSubmitted:
    return MessageSubmitted(at=at + i, id=f"m{i}", sender="s@a.example",
                            recipients=(f"r{i}@b.example",), size=10 + i, tenant="t")


def test_append_sync_body_and_replay_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        assert j.last_seq == 0
        assert j.append_sync([msg(1)], {"m1": b"body one"}) == 1
        assert j.append_sync([msg(2), TimerFired(at=5.0, timer=("conn", 3))], {"m2": b"two"}) == 3
        assert j.body("m1") == b"body one"
    with Journal(path) as j:
        assert j.last_seq == 3
        snap, events = j.replay()
        assert snap is None
        assert list(events) == [msg(1), msg(2), TimerFired(at=5.0, timer=("conn", 3))]
        assert j.body("m2") == b"two"
        assert j.append_sync([msg(3)]) == 4


def test_file_is_wal_with_full_sync_and_plain_tables(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        j.append_sync([msg(1)], {"m1": b"x"})
        other = sqlite3.connect(path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = other.execute("SELECT seq, at, kind, time FROM event_log").fetchall()
        assert rows == [(1, 1001.0, "MessageSubmitted", "1970-01-01 00:16:41.000")]
        blob = other.execute("SELECT data FROM events WHERE seq = 1").fetchone()[0]
        assert codec.decode_event(blob) == msg(1)
        assert dict(other.execute("SELECT key, value FROM meta")) == {
            "codec_version": "1", "schema": codec.SCHEMA_FINGERPRINT.hex()}
        other.close()


def test_async_appends_are_group_committed_and_visible_when_acknowledged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    seen_after_ack: list[bool] = []

    async def appender(i: int) -> int:
        seq = await j.append([msg(i)], bodies={f"m{i}": b"%d" % i})
        probe = sqlite3.connect(path)
        row = probe.execute("SELECT data FROM events WHERE seq = ?", (seq,)).fetchone()
        body = probe.execute("SELECT data FROM bodies WHERE id = ?", (f"m{i}",)).fetchone()
        probe.close()
        seen_after_ack.append(row is not None and body == (b"%d" % i,))
        return seq

    async def main() -> list[int]:
        return await asyncio.gather(*(appender(i) for i in range(1, 201)))

    seqs = asyncio.run(main())
    assert seqs == list(range(1, 201))  # order fixed at call time
    assert seen_after_ack == [True] * 200
    assert 1 <= j.commits < 200, j.commits  # several appends shared a commit
    j.close()
    assert [e["id"] for e in load_events(path)] == [f"m{i}" for i in range(1, 201)]


def test_max_batch_one_commits_each_append(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite", max_batch=1) as j:
        futures = [j.submit([msg(i)]) for i in range(20)]
        assert [f.result(10) for f in futures] == list(range(1, 21))
        assert j.commits == 20


def test_cancelled_awaiter_does_not_disturb_the_writer(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")

    async def main() -> int:
        first = j.append([msg(1)])
        first.cancel()
        return await j.append([msg(2)])

    assert asyncio.run(main()) == 2
    assert j.append_sync([msg(3)]) == 3
    j.close()
    assert [e["seq"] for e in load_events(tmp_path / "j.sqlite")] == [1, 2, 3]


def test_snapshots_replay_from_latest_and_keep_two(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        for i in range(1, 7):
            j.append_sync([msg(i)])
            if i % 2 == 0:
                assert j.write_snapshot(i, b"state-%d" % i).result(10) == i
        snap, events = j.replay()
        assert snap == b"state-6"
        assert list(events) == []
        j.append_sync([msg(7)])
        snap_seq, seq_events = j.replay_from_snapshot()
        assert snap_seq == (6, b"state-6")
        assert list(seq_events) == [(7, msg(7))]
        with pytest.raises(JournalError, match="snapshot seq 99 is not between 0 and the last"):
            j.write_snapshot(99, b"x")
    # the whole traffic, snapshots ignored (what `egress replay` reads)
    assert [seq for seq, _ in iter_events(path)] == [1, 2, 3, 4, 5, 6, 7]
    assert [ev for _, ev in iter_events(path, after=5)] == [msg(6), msg(7)]
    kept = sqlite3.connect(path).execute("SELECT seq FROM snapshots ORDER BY seq").fetchall()
    assert kept == [(4,), (6,)]


def test_drop_body_and_missing_body(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        j.append_sync([msg(1)], {"m1": b"x"})
        j.drop_body("m1").result(10)
        with pytest.raises(KeyError, match="no body for message 'm1'"):
            j.body("m1")
        # a drop queued before a re-insert of the same id must not win
        f1 = j.drop_body("m2")
        f2 = j.submit([msg(2)], {"m2": b"again"})
        f1.result(10), f2.result(10)
        assert j.body("m2") == b"again"


def test_user_errors_name_what_was_wrong(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=r"directory .*nope' does not exist"):
        Journal(tmp_path / "nope" / "j.sqlite")
    with pytest.raises(ValueError, match="max_batch must be >= 1 or None, not 0"):
        Journal(tmp_path / "j.sqlite", max_batch=0)
    j = Journal(tmp_path / "j.sqlite")
    with pytest.raises(JournalError, match="needs a running event loop; use append_sync"):
        j.append([msg(1)])
    with pytest.raises(JournalError, match=r"bodies must map message ids \(str\) to bytes"):
        j.append_sync([msg(1)], {"m1": "text"})  # type: ignore[dict-item]
    j.close()
    with pytest.raises(JournalError, match="is closed"):
        j.append_sync([msg(1)])
    j.close()  # idempotent
    with pytest.raises(JournalError, match="no journal at"):
        read_journal(tmp_path / "absent.sqlite")


def test_journal_from_another_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = 'deadbeef' WHERE key = 'schema'")
    con.commit()
    con.close()
    with pytest.raises(JournalError, match="written with schema 'deadbeef'; this build has"):
        Journal(path)


def _fail_events_while_flagged(path: Path) -> sqlite3.Connection:
    """A trigger that refuses every event insert while table `fail` has a row."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("CREATE TABLE fail (x)")
    con.execute("INSERT INTO fail VALUES (1)")
    con.execute("CREATE TRIGGER boom BEFORE INSERT ON events WHEN (SELECT count(*) FROM fail) "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    return con


def test_events_of_a_failed_commit_are_kept_and_written_when_commits_succeed(
        tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    con = _fail_events_while_flagged(path)
    first = j.submit([msg(1)])
    second = j.submit([msg(2)])
    deadline = time.monotonic() + 10
    while j.failures < 2:  # retried, still failing
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not first.done() and not second.done()
    con.execute("DELETE FROM fail")  # the disk has room again
    assert first.result(10) == 1 and second.result(10) == 2
    assert j.failures == 0
    assert j.append_sync([msg(3)]) == 3
    j.close()
    con.close()
    _, events = read_journal(path)
    assert [ev.id for _, ev in events] == ["m1", "m2", "m3"]  # type: ignore[attr-defined]


def test_a_failed_accept_fails_alone_and_is_never_retried(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"

    async def go() -> None:
        with Journal(path) as j:
            con = sqlite3.connect(path, isolation_level=None)
            con.execute("CREATE TRIGGER boom BEFORE INSERT ON inbox WHEN NEW.id = 'm1' "
                        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
            with pytest.raises(JournalError, match="commit failed: disk on fire"):
                await j.accept(msg(1), b"one")
            assert await j.accept(msg(2), b"two") == 0
            assert [ev.id for ev in j.inbox()] == ["m2"]
            await asyncio.wrap_future(j.submit([msg(2)]))  # its event leaves the inbox
            assert j.inbox() == []
            assert j.body("m2") == b"two"
            with pytest.raises(KeyError):
                j.body("m1")
            con.close()

    asyncio.run(go())


def test_closing_while_commits_fail_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    con = _fail_events_while_flagged(path)
    kept = j.submit([msg(1)])
    j.close()
    with pytest.raises(JournalError, match="closed while commits were failing"):
        kept.result(10)
    con.close()


def test_corrupt_row_is_reported_with_its_seq(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        j.append_sync([msg(1), Response(at=2.0, conn=1, reply=Reply(code=250))])
    con = sqlite3.connect(path)
    con.execute("UPDATE events SET data = x'ee00' WHERE seq = 2")
    con.commit()
    con.close()
    _, events = read_journal(path)
    with pytest.raises(JournalError, match="event seq 2: unknown event tag 238 at offset 0"):
        list(events)


def test_in_spool_creates_the_directory(tmp_path: Path) -> None:
    with Journal.in_spool(tmp_path / "spool" / "a") as j:
        assert j.path == tmp_path / "spool" / "a" / JOURNAL_FILE
        j.append_sync([msg(1)])
    rows = load_events(tmp_path / "spool" / "a" / JOURNAL_FILE)
    assert rows[0]["recipients"] == ("r1@b.example",)


WRITER = textwrap.dedent("""
    import asyncio, os, sys
    from engine.events import MessageSubmitted
    from engine.live.journal import Journal

    async def main(path, run):
        j = Journal(path)
        # one write(2) per line, under PIPE_BUF: a line is all there or not at all
        os.write(1, f"open {j.last_seq}\\n".encode())

        async def worker(w):
            k = 0
            while True:
                k += 1
                mid = f"r{run}w{w}k{k}"
                ev = MessageSubmitted(at=float(k), id=mid, sender="s@a.example",
                                      recipients=("x@b.example",), size=k)
                seq = await j.append([ev], bodies={mid: mid.encode() * 3})
                os.write(1, f"{seq} {mid}\\n".encode())

        await asyncio.gather(*(worker(w) for w in range(8)))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_sigkill_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "crash.sqlite"
    rng = random.Random(6)
    acked: dict[int, str] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(run)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # Kill it while it writes: counted from its "open" line, not from the
        # spawn, since starting Python takes long on a loaded machine.
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(b"open"), (first, proc.stderr.read() if proc.stderr else b"")
        time.sleep(rng.uniform(0.3, 0.9))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err.decode()
        lines = out.decode().split("\n")[:-1]  # a line without its newline was not printed
        for line in lines:
            if not line.startswith("open"):
                seq, mid = line.split()
                acked[int(seq)] = mid
    assert len(acked) > 100, f"the writer acknowledged only {len(acked)} appends"
    with Journal(path) as j:
        _, events = j.replay_from_snapshot()
        stored = {seq: ev for seq, ev in events}
        # commits are atomic and in order: what survived is 1..N with no gap
        assert sorted(stored) == list(range(1, len(stored) + 1))
        for seq, mid in acked.items():
            ev = stored[seq]
            assert isinstance(ev, MessageSubmitted)
            assert ev.id == mid
            assert j.body(mid) == mid.encode() * 3


def test_back_to_back_drops_share_a_request_and_keep_their_order(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        j.append_sync([msg(1), msg(2), msg(3)], {"m1": b"1", "m2": b"2", "m3": b"3"})
        with j._cond:  # the writer cannot take anything while this (re-entrant) lock is held
            f1 = j.drop_body("m1")
            f2 = j.drop_body("m2")
            f3 = j.submit([msg(4)], {"m4": b"4", "m1": b"again"})  # after the drops: wins
            f4 = j.drop_body("m3")
            assert f1 is f2 and f3 is not f1 and f4 is not f3
            assert len(j._pending) == 3
        assert (f1.result(10), f3.result(10), f4.result(10)) == (3, 4, 4)
        assert j.body("m1") == b"again" and j.body("m4") == b"4"
        for gone in ("m2", "m3"):
            with pytest.raises(KeyError):
                j.body(gone)
        with pytest.raises(JournalError, match="drop_body needs a message id"):
            j.drop_body(7)  # type: ignore[arg-type]



def test_release_memory_hands_back_the_page_caches(tmp_path: Path) -> None:
    """Issue 13.6: after a burst both connections' page caches are full; the
    reap sweep's `release_memory` empties them (the writer's on its thread),
    and the journal keeps working."""
    with Journal(tmp_path / "j.sqlite") as j:
        body = bytes(4000)
        for i in range(0, 2000, 100):
            j.append_sync([msg(k) for k in range(i, i + 100)],
                          {f"m{k}": body for k in range(i, i + 100)})
        for k in range(2000):
            assert j.body(f"m{k}") == body  # the reader's cache fills too
        full = sqlite_memory_used()
        if full is None:
            pytest.skip("sqlite3_memory_used is not available from this SQLite")
        j.release_memory()
        j.append_sync([msg(2001)], {"m2001": b"after"})  # after the writer's turn
        released = sqlite_memory_used()
        assert released is not None and released < full - 2_000_000, (full, released)
        assert j.body("m2001") == b"after" and j.body("m7") == body
