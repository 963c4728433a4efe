"""Lua policy hooks against Python ones: the cost of one hook call, and of a run.

What is timed is the call the engine makes (`Policy.egress_path_config` and
its three siblings), so each figure includes the seam's checks, the Lua call
through lupa, the conversion of the Lua table to keyword arguments and the
Python maker's validation; the Python figure is the same call on the Python
twin.  Three policies are compared:

* **minimal**: the reference page's first example (``kumo.make_egress_path {
  connection_limit = 32 }``) against ``make_egress_path(connection_limit=32)``;
* **example**: examples/kumomta/init.lua against examples/kumomta/twin.py,
  each of the four hooks with the arguments a simulation passes;
* **changing table**: a path hook whose table differs on every call, so the
  Lua maker converts and validates each time (no value built before is reused);
* **simulation**: scenarios/kumomta_policy.toml simulated with each policy,
  policy loading included (the engine caches hook answers, so this shows
  what the difference is worth in a run).

Rounds alternate Lua and Python so that machine noise falls on both; the
median of the rounds is reported, and the ratio Lua / Python.

    python -m bench.lua            # 7 rounds of 20,000 calls per hook
    python -m bench.lua --quick    # 3 rounds of 2,000 calls
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import make_egress_path
from engine.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "kumomta" / "init.lua"
TWIN = ROOT / "examples" / "kumomta" / "twin.py"
SCENARIO = ROOT / "scenarios" / "kumomta_policy.toml"

MINIMAL_LUA = """
local kumo = require 'kumo'
kumo.on('get_egress_path_config', function(domain, source_name, site_name)
  return kumo.make_egress_path {
    connection_limit = 32,
  }
end)
"""

# A hook whose table differs on every call, so no built value is reused: what
# a Lua hook costs when the maker must convert and validate every time.
CHANGING_LUA = """
local kumo = require 'kumo'
local n = 0
kumo.on('get_egress_path_config', function(domain, source_name, site_name)
  n = n + 1
  return kumo.make_egress_path {
    connection_limit = n,
  }
end)
"""

# (label, method name, arguments) for the example policy's four hooks.
CALLS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("get_egress_path_config", "egress_path_config", ("gmail.com", "ip-2", "gmail-smtp-in")),
    ("get_queue_config", "queue_config", ("gmail.com", "acme", "spring-news", "")),
    ("get_egress_source", "egress_source", ("ip-1",)),
    ("get_egress_pool", "egress_pool", ("bulk",)),
)


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def alternate(lua: Callable[[], Any], py: Callable[[], Any], n: int, rounds: int
              ) -> tuple[float, float]:
    """Median µs per call of `lua` and `py`, rounds alternating which goes first."""
    lua(), py()  # warm both (lazy imports, first-call caches)
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        if r % 2:
            b.append(per_call_us(py, n))
            a.append(per_call_us(lua, n))
        else:
            a.append(per_call_us(lua, n))
            b.append(per_call_us(py, n))
    return statistics.median(a), statistics.median(b)


def minimal_policies() -> tuple[Policy, Policy]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "init.lua"
        path.write_text(MINIMAL_LUA)
        lua = Policy.from_file(path)
    py = Policy()

    @py.on("get_egress_path_config")
    def path_config(domain: str, source_name: str, site_name: str) -> Any:
        return make_egress_path(connection_limit=32)

    return lua, py


def changing_policies() -> tuple[Policy, Policy]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "init.lua"
        path.write_text(CHANGING_LUA)
        lua = Policy.from_file(path)
    py = Policy()
    calls = [0]

    @py.on("get_egress_path_config")
    def path_config(domain: str, source_name: str, site_name: str) -> Any:
        calls[0] += 1
        return make_egress_path(connection_limit=calls[0])

    return lua, py


def simulations(rounds: int) -> tuple[float, float]:
    """Median wall seconds of the scenario with init.lua and with its twin,
    after one untimed run of each (imports, first-call caches)."""
    import sim

    lua = sim.Scenario.from_toml(SCENARIO)
    py = sim.Scenario.from_toml(SCENARIO, ["policy=../examples/kumomta/twin.py"])

    def once(scenario: Any) -> float:
        started = time.perf_counter()
        sim.run(scenario, keep_records=False)
        return time.perf_counter() - started

    once(lua), once(py)
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        first, second = (lua, py) if r % 2 == 0 else (py, lua)
        x, y = once(first), once(second)
        a.append(x if first is lua else y)
        b.append(y if first is lua else x)
    return statistics.median(a), statistics.median(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lua", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2,000 calls")
    args = parser.parse_args(argv)
    n, rounds = (2_000, 3) if args.quick else (20_000, 7)

    print(f"Lua policy hooks vs Python hooks ({rounds} alternated rounds of {n:,} calls, "
          "median µs per call)")
    print(f"  {'hook':<36} {'Lua':>8} {'Python':>8} {'ratio':>7}")
    lua, py = minimal_policies()
    args3 = ("example.com", "unspecified", "mx.example.com")
    a, b = alternate(lambda: lua.egress_path_config(*args3),
                     lambda: py.egress_path_config(*args3), n, rounds)
    print(f"  {'minimal get_egress_path_config':<36} {a:8.2f} {b:8.2f} {a / b:6.2f}x")
    lua, py = changing_policies()
    a, b = alternate(lambda: lua.egress_path_config(*args3),
                     lambda: py.egress_path_config(*args3), n, rounds)
    print(f"  {'changing table get_egress_path_config':<36} {a:8.2f} {b:8.2f} {a / b:6.2f}x")
    lua, py = Policy.from_file(EXAMPLE), Policy.from_file(TWIN)
    for label, method, call_args in CALLS:
        lua_call = getattr(lua, method)
        py_call = getattr(py, method)
        a, b = alternate(lambda f=lua_call, c=call_args: f(*c),
                         lambda f=py_call, c=call_args: f(*c), n, rounds)
        print(f"  {'example ' + label:<36} {a:8.2f} {b:8.2f} {a / b:6.2f}x")

    lua_s, py_s = simulations(2 if args.quick else 5)
    print(f"  {'simulation kumomta_policy.toml (s)':<36} {lua_s:8.2f} {py_s:8.2f} "
          f"{lua_s / py_s:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
