"""The optional mypyc build (setup.py, scripts/build_compiled.sh) still builds
and runs the core, its engine's snapshot round-trips, and its simulator (whose
hot modules are compiled too) writes the same records and summary as the
Python sources.

The suite runs the Python source; this test compiles a copy and drives the
compiled engine through bench.core's realistic mix, so a change that mypyc
rejects or that breaks only when compiled (a class attribute whose default
does not match its annotation, which mypyc checks and CPython does not) fails
here instead of on an operator's machine.  Skipped where there is no C
compiler: egress installs and runs pure there, which is the point of keeping
the build optional.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from engine.codec import SCHEMA_FINGERPRINT

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(600)

PROBE = """
import sys
import engine.core, engine.engine, engine.events, engine.makers
import engine.backlog, engine.full_queue, engine.overflow, engine.resolve
import sim.driver, sim.driver_conns, sim.nodes, sim.observer, sim.world
from bench.core import per_event
for module in (engine.core, engine.engine, engine.events, engine.makers, engine.backlog,
               engine.full_queue, engine.overflow, engine.resolve,
               sim.driver, sim.driver_conns, sim.nodes, sim.observer, sim.world):
    assert module.__file__.endswith(".so"), module.__file__
# a blast's lazy backlog (engine.backlog, engine.overflow) is compiled: its wheel
# still restores exactly from its entries, and a backlog takes and gives back
import random
import numpy as np
from engine.overflow import OverflowWheel
w = OverflowWheel()
w.add(range(300), 5.0, random.Random(1))
copy = OverflowWheel()
copy.restore(w.entries())
assert copy.entries() == w.entries() and len(copy) == 300 and list(copy) == list(w)
bl = engine.backlog.Backlog(np.random.default_rng(1))
for i in range(50):
    bl.add(f"m{i}", 1000.0, 0.0, random.Random(i))
assert len(bl) == 50 and bl.next_due() is not None
admitted, counts, expired, again = bl.tick(61.0, 20)
assert len(admitted) == 20 and set(counts) == {1} and not expired and again >= 30
us, eps, _ = per_event(1_000, 4_000)
# the value classes are native: the makers build them without __init__, equal
# to what the checked constructors make
from engine.effects import Connect, Log, SetTimer
from engine.reply import EnhancedCode, Reply
m = engine.makers
assert m.make_log({"a": 1}) == Log(record={"a": 1}) and m.make_log({}).where is None
assert m.make_set_timer(("conn", 3), 2.5) == SetTimer(timer=("conn", 3), at=2.5)
assert m.make_connect(1, "h", "192.0.2.1", 25, "s") \
    == Connect(conn=1, host="h", address="192.0.2.1", port=25, source="s")
r = m.make_reply(451, "later", EnhancedCode(klass=4, subject=2, detail=0))
assert r == Reply.make(451, "4.2.0", "later") and hash(r) == hash(Reply.make(451, "4.2.0", "later"))
# and the events the simulator makes on every message
from engine.events import MessageSubmitted, Response, TimerFired
assert m.make_response(1.5, 7, r) == Response(at=1.5, conn=7, reply=r)
assert m.make_timer_fired(2.0, ("conn", 7)) == TimerFired(at=2.0, timer=("conn", 7))
assert m.make_message_submitted(0.0, "m1", "s@a.example", ("r@b.example",), 20, "t", "c") \
    == MessageSubmitted(at=0.0, id="m1", sender="s@a.example", recipients=("r@b.example",),
                        size=20, tenant="t", campaign="c")
# the journal codec reads the compiled classes' field types from their source:
# the same schema as the Python build, and the mix round-trips
import engine.codec as codec
assert codec.SCHEMA_FINGERPRINT.hex() == sys.argv[1], (codec.SCHEMA_FINGERPRINT.hex(), sys.argv[1])
from bench.core import Bench
mix = Bench()
mix.record = []
mix.workload(200)
assert list(codec.iter_decode(codec.encode_events(mix.record))) == mix.record
# a compiled engine has no __dict__ and its state classes take __init__
# arguments (engine.native): a snapshot must still round-trip
from bench.core import Bench
b = Bench()
b.workload(300)
twin = engine.engine.Engine.restore(b.eng.snapshot(), b.eng.policy)
assert twin.counters == b.eng.counters and twin.armed_timers() == b.eng.armed_timers()
assert (twin.ready_depths(), twin.scheduled_count, twin.queued_count, sorted(twin.ids)) \
    == (b.eng.ready_depths(), b.eng.scheduled_count, b.eng.queued_count, sorted(b.eng.ids))
assert engine.engine.Engine.restore(twin.snapshot(), b.eng.policy).counters == b.eng.counters
# the simulator's frozen values pickle (compiled, only through their __reduce__)
import pickle
from sim.distributions import LogNormal
from sim.scenario import Scenario
values = [Scenario.from_toml("scenarios/quickstart.toml").traffic, LogNormal(0.02, 0.25)]
assert pickle.loads(pickle.dumps(values)) == values
print(f"compiled {eps:.0f} events/s")
"""


_HEADERS = Path(sysconfig.get_paths()["include"]) / "Python.h"


@pytest.mark.skipif((shutil.which("cc") is None and shutil.which("gcc") is None)
                    or not _HEADERS.exists(),
                    reason="no C compiler or Python headers: the compiled build is optional")
def test_the_compiled_core_builds_and_runs_the_realistic_mix(tmp_path: Path) -> None:
    pytest.importorskip("mypyc")
    out = tmp_path / "compiled"
    build = subprocess.run(["bash", str(ROOT / "scripts" / "build_compiled.sh"), str(out)],
                           env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=540)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "modules compiled" in build.stdout
    # the Python build's journal schema (this process runs the sources)
    run = subprocess.run([sys.executable, "-c", PROBE, SCHEMA_FINGERPRINT.hex()], cwd=out,
                         capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(out), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("compiled "), run.stdout
    # the compiled simulator against the sources: one node, and four sharing limits
    for name in ("quickstart", "four_nodes"):
        ours = _simulate(ROOT, ROOT, tmp_path / f"{name}-py", name)
        theirs = _simulate(out, out, tmp_path / f"{name}-compiled", name)
        assert theirs == ours, name


def _simulate(cwd: Path, path: Path, into: Path, name: str) -> tuple[bytes, dict[str, Any]]:
    """`egress simulate` of a shipped scenario with every record written, run
    from `path` (a compiled copy, or the sources): its records.jsonl, and its
    summary less what depends on the machine (wall times)."""
    done = subprocess.run([sys.executable, "-m", "engine.cli", "simulate",
                           f"scenarios/{name}.toml", "--out", str(into), "--records", "all"],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((into / "summary.json").read_text())
    for key in [k for k in summary if "wall" in k or "elapsed" in k]:
        summary.pop(key)
    return (into / "records.jsonl").read_bytes(), summary
