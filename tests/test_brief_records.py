"""Brief records: a simulation that writes and keeps no record counts its
Receptions and Deliveries from their type, id, recipient and site alone
(`Engine(brief_records=True)`, `engine.records.brief_record`).  What is
counted must not change: the summary of a run is the same whether its
records are kept (whole) or not (brief), and a brief record says the same
as the whole one it stands for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from engine.reply import Reply
from sim.result import run
from sim.scenario import Scenario
from tests.support.engine_harness import World, policy, prime, records, submit

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
BRIEF = {"type", "id", "recipient", "site"}


def _delivered(brief: bool) -> list[dict[str, Any]]:
    eng = Engine(policy(), seed=2, brief_records=brief)
    prime(eng)
    world = World(eng)
    world.rcpt_reply = lambda r: (Reply.make(250, "2.1.5", "ok") if r != "b@example.com"
                                  else Reply.make(550, "5.1.1", "no such user"))
    world.feed(submit(1, rcpts=("a@example.com", "b@example.com", "c@example.com")))
    world.feed(submit(2))
    return records(world.effects)


def test_a_brief_record_says_what_the_whole_one_says() -> None:
    whole, brief = _delivered(False), _delivered(True)
    assert [r["type"] for r in brief] == [r["type"] for r in whole]
    assert {r["type"] for r in brief} >= {"Reception", "Delivery", "Bounce"}
    for b, w in zip(brief, whole, strict=True):
        if b["type"] in ("Reception", "Delivery"):
            assert set(b) == BRIEF
            assert b == {k: w[k] for k in BRIEF}
        else:  # every other kind is whole: its reason is counted from its response
            assert b == w


@pytest.mark.parametrize("name", ["lab_small", "connection_failures", "quickstart"])
def test_a_run_counts_the_same_with_brief_records(name: str) -> None:
    scenario = Scenario.from_toml(SCENARIOS / f"{name}.toml")
    kept = run(scenario, keep_records=True)
    counted = run(scenario, keep_records=False)
    assert kept.records and not counted.records

    def figures(summary: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in summary.items()
                           if "wall" not in k and "elapsed" not in k}, sort_keys=True)

    assert figures(kept.summary) == figures(counted.summary)
    assert kept.summary["delivered"] > 0


def test_the_simulator_asks_for_brief_records_only_when_none_is_written() -> None:
    from sim.driver import SimDriver

    scenario = Scenario.from_toml(SCENARIOS / "lab_small.toml")
    assert SimDriver(scenario, keep_records=False).engine.brief_records
    assert not SimDriver(scenario, keep_records=True).engine.brief_records
    assert not SimDriver(scenario, keep_records=False, record_sink=print).engine.brief_records
    assert SimDriver(scenario, keep_records=False, record_sink=print,
                     record_kinds=frozenset()).engine.brief_records
