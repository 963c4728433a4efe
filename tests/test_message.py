"""engine.message: queue names."""

from __future__ import annotations

from engine.message import queue_name


def test_queue_names_leave_out_empty_parts() -> None:
    assert queue_name("example.com", "", "") == "example.com"
    assert queue_name("example.com", "acme", "") == "acme@example.com"
    assert queue_name("example.com", "acme", "spring") == "spring:acme@example.com"
    assert queue_name("example.com", "", "spring") == "spring:example.com"
