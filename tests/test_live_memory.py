"""engine.live.memory: `egress deliver` runs on jemalloc, and a reaped burst's
memory goes back to the system.

Pymalloc returns a 1 MiB arena only when every object in it is gone, so a
few objects kept from a burst keep most of its memory resident; jemalloc's
slabs are a few pages, and `trim` purges every unused one.  The burst below
has that shape: 200 k small objects, one in 4,000 kept.
"""

from __future__ import annotations

import _abc
import gc
import json
import os
import pickle
import subprocess
import sys
import weakref
from collections.abc import Mapping
from pathlib import Path

import pytest

from bench.peers import wait_listening
from engine import make_egress_path
from engine.errors import ConfigError
from engine.events import MessageSubmitted
from engine.live import memory
from engine.live.journal import Journal
from tests.support.live_harness import free_port
from tests.support.sqlite_memory import sqlite_memory_used

ROOT = Path(__file__).resolve().parents[1]
HAS_JEMALLOC = memory._find_jemalloc() is not None
needs_jemalloc = pytest.mark.skipif(not HAS_JEMALLOC, reason="jemalloc is not installed "
                                    "(Debian: libjemalloc2, which redis-server brings)")

_BURST = """\
import gc, json, os, re, sys
from engine.live.memory import allocator, trim, use_allocator

use_allocator(sys.argv[1])  # re-executes this script on jemalloc, same pid

def rss():
    text = open("/proc/self/status").read()
    return int(re.search(r"^VmRSS:\\s+(\\d+) kB$", text, re.M).group(1)) * 1024

gc.collect(); trim()
before = rss()
burst = [(f"d{i}.reap.test", i * 1.5, [i]) for i in range(200_000)]
peak = rss()
kept = burst[::4_000]
del burst
gc.collect(); trim()
print(json.dumps({"allocator": allocator(), "pid": os.getpid(), "before": before,
                  "peak": peak, "after": rss(), "kept": len(kept),
                  "preload": os.environ.get("LD_PRELOAD"),
                  "pythonmalloc": os.environ.get("PYTHONMALLOC")}))
"""


def _burst(choice: str) -> dict[str, object]:
    proc = subprocess.Popen([sys.executable, "-c", _BURST, choice], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    got: dict[str, object] = json.loads(out)
    assert got["pid"] == proc.pid  # re-executed in place, not a child
    return got


@needs_jemalloc
def test_a_burst_kept_sparsely_goes_back_to_the_system_on_jemalloc() -> None:
    got = _burst("jemalloc")
    assert got["allocator"] == "jemalloc"
    # the environment is put back: a child of the service is not run on it
    assert got["preload"] is None and got["pythonmalloc"] is None
    before, peak, after = (int(got[k]) for k in ("before", "peak", "after"))  # type: ignore[call-overload]
    assert peak - before > 20 * 2**20
    assert after - before < 0.15 * (peak - before), got


def test_pymalloc_keeps_the_arenas_of_a_burst_kept_sparsely() -> None:
    """Why jemalloc: the same burst on CPython's own allocator stays resident."""
    got = _burst("pymalloc")
    assert got["allocator"] == "pymalloc"
    before, peak, after = (int(got[k]) for k in ("before", "peak", "after"))  # type: ignore[call-overload]
    assert after - before > 0.5 * (peak - before), got


@needs_jemalloc
@pytest.mark.parametrize("choice", ["auto", "pymalloc"])
def test_egress_deliver_runs_on_the_allocator_asked_for(tmp_path: Path, choice: str) -> None:
    policy = tmp_path / "policy.py"
    policy.write_text("from engine import Policy\npolicy = Policy()\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "deliver", "--policy", str(policy),
         "--spool", str(tmp_path / "spool"), "--listen", f"127.0.0.1:{port}",
         "--allocator", choice], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening("127.0.0.1", port, 30.0, proc)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert ("libjemalloc" in maps) == (choice == "auto")


def test_jemalloc_asked_for_where_it_is_missing_is_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_find_jemalloc", lambda: None)
    monkeypatch.delenv("EGRESS_ALLOCATOR_ENV", raising=False)
    if memory.allocator() == "jemalloc":
        pytest.skip("this test process already runs on jemalloc")
    with pytest.raises(ConfigError, match=r"--allocator jemalloc: libjemalloc\.so\.2 is not"):
        memory.use_allocator("jemalloc")
    memory.use_allocator("auto")  # falls back to pymalloc: returns, no re-execution
    with pytest.raises(ConfigError, match=r"--allocator: 'tcmalloc' is not one of"):
        memory.use_allocator("tcmalloc")


def _submitted(i: int) -> MessageSubmitted:
    return MessageSubmitted(at=1000.0 + i, id=f"m{i}", sender="s@example.com",
                            recipients=("r@example.net",), size=4)



def test_a_snapshot_written_is_not_kept_in_sqlites_memory(tmp_path: Path) -> None:
    """A snapshot taken during a burst is megabytes; bound as a parameter it
    stayed in SQLite's memory (a statement keeps its bindings) until the next
    snapshot, after the reap's `release_memory` too."""
    data = os.urandom(6_000_000)
    with Journal(tmp_path / "j.sqlite") as j:
        j.append_sync([_submitted(1)], {"m1": b"body"})
        j.release_memory()
        j.append_sync([_submitted(2)], {"m2": b"body"})  # after the writer's turn
        before = sqlite_memory_used()
        if before is None:
            pytest.skip("sqlite3_memory_used is not available from this SQLite")
        j.write_snapshot(2, data).result(30)
        j.release_memory()
        j.append_sync([_submitted(3)], {"m3": b"body"})
        after = sqlite_memory_used()
        assert after is not None and after - before < 1_000_000, (before, after)
        snap, events = j.replay_from_snapshot()
        assert snap == (2, data)
        assert [e.id for _, e in events] == ["m3"]  # type: ignore[attr-defined]


def _weakrefs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is weakref.ref)


def test_a_burst_of_commits_and_reads_leaves_no_weak_references_behind(tmp_path: Path) -> None:
    """`Connection.execute` makes a cursor per call and the connection keeps a
    weak reference to each until it sweeps them, 200 cursors later: after a
    burst, up to 200 small objects made mid-burst, each pinning an allocator
    page.  The journal keeps one cursor per connection instead."""
    with Journal(tmp_path / "j.sqlite") as j:
        j.append_sync([_submitted(0)], {"m0": b"body"})
        assert j.body("m0") == b"body"
        before = _weakrefs()
        for i in range(1, 150):
            j.append_sync([_submitted(i)], {f"m{i}": b"body"})
            assert j.body(f"m{i}") == b"body"
        assert _weakrefs() - before < 20
        with pytest.raises(KeyError, match="no body for message 'nope'"):
            j.body("nope")


def test_pickling_path_configs_leaves_abcs_caches_alone() -> None:
    """Every live snapshot pickles every path's config; an `isinstance(v,
    Mapping)` per field filled abc's caches with weak references to the
    fields' types, made mid-burst and kept (see the test above)."""
    cfg = make_egress_path(additional_connection_limits={"shared": 4}, connection_limit=3)
    Mapping._abc_caches_clear()  # type: ignore[attr-defined]
    for sub in Mapping.__subclasses__():
        sub._abc_caches_clear()  # type: ignore[attr-defined]
    data = pickle.dumps(cfg)
    _, cache, negative, _ = _abc._get_dump(Mapping)  # type: ignore[attr-defined]
    assert not cache and not negative
    back = pickle.loads(data)  # validated again on the way in (at a restart)
    assert back == cfg and dict(back.additional_connection_limits) == {"shared": 4}
