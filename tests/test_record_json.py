"""engine.record_json: record lines are the standard encoder's bytes, whoever writes them.

The fast writer (orjson) must be invisible in the output: every record of
three shipped scenarios (every kind they make, Shaping records included),
records with a non-ASCII text, control characters, a float, a huge integer,
a file written through the simulator's `RecordFile` and a segment written by
the live `LogWriter`, each compared byte for byte with what the standard
library's compact encoder writes (``ensure_ascii`` for the simulator, UTF-8
for the live logs, as each has always written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import record_json
from engine.live.logfile import LogWriter
from engine.record_json import MADE_KINDS, ascii_line, utf8_line
from sim.record_file import RecordFile
from sim.result import run
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent
STANDARD = json.JSONEncoder(separators=(",", ":")).encode
SAMPLES: list[dict[str, Any]] = [
    {"type": "Bounce", "id": "m1", "recipient": "jürgen@bücher.example",
     "response": {"code": 550, "content": "Empfänger unbekannt \u2028 \u00e9\U0001f4e7"}},
    {"type": "TransientFailure", "id": "m3",
     "response": {"content": "tab\there nul\x00 esc\x1b del\x7f quote\" back\\ /"}},
    {"type": "Shaping", "id": "shaping-1", "value": 1e16, "small": 1e-07, "rate": 0.1},
    {"type": "Delivery", "id": "m2", "size": 2**70},  # beyond orjson's 64 bits
]


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [value]


def standard(record: dict[str, Any]) -> bytes:
    return (STANDARD(record) + "\n").encode("ascii")


def utf8(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def test_the_fast_writer_is_the_one_in_use() -> None:
    """orjson is a dependency: without this the other tests would compare the
    standard encoder with itself."""
    assert record_json.orjson is not None
    assert ascii_line is record_json._fast_ascii and utf8_line is record_json._fast_utf8


@pytest.mark.parametrize("name", ["quickstart", "connection_failures", "kumomta_policy"])
def test_every_record_of_a_shipped_scenario_is_written_as_the_standard_encoder_writes_it(
        name: str) -> None:
    result = run(Scenario.from_toml(ROOT / "scenarios" / f"{name}.toml"), records="all")
    kinds = set()
    for record in result.records:
        kinds.add(record["type"])
        assert ascii_line(record) == standard(record), record
        assert utf8_line(record) == utf8(record), record
        if record["type"] in MADE_KINDS:  # the fast writer's premise: no floats in them
            assert not any(type(v) is float for v in leaves(record)), record
    assert {"Reception", "Delivery", "TransientFailure"} <= kinds


@pytest.mark.parametrize("record", SAMPLES, ids=[r["type"] for r in SAMPLES])
def test_text_floats_and_huge_integers_are_written_as_the_standard_encoder_writes_them(
        record: dict[str, Any]) -> None:
    assert ascii_line(record) == standard(record)
    assert ascii_line(record).isascii()
    assert utf8_line(record) == utf8(record)


def test_the_fallbacks_are_needed() -> None:
    """What the standard encoder writes and orjson would not: the samples are not
    vacuous (a float's exponent, an escape)."""
    assert b"1e+16" in ascii_line(SAMPLES[2])
    assert b"\\u00fc" in ascii_line(SAMPLES[0]) and "ü".encode() in utf8_line(SAMPLES[0])


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


def test_log_writer_segments_hold_the_standard_utf8_lines(tmp_path: Path) -> None:
    result = run(Scenario.from_toml(ROOT / "scenarios" / "quickstart.toml"), records="outcomes")
    records = result.records[:500] + SAMPLES[:3]
    writer = LogWriter(tmp_path / "logs", compress="none")
    for record in records:
        writer.write(record)
    writer.close()
    data = b"".join(p.read_bytes() for p in writer.segments)
    assert data == b"".join(utf8(r) for r in records)


def test_log_writer_names_a_record_it_cannot_write(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "logs", compress="none")
    with pytest.raises(TypeError, match=r"type='Delivery' id='m9' cannot be written as JSON"):
        writer.write({"type": "Delivery", "id": "m9", "when": object()})
    writer.close()
