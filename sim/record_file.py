"""records.jsonl as a simulated run writes it: one JSON line per log record.

At campaign scale the lines themselves are the cost: a 2 M-message blast
writes 4 M outcome records (about 1.6 KB a message), and the standard
library's encoder took about a quarter of such a run's CPU time, more than
any part of the engine.  `orjson` writes the same bytes for the records
`engine.records.make_record` builds (strings, ints, None, and dicts and lists
of them) several times faster, so it writes those; the standard encoder
writes the rest, and is the only one used when orjson is not installed:

* records of other shapes (`Shaping`, `SharedLimits`, ...) may carry floats,
  which the two encoders spell differently (``1e+16`` against ``1e16``);
* a line with any non-ASCII character: the simulator has always written
  ``\\uXXXX`` escapes (``ensure_ascii``), orjson writes UTF-8.

tests/test_record_file.py holds both encoders to the same bytes over every
record kind the shipped scenarios produce.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:  # a dependency, but the simulator must run without it
    import orjson
except ImportError:  # pragma: no cover - depends on the install
    orjson = None

__all__ = ["RecordFile", "record_line"]

#: The record types `engine.records.make_record` builds: no floats anywhere in them.
MADE_KINDS = frozenset({"Reception", "Delivery", "TransientFailure", "Bounce", "Expiration",
                        "AdminBounce", "Delayed"})

_standard: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":")).encode


def _standard_line(record: dict[str, Any]) -> bytes:
    return (_standard(record) + "\n").encode("ascii")


def _fast_line(record: dict[str, Any]) -> bytes:
    if record.get("type") in MADE_KINDS:
        try:
            line: bytes = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # an int beyond 64 bits, a type orjson does not know
            return _standard_line(record)
        if line.isascii():
            return line
    return _standard_line(record)


#: One record as its line of records.jsonl (ASCII, newline-terminated): the bytes
#: the standard library's compact encoder writes, by the fastest way at hand.
record_line: Callable[[dict[str, Any]], bytes] = (
    _fast_line if orjson is not None else _standard_line)


class RecordFile:
    """A record sink writing JSON lines: `run(..., record_sink=RecordFile(p))`
    streams a big run's records to disk instead of holding them in memory."""

    def __init__(self, path: str | Path, *, large: int = 0,
                 on_large: Callable[[int], None] | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()
        self._write = self._fh.write
        self.written = 0  # bytes
        self._large = large if on_large is not None else 0
        self._on_large = on_large

    def __call__(self, record: dict[str, Any]) -> None:
        line = record_line(record)
        self._write(line)
        self.written += len(line)
        if self._large and self.written > self._large:
            self._large = 0  # once
            assert self._on_large is not None
            self._on_large(self.written)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
