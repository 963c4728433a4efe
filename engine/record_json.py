"""Log records as JSON lines: the standard library's compact bytes, written faster.

Every record egress writes (the simulator's records.jsonl, the live service's
log segments) is one line of compact JSON.  At volume the encoding is a large
share of the work: a simulated 2 M-message blast writes 4 M records, and the
standard encoder took about a quarter of such a run's CPU time.  `orjson`
writes the same bytes, several times faster, for the records
`engine.records.make_record` builds (strings, ints, None, and dicts and lists
of them), so it writes those; the standard encoder writes the rest, and
everything when orjson is not installed:

* records of other types (``Shaping``, ``SharedLimits``, ...) may carry
  floats, which the two spell differently (``1e+16`` against ``1e16``);
* `ascii_line` (the simulator's records.jsonl, which has always escaped
  non-ASCII as ``\\uXXXX``): any line orjson writes with a non-ASCII byte or
  a DEL, which the standard encoder escapes too;
* anything orjson refuses (an int beyond 64 bits, a lone surrogate, a
  mapping that is not a dict).

tests/test_record_json.py holds both encoders to the same bytes over every
record kind the shipped scenarios produce.  Pure: no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

try:  # a dependency, but egress must run without it
    import orjson
except ImportError:  # pragma: no cover - depends on the install
    orjson = None  # type: ignore[assignment]

__all__ = ["MADE_KINDS", "ascii_line", "utf8_line"]

#: The record types `engine.records.make_record` builds: no floats anywhere in them.
MADE_KINDS = frozenset({"Reception", "Delivery", "TransientFailure", "Bounce", "Expiration",
                        "AdminBounce", "Delayed"})

_ascii: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":")).encode
_utf8: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _standard_ascii(record: Mapping[str, Any]) -> bytes:
    return (_ascii(record) + "\n").encode("ascii")


def _standard_utf8(record: Mapping[str, Any]) -> bytes:
    return (_utf8(record) + "\n").encode()


def _orjson_line(record: Mapping[str, Any]) -> bytes | None:
    """orjson's line for a made record, None for any other (or one it refuses)."""
    if type(record) is dict and record.get("type") in MADE_KINDS:
        try:
            line: bytes = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:
            return None
        return line
    return None


def _fast_ascii(record: Mapping[str, Any]) -> bytes:
    line = _orjson_line(record)
    if line is not None and line.isascii() and b"\x7f" not in line:  # DEL is escaped too
        return line
    return _standard_ascii(record)


def _fast_utf8(record: Mapping[str, Any]) -> bytes:
    line = _orjson_line(record)
    return line if line is not None else _standard_utf8(record)


#: A record as its line (newline-terminated), non-ASCII escaped: what
#: ``json.JSONEncoder(separators=(",", ":")).encode`` writes.
ascii_line: Callable[[Mapping[str, Any]], bytes] = (
    _fast_ascii if orjson is not None else _standard_ascii)
#: A record as its line in UTF-8: what ``json.dumps(record, separators=(",", ":"),
#: ensure_ascii=False).encode()`` writes.  TypeError or ValueError as that raises them.
utf8_line: Callable[[Mapping[str, Any]], bytes] = (
    _fast_utf8 if orjson is not None else _standard_utf8)
