"""JSON-lines log files, one record per line, rotated by size and/or age.

The engine emits `Log(record)` effects whose records already have KumoMTA's
JSON log shape (type, id, sender, recipient, queue, site, timestamp, response,
...).  This module only puts them on disk the way KumoMTA's local logger does,
so the same tooling reads both: a directory of segment files, each a sequence
of compact JSON objects separated by newlines, a new segment started when the
current one would pass `max_bytes` or has been open `max_age` seconds.

Segment names are ``YYYYMMDD-HHMMSS-NNNNNN.jsonl`` (UTC time the segment was
opened, then a sequence number), so sorting the names sorts the records in
time, and a restart within the same second never overwrites a segment: files
are created exclusively and the sequence skips names already taken.  KumoMTA
compresses segments with zstd; with ``compress="zstd"`` a segment is
compressed when it is closed (``.jsonl.zst``; the one being written stays
plain, so ``tail -f`` works), otherwise segments stay plain so a notebook
can read them with nothing but the standard library.  `read_records` reads
both.  ``retention`` (seconds) deletes closed segments older than that at
each rotation.  Compressing a 64 MiB segment takes a while: a driver passes
``offload`` (e.g. ``lambda job: loop.run_in_executor(None, job)``) so it runs
in a worker thread, not on the event loop; the last segment, at `close()`, is
compressed at once.  The ``.zst`` is written under a temporary name and
renamed, so a crash leaves a complete ``.zst``, the plain segment, or both
(then `read_records` reads only the ``.zst``).

Writes are buffered; `flush()` hands them to the OS, `flush(fsync=True)` to
the disk.  Age is checked when a record is written and by `rotate_if_due()`,
which a driver may call from a timer so an idle segment is still closed on
time.  The clock is injectable so tests need not sleep.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from engine.live.private_files import open_new, private_dir
from engine.record_json import utf8_line

__all__ = ["LogWriter", "read_records"]

log = logging.getLogger("egress.logfile")

_SUFFIX = ".jsonl"
_ZSTD = ".zst"
COMPRESSIONS = ("none", "zstd")


def _check_positive(name: str, value: object, *, integer: bool) -> None:
    if value is None:
        return
    kind: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:  # type: ignore[operator]
        what = "an integer number of bytes" if integer else "a number of seconds"
        raise ValueError(f"LogWriter {name} must be {what} above 0 (or None), not {value!r}")


class LogWriter:
    """Append records (dicts) as JSON lines under `directory`, rotating segments.

    `max_bytes`: start a new segment before a line that would take the
    current one past this size (a single larger line gets a segment of its
    own).  `max_age`: start a new segment once the current one has been open
    this many seconds.  Either, both or neither may be set.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        max_age: float | None = None,
        clock: Callable[[], float] = time.time,
        compress: str = "none",
        retention: float | None = None,
        offload: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        _check_positive("max_bytes", max_bytes, integer=True)
        _check_positive("max_age", max_age, integer=False)
        _check_positive("retention", retention, integer=False)
        if compress not in COMPRESSIONS:
            raise ValueError(f"LogWriter compress must be one of {', '.join(COMPRESSIONS)}, "
                             f"not {compress!r}")
        self.compress = compress
        self.offload = offload  # runs a compression job elsewhere (a worker thread)
        self.retention = float(retention) if retention is not None else None
        self.directory = pathlib.Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"LogWriter directory {str(self.directory)!r} exists and is not "
                             "a directory")
        private_dir(self.directory)
        self.max_bytes = max_bytes
        self.max_age = float(max_age) if max_age is not None else None
        self._clock = clock
        self._file: IO[bytes] | None = None
        self._opened_at = 0.0
        self._size = 0
        self._seq = 0
        self._closed = False
        self.segments: list[pathlib.Path] = []  # every segment this writer opened, in order

    # ------------------------------------------------------------------ writing

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as a line of compact JSON."""
        if self._closed:
            raise ValueError("LogWriter is closed")
        try:
            data = utf8_line(record)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"log record type={record.get('type')!r} id={record.get('id')!r} cannot be "
                f"written as JSON: {exc}"
            ) from None
        now = self._clock()
        if self._file is not None and (
            self._age_due(now)
            or (self.max_bytes is not None and self._size and
                self._size + len(data) > self.max_bytes)
        ):
            self._close_segment()
        if self._file is None:
            self._open_segment(now)
        assert self._file is not None
        self._file.write(data)
        self._size += len(data)

    def write_many(self, records: Iterator[Mapping[str, Any]] | list[Mapping[str, Any]]) -> None:
        """Append several records."""
        for record in records:
            self.write(record)

    def rotate_if_due(self) -> bool:
        """Close the current segment if it is older than `max_age`; True if it did.

        The next record then opens a new segment; nothing is created while idle.
        """
        if self._file is not None and self._age_due(self._clock()):
            self._close_segment()
            return True
        return False

    def flush(self, *, fsync: bool = False) -> None:
        """Hand buffered lines to the OS (and with `fsync`, to the disk)."""
        if self._file is not None:
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush, fsync and close the current segment; later writes raise. Idempotent."""
        if not self._closed:
            self._close_segment(inline=True)
            self._closed = True

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    @property
    def current(self) -> pathlib.Path | None:
        """The segment being written, if one is open."""
        return self.segments[-1] if self._file is not None else None

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ segments

    def _age_due(self, now: float) -> bool:
        return self.max_age is not None and now - self._opened_at >= self.max_age

    def _open_segment(self, now: float) -> None:
        stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%d-%H%M%S")
        while True:
            self._seq += 1
            path = self.directory / f"{stamp}-{self._seq:06d}{_SUFFIX}"
            if path.with_name(path.name + _ZSTD).exists():
                continue  # a segment of an earlier run in the same second, compressed since
            try:
                self._file = open_new(path)  # closed in _close_segment
            except FileExistsError:
                continue
            break
        self.segments.append(path)
        self._opened_at = now
        self._size = 0

    def _close_segment(self, *, inline: bool = False) -> None:
        if self._file is not None:
            self.flush(fsync=True)
            self._file.close()
            self._file = None
            if self.compress == "zstd":
                index = len(self.segments) - 1
                if self.offload is None or inline:
                    self.segments[index] = _zstd_file(self.segments[index])
                else:
                    self.offload(lambda: self._compress_job(index))
            self._expire_old()

    def _compress_job(self, index: int) -> None:
        """Compress segment `index` (in a worker thread); a failure leaves it plain."""
        try:
            self.segments[index] = _zstd_file(self.segments[index])
        except OSError as exc:
            log.error("logs: cannot compress %s (left plain): %s", self.segments[index], exc)

    def _expire_old(self) -> None:
        """Delete closed segments older than `retention` (by modification time)."""
        if self.retention is None:
            return
        limit = self._clock() - self.retention
        for path in self.directory.iterdir():
            if path.name.endswith((_SUFFIX, _SUFFIX + _ZSTD)) and path != self.current:
                try:
                    if path.stat().st_mtime < limit:
                        path.unlink()
                except FileNotFoundError:
                    pass


def _zstd_file(path: pathlib.Path) -> pathlib.Path:
    """Compress `path` to ``path.zst`` (written, synced, then the plain one removed)."""
    import zstandard

    out = path.with_name(path.name + _ZSTD)
    tmp = path.with_name(path.name + _ZSTD + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, out)
    path.unlink()
    return out


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of one segment, or of every segment in a directory in name order.

    A torn last line (the process died mid-write) is skipped; any other line
    that is not JSON raises ValueError naming the file and line number.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        zst = {f.name for f in p.glob(f"*{_SUFFIX}{_ZSTD}")}
        files = sorted([*(f for f in p.glob(f"*{_SUFFIX}") if f.name + _ZSTD not in zst),
                        *(p / n for n in zst)])
    else:
        files = [p]
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        if f.name.endswith(_ZSTD):
            import zstandard

            data = zstandard.ZstdDecompressor().stream_reader(data).read()
        lines = data.split(b"\n")
        for n, raw in enumerate(lines, 1):
            if not raw:
                continue
            try:
                yield json.loads(raw)
            except ValueError:
                if n == len(lines):  # no newline after it: a torn final write
                    continue
                raise ValueError(f"{f}: line {n} is not a JSON record: {raw[:80]!r}") from None
