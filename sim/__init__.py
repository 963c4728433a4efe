"""The SimPy driver: the same Engine on a simulated clock, against a simulated world.

Public names are re-exported lazily (as in `engine`), so ``import sim`` does
not pull SimPy or numpy in before they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Scenario": "sim.scenario",
    "ScenarioError": "sim.scenario",
    "apply_overrides": "sim.overrides",
    "World": "sim.world",
    "arrivals": "sim.traffic",
    "run": "sim.result",
    "SimResult": "sim.result",
    "plot_run": "sim.plot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
