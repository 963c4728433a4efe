"""engine/live/logfile.py: JSON-lines segments, rotation by size and age, read back."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from engine.live.logfile import LogWriter, read_records


def record(i: int, content: str = "ok") -> dict[str, object]:
    """A record in KumoMTA's JSON log shape."""
    return {
        "type": "Delivery", "id": f"m{i:04d}", "sender": "a@x.test",
        "recipient": "b@example.com", "queue": "example.com",
        "site": "unspecified->mx.example.com", "egress_pool": None,
        "egress_source": "unspecified", "timestamp": 1700000000 + i, "created": 1700000000,
        "num_attempts": 1, "peer_address": {"name": "mx.example.com", "addr": "192.0.2.1"},
        "response": {"code": 250, "enhanced_code": {"class": 2, "subject": 0, "detail": 0},
                     "content": content, "command": ".\r\n"},
    }


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_records_round_trip_one_per_line(tmp_path: pathlib.Path) -> None:
    recs = [record(i, content="héllo ✓") for i in range(3)]
    with LogWriter(tmp_path / "logs", clock=Clock(1_700_000_000.5)) as w:
        w.write_many(recs)
    [seg] = w.segments
    assert seg.name == "20231114-221320-000001.jsonl"
    lines = seg.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert [json.loads(x) for x in lines[:3]] == recs
    assert lines[0].startswith(b'{"type":"Delivery","id":"m0000",')  # compact, keys in order
    assert list(read_records(tmp_path / "logs")) == recs
    assert w.closed and w.current is None


def test_rotation_by_size(tmp_path: pathlib.Path) -> None:
    one = len(json.dumps(record(0), separators=(",", ":")).encode()) + 1
    w = LogWriter(tmp_path, max_bytes=2 * one, clock=Clock(1000.0))
    recs = [record(i) for i in range(5)]
    w.write_many(recs)
    big = record(9, content="x" * (3 * one))
    w.write(big)
    w.write(record(10))
    w.close()
    sizes = [len(p.read_bytes().split(b"\n")) - 1 for p in w.segments]
    assert sizes == [2, 2, 1, 1, 1]
    assert all(p.stat().st_size <= 2 * one for i, p in enumerate(w.segments) if i != 3)
    assert [p.name for p in w.segments] == [
        f"19700101-001640-{n:06d}.jsonl" for n in range(1, 6)]
    assert list(read_records(tmp_path)) == [*recs, big, record(10)]


def test_rotation_by_age_and_when_idle(tmp_path: pathlib.Path) -> None:
    clock = Clock(0.0)
    w = LogWriter(tmp_path, max_age=10, clock=clock)
    w.write(record(0))
    clock.t = 9.9
    w.write(record(1))
    assert not w.rotate_if_due()
    clock.t = 10.0
    w.write(record(2))  # the first segment is 10 s old: a new one
    clock.t = 25.0
    assert w.rotate_if_due() is True
    assert w.current is None and len(w.segments) == 2
    assert not w.rotate_if_due()  # nothing open, nothing created while idle
    clock.t = 26.0
    w.write(record(3))
    w.close()
    assert [p.name for p in w.segments] == [
        "19700101-000000-000001.jsonl", "19700101-000010-000002.jsonl",
        "19700101-000026-000003.jsonl"]
    assert [list(read_records(p)) for p in w.segments] == [
        [record(0), record(1)], [record(2)], [record(3)]]


def test_restart_in_the_same_second_never_overwrites(tmp_path: pathlib.Path) -> None:
    with LogWriter(tmp_path, clock=Clock(5.0)) as first:
        first.write(record(1))
    with LogWriter(tmp_path, clock=Clock(5.0)) as second:
        second.write(record(2))
    assert first.segments[0].name == "19700101-000005-000001.jsonl"
    assert second.segments[0].name == "19700101-000005-000002.jsonl"
    assert list(read_records(tmp_path)) == [record(1), record(2)]


def test_restart_in_the_same_second_never_overwrites_a_compressed_segment(
        tmp_path: pathlib.Path) -> None:
    # the first run's segment is compressed at close, so its plain name is free
    # again; the next run in the same second must not take it (its own
    # compression would replace the first run's .zst)
    with LogWriter(tmp_path, compress="zstd", clock=Clock(5.0)) as first:
        first.write({"n": 1})
    with LogWriter(tmp_path, compress="zstd", clock=Clock(5.0)) as second:
        second.write({"n": 2})
    assert [r["n"] for r in read_records(tmp_path)] == [1, 2]


def test_flush_makes_lines_visible_and_close_is_final(tmp_path: pathlib.Path) -> None:
    w = LogWriter(tmp_path)
    w.write(record(1))
    w.flush()
    assert w.current is not None
    assert list(read_records(w.current)) == [record(1)]
    w.close()
    w.close()
    with pytest.raises(ValueError, match="LogWriter is closed"):
        w.write(record(2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": 0}, "LogWriter max_bytes must be an integer number of bytes above 0 "
                           "(or None), not 0"),
        ({"max_bytes": "10"}, "max_bytes must be an integer number of bytes above 0 (or None), "
                              "not '10'"),
        ({"max_age": -1.0}, "LogWriter max_age must be a number of seconds above 0 (or None), "
                            "not -1.0"),
        ({"max_age": True}, "max_age must be a number of seconds above 0 (or None), not True"),
    ],
)
def test_bad_limits_are_refused(tmp_path: pathlib.Path, kwargs: dict[str, object],
                                message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        LogWriter(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_directory_that_is_a_file_and_unserialisable_record(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        LogWriter(f)
    with LogWriter(tmp_path / "d") as w, pytest.raises(
        TypeError, match=r"log record type='Bounce' id='m1' cannot be written as JSON"
    ):
        w.write({"type": "Bounce", "id": "m1", "bad": object()})


def test_read_records_skips_torn_tail_but_not_corruption(tmp_path: pathlib.Path) -> None:
    seg = tmp_path / "19700101-000000-000001.jsonl"
    seg.write_bytes(b'{"id":"a"}\n{"id":"b"}\n{"id":"c')
    assert list(read_records(seg)) == [{"id": "a"}, {"id": "b"}]
    seg.write_bytes(b'{"id":"a"}\nnot json\n{"id":"c"}\n')
    with pytest.raises(ValueError, match=r"000001\.jsonl: line 2 is not a JSON record"):
        list(read_records(seg))


def test_zstd_segments_and_retention(tmp_path: pathlib.Path) -> None:
    import os

    from engine.live.logfile import LogWriter, read_records

    now = [1000.0]
    w = LogWriter(tmp_path, max_bytes=60, compress="zstd", retention=100.0,
                  clock=lambda: now[0])
    for i in range(4):
        w.write({"type": "Delivery", "id": f"m{i}", "pad": "x" * 20})
    closed = [p for p in w.segments[:-1]]
    assert closed and all(p.name.endswith(".jsonl.zst") for p in closed)
    os.utime(closed[0], (now[0] - 500, now[0] - 500))
    w.close()
    assert not closed[0].exists()  # older than the retention: deleted at the rotation
    ids = [r["id"] for r in read_records(tmp_path)]
    assert ids == [f"m{i}" for i in range(4)][-len(ids):] and "m3" in ids


def test_unknown_compression_is_refused(tmp_path: pathlib.Path) -> None:
    from engine.live.logfile import LogWriter

    with pytest.raises(ValueError, match="compress must be one of none, zstd"):
        LogWriter(tmp_path, compress="gzip")


def test_zstd_offloaded_and_a_crash_between_rename_and_unlink(tmp_path: pathlib.Path) -> None:
    """With `offload`, closing a segment hands its compression to the caller's
    runner (here: run later, by hand); until then the plain segment is read.
    When both the plain segment and its .zst exist, only the .zst is read."""
    jobs: list[object] = []
    w = LogWriter(tmp_path, max_bytes=60, compress="zstd", clock=lambda: 0.0,
                  offload=jobs.append)
    for i in range(4):
        w.write({"i": i, "pad": "x" * 20})
    assert jobs and all(p.name.endswith(".jsonl") for p in w.segments)
    w.flush()
    assert [r["i"] for r in read_records(tmp_path)] == [0, 1, 2, 3]
    for job in jobs:
        job()  # type: ignore[operator]
    w.close()  # the last segment: compressed at once
    assert all(p.name.endswith(".jsonl.zst") for p in w.segments)
    first = w.segments[0]
    plain = first.with_name(first.name[:-len(".zst")])
    plain.write_bytes(b'{"i":0,"pad":"dup"}\n')  # as if the unlink never happened
    assert [r["i"] for r in read_records(tmp_path)] == [0, 1, 2, 3]
