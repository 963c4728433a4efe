"""engine.live.journal_mark and journal_check: a journal knows what it committed.

Real SQLite files: a WAL removed or overwritten with garbage after the writer
stopped without a checkpoint (as after kill -9), and a truncated database.
The journal refuses to open with one line naming what is missing, unless
told to accept the loss; ``egress journal check`` says what is wrong and
``egress journal salvage`` copies what is readable into a spool that opens.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import MessageSubmitted
from engine.live.journal import JOURNAL_FILE, Journal, JournalLossError, read_journal
from engine.live.journal_check import check, salvage
from engine.live.service import Service
from engine.policy import Policy

ROOT = Path(__file__).resolve().parent.parent


def msg(i: int) -> MessageSubmitted:
    return MessageSubmitted(at=1000.0 + i, id=f"m{i}", sender="s@a.example",
                            recipients=("r@b.example",), size=10)


def crashed_spool(tmp: Path, n: int = 20) -> tuple[Path, Journal]:
    """A spool whose journal committed `n` events, still open (its WAL not
    checkpointed), as a killed process leaves it."""
    spool = tmp / "live"
    journal = Journal.in_spool(spool)
    for i in range(1, n + 1):
        journal.append_sync([msg(i)], {f"m{i}": b"body"})
    return spool, journal


def copy_spool(spool: Path, to: Path, *, wal: bool) -> Path:
    to.mkdir()
    for name in (JOURNAL_FILE, JOURNAL_FILE + ".mark") + ((JOURNAL_FILE + "-wal",) if wal
                                                           else ()):
        shutil.copyfile(spool / name, to / name)
    return to


def test_a_lost_wal_is_refused_with_one_line(tmp_path: Path) -> None:
    spool, journal = crashed_spool(tmp_path)
    lost = copy_spool(spool, tmp_path / "lost", wal=False)
    journal.close()
    with pytest.raises(JournalLossError) as info:
        Journal.in_spool(lost)
    text = str(info.value)
    assert "\n" not in text
    assert "lacks events 1..20" in text and "--accept-loss" in text


def test_garbage_in_the_wal_is_refused(tmp_path: Path) -> None:
    spool, journal = crashed_spool(tmp_path)
    damaged = copy_spool(spool, tmp_path / "damaged", wal=True)
    journal.close()
    wal = damaged / (JOURNAL_FILE + "-wal")
    with open(wal, "r+b") as fh:  # 64 garbage bytes over the first frame's header and data
        fh.seek(32)
        fh.write(bytes(range(64)))
    with pytest.raises(JournalLossError, match=r"lacks events 1\.\.20"):
        Journal.in_spool(damaged)


def test_an_intact_journal_opens_and_accept_loss_opens_a_damaged_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool, journal = crashed_spool(tmp_path)
    lost = copy_spool(spool, tmp_path / "lost", wal=False)
    journal.close()
    with Journal.in_spool(spool) as again:  # closed cleanly: nothing lacking
        assert again.last_seq == 20
    with Journal.in_spool(lost, accept_loss=True) as accepted:
        assert accepted.last_seq == 0
    assert any("starting without them (--accept-loss)" in r.getMessage()
               for r in caplog.records)
    with Journal.in_spool(lost) as later:  # the loss was accepted once: the mark moved
        assert later.last_seq == 0


def test_deliver_on_a_journal_that_lost_its_wal_is_one_line(tmp_path: Path) -> None:
    spool, journal = crashed_spool(tmp_path)
    lost = copy_spool(spool, tmp_path / "lost", wal=False)
    journal.close()
    policy = tmp_path / "policy.py"
    policy.write_text("from engine.policy import Policy\npolicy = Policy()\n")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "deliver", "--policy",
                           str(policy), "--spool", str(lost), "--listen", "127.0.0.1:0",
                           "--resolver", "127.0.0.1:53"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "lacks events 1..20" in done.stderr

    async def accept() -> None:
        async with Service(Policy(), lost, listen=None, accept_loss=True) as svc:
            assert svc.recovered == 0

    asyncio.run(accept())


def test_check_and_salvage_a_lost_wal(tmp_path: Path) -> None:
    spool, journal = crashed_spool(tmp_path)
    damaged = copy_spool(spool, tmp_path / "damaged", wal=True)
    journal.close()
    wal = damaged / (JOURNAL_FILE + "-wal")
    wal.write_bytes(wal.read_bytes()[: len(wal.read_bytes()) // 2])  # half the WAL survives
    lines, ok = check(damaged)
    assert not ok
    assert any("the high-water mark says were committed" in line for line in lines)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "journal", "check",
                           str(damaged)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "problem:" in done.stdout
    out = tmp_path / "salvaged"
    report = salvage(damaged, out)
    copied = int(report[0].split()[1])
    assert 0 < copied < 20  # the first half of the WAL's commits
    assert check(out)[1] is True
    with Journal.in_spool(out) as j:
        assert j.last_seq == copied
    _, events = read_journal(out / JOURNAL_FILE)
    assert [ev.id for _, ev in events] == [f"m{i}" for i in range(1, copied + 1)]  # type: ignore[attr-defined]


def test_check_and_salvage_a_truncated_database(tmp_path: Path) -> None:
    spool = tmp_path / "live"
    with Journal.in_spool(spool) as journal:
        for i in range(1, 2001):
            journal.append_sync([msg(i)], {f"m{i}": b"b" * 200})
    db = spool / JOURNAL_FILE
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    _, ok = check(spool)
    assert not ok
    out = tmp_path / "salvaged"
    report = salvage(spool, out)
    assert report[0].startswith("events: ")
    assert check(out)[1] is True
    with Journal.in_spool(out):
        pass


def test_salvage_keeps_the_policy_shaping_files_and_node_id(tmp_path: Path) -> None:
    """A salvaged spool folds its journal under the files the service ran with:
    the policy and a Lua module beside it, the --shaping copies and their list,
    the node id; private, byte for byte; the damaged journal's WAL is not copied."""
    from engine.live.nodeid import kept_node_id, node_id
    from engine.live.spool_files import keep_policy, keep_shaping, kept_shaping

    spool, journal = crashed_spool(tmp_path)
    source = tmp_path / "conf"
    (source / "lib").mkdir(parents=True)
    (source / "policy.lua").write_text("local m = require 'lib.mod'\n")
    (source / "lib" / "mod.lua").write_text("return {}\n")
    keep_policy(spool, source / "policy.lua", ["lib/mod.lua"])
    keep_shaping(spool, [("/etc/shaping.toml", '["yahoo.com"]\nmax_connection_rate = "5/min"\n')])
    node = node_id(spool)
    damaged = copy_spool(spool, tmp_path / "damaged", wal=True)
    for name in ("policy.lua", "lib", "shaping", "nodeid"):
        src = spool / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, damaged / name)
    journal.close()
    out = tmp_path / "salvaged"
    report = salvage(damaged, out)
    assert report[-1] == ("kept files: 5 copied (lib/mod.lua, nodeid, policy.lua, "
                          "shaping/files.json, shaping/shaping.17bb4f44c44f.toml)")
    assert (out / "policy.lua").read_bytes() == (source / "policy.lua").read_bytes()
    assert (out / "lib" / "mod.lua").read_text() == "return {}\n"
    assert (out / "lib" / "mod.lua").stat().st_mode & 0o777 == 0o600
    assert (out / "lib").stat().st_mode & 0o777 == 0o700
    kept = kept_shaping(out)
    assert kept is not None and [(k.file, k.text) for k in kept] == [
        (k.file, k.text) for k in kept_shaping(damaged) or []]
    assert kept_node_id(out) == node
    assert check(out)[1] is True  # the journal rebuilt, not the damaged one's files copied
    with Journal.in_spool(out) as j:
        assert j.last_seq == 20
