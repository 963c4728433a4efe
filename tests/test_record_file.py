"""sim.record_file: records.jsonl lines are the standard encoder's bytes, whoever writes them.

The fast writer (orjson) must be invisible in the output: every record of
three shipped scenarios (every kind they make, Shaping records included),
records with a non-ASCII text, a float, a huge integer, and a file written
through `RecordFile`, each compared byte for byte with what
``json.JSONEncoder(separators=(",", ":")).encode`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sim import record_file
from sim.record_file import MADE_KINDS, RecordFile, record_line
from sim.result import run
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent
STANDARD = json.JSONEncoder(separators=(",", ":")).encode


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [value]


def standard(record: dict[str, Any]) -> bytes:
    return (STANDARD(record) + "\n").encode("ascii")


def test_the_fast_writer_is_the_one_in_use() -> None:
    """orjson is a dependency: without this the other tests would compare the
    standard encoder with itself."""
    assert record_file.orjson is not None
    assert record_line is record_file._fast_line


@pytest.mark.parametrize("name", ["quickstart", "connection_failures", "kumomta_policy"])
def test_every_record_of_a_shipped_scenario_is_written_as_the_standard_encoder_writes_it(
        name: str) -> None:
    result = run(Scenario.from_toml(ROOT / "scenarios" / f"{name}.toml"), records="all")
    kinds = set()
    for record in result.records:
        kinds.add(record["type"])
        assert record_line(record) == standard(record), record
        if record["type"] in MADE_KINDS:  # the fast writer's premise: no floats in them
            assert not any(type(v) is float for v in leaves(record)), record
    assert {"Reception", "Delivery", "TransientFailure"} <= kinds


def test_a_record_with_a_non_ascii_text_keeps_its_escapes() -> None:
    record = {"type": "Bounce", "id": "m1", "recipient": "jürgen@bücher.example",
              "response": {"code": 550, "content": "Empfänger unbekannt \u2028"}}
    line = record_line(record)
    assert line == standard(record)
    assert b"\\u00fc" in line and line.isascii()


def test_floats_and_huge_integers_are_written_as_the_standard_encoder_writes_them() -> None:
    shaping = {"type": "Shaping", "id": "shaping-1", "value": 1e16, "small": 1e-07,
               "rate": 0.1}
    assert record_line(shaping) == standard(shaping)
    assert b"1e+16" in record_line(shaping)  # orjson would write 1e16
    made = {"type": "Delivery", "id": "m2", "size": 2**70}  # beyond orjson's 64 bits
    assert made["type"] in MADE_KINDS
    assert record_line(made) == standard(made)


def test_record_file_writes_the_lines_and_counts_their_bytes(tmp_path: Path) -> None:
    result = run(Scenario.from_toml(ROOT / "scenarios" / "quickstart.toml"), records="outcomes")
    path = tmp_path / "out" / "records.jsonl"
    seen: list[int] = []
    with RecordFile(path, large=100_000, on_large=seen.append) as sink:
        for record in result.records:
            sink(record)
    data = path.read_bytes()
    assert data == b"".join(standard(r) for r in result.records)
    assert sink.written == len(data)
    assert len(seen) == 1 and 100_000 < seen[0] < 110_000  # said once, when passed
