"""records.jsonl as a simulated run writes it: one JSON line per log record.

The lines are `engine.record_json.ascii_line`'s: the standard library's compact
encoder's bytes (non-ASCII escaped, as the simulator has always written
them), written by orjson where it writes the same.  At campaign scale the
lines are the cost: a 2 M-message blast writes 4 M outcome records, about
1.6 KB a message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.record_json import ascii_line

__all__ = ["RecordFile"]


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
        line = ascii_line(record)
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
