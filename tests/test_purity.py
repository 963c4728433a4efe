"""The core is pure: no I/O, clock or global randomness outside engine/live.

import-linter (run by scripts/test.sh) checks imports module by module; this
test also catches what an import check cannot see: calls to the `random`
module's global functions, which share one hidden, unseeded generator.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN_MODULES = {
    "asyncio", "socket", "ssl", "OpenSSL", "dns", "simpy", "selectors", "sqlite3",
    "time", "threading", "aiosmtpd", "sim",
}
RANDOM_GLOBALS = {
    "random", "choice", "choices", "shuffle", "uniform", "randint", "randrange",
    "sample", "gauss", "seed", "expovariate", "lognormvariate", "normalvariate",
}


def core_files() -> list[pathlib.Path]:
    files = [p for p in (ROOT / "engine").rglob("*.py") if "live" not in p.parts]
    return [p for p in files if p.name != "cli.py"]


def violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append(f"from {node.module} import ...")
            if top == "random":
                found.extend(
                    f"from random import {a.name}" for a in node.names if a.name in RANDOM_GLOBALS
                )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
            and node.func.attr in RANDOM_GLOBALS
        ):
            found.append(f"random.{node.func.attr}()")
    return found


def test_detector_catches_each_kind_of_impurity() -> None:
    assert violations("import socket") == ["import socket"]
    assert violations("from time import monotonic") == ["from time import ..."]
    assert violations("import random\nrandom.shuffle(x)") == ["random.shuffle()"]
    assert violations("from random import choice") == ["from random import choice"]
    assert violations("import random\nrng = random.Random(3)") == []


def test_core_is_pure() -> None:
    files = core_files()
    assert files, "no core modules found"
    bad = {
        str(p.relative_to(ROOT)): v for p in files if (v := violations(p.read_text()))
    }
    assert bad == {}
