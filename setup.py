"""An optional compiled build of the engine's hot modules (mypyc).

`pip install .` and `pip install -e .` install pure Python, as they always
did: the metadata is in pyproject.toml, and this file adds extension modules
only when asked.  ``EGRESS_COMPILE=1 pip install --no-build-isolation .``
(mypy, from the ``test`` extra, and ``wheel`` installed; a C compiler) also
compiles the modules listed in `COMPILED` with mypyc.  Should anything in that go wrong (no
mypy, no C compiler, a mypyc error), the install goes on in pure Python and
says why in one line: the compiled modules are all or nothing, since mypyc's
per-module stubs need its shared library.

The Python sources stay the source.  The compiled modules shadow them only
in a non-editable install; the suite runs against the sources
(`scripts/test.sh` uses the editable install).  `scripts/build_compiled.sh`
builds a compiled copy beside the checkout for benchmarks, pure and compiled
alternated in one run.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The pure core's hot modules, and the value modules they build and read on
# every event (events, effects, reply, session_outcomes, session_model):
# compiled, those are native classes, read natively by the compiled modules
# and built without __init__ by `engine.makers`.  What differs in the compiled
# build: a value class refuses a field of the wrong type with mypyc's
# TypeError before its __post_init__ can name it (external input is checked
# before an event is made: the journal codec, the live driver's parsers);
# pickle and copy need `engine.snapshot`'s reducer for them; the journal
# codec reads their field types from their source (mypyc erases them).
# Left out on purpose: `throttle`, whose constructor must refuse a bad limit
# with its ConfigError (compiled code raises TypeError first), and which
# configs hold (pickled, where a compiled frozen class needs help).  `backlog` and
# `overflow` (the lazy backlog of a blast) are last: their array and numpy work
# gains nothing compiled, but a blast's first re-delay of each message
# (`Backlog.add`, `OverflowWheel.add_one`) is a native call from `engine.flow`
# instead of interpreted Python.
COMPILED = [
    "engine/core.py",
    "engine/engine.py",
    "engine/timer_events.py",
    "engine/dispatch.py",
    "engine/flow.py",
    "engine/full_queue.py",
    "engine/lifecycle.py",
    "engine/outcomes.py",
    "engine/session.py",
    "engine/session_data.py",
    "engine/session_setup.py",
    "engine/session_txn.py",
    "engine/ready.py",
    "engine/scheduled.py",  # its due times stay one boxed float each (`add`)
    "engine/message.py",
    "engine/records.py",
    "engine/metrics.py",
    "engine/mxplan.py",
    "engine/lookups.py",
    "engine/domains.py",
    "engine/retry.py",
    "engine/events.py",
    "engine/effects.py",
    "engine/reply.py",
    "engine/session_outcomes.py",
    "engine/session_model.py",
    "engine/makers.py",
    "engine/overflow.py",
    "engine/backlog.py",
    "engine/resolve.py",  # a blast's parked messages are promoted from its loop
    # The simulator's per-message modules: compiled, the driver reads the
    # engine's effects and the world's replies natively, and calls the world,
    # the hosts and the observer without Python's call path (a blast message:
    # 195 k -> 139 k instructions, alone).  A compiled class cannot be subclassed by
    # interpreted code: the tests' own worlds (subclasses of `World`) run
    # against the sources, as the whole suite does.
    "sim/driver.py",
    "sim/driver_conns.py",
    "sim/world.py",
    "sim/host_behaviour.py",
    "sim/host_replies.py",
    "sim/observer.py",
    "sim/traffic.py",
    "sim/distributions.py",
    "sim/nodes.py",
    "sim/connections.py",
]


def _say(text: str) -> None:
    print(f"egress setup: {text}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python on any build error."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any failure means: install pure Python
            _say(f"compiling failed ({type(exc).__name__}: {exc}); installing pure Python")
            for ext in self.extensions:
                built = self.get_ext_fullpath(ext.name)
                if os.path.exists(built):
                    os.remove(built)
            self.extensions = []


def _extensions() -> list[Any]:
    if os.environ.get("EGRESS_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        _say(f"EGRESS_COMPILE=1 but mypyc cannot be imported ({exc}); installing pure Python "
             "(install mypy and use pip's --no-build-isolation)")
        return []
    try:
        return list(mypycify(COMPILED, opt_level="3"))
    except BaseException as exc:  # mypyc exits (SystemExit) on a type error
        _say(f"mypyc failed ({type(exc).__name__}: {exc}); installing pure Python")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
