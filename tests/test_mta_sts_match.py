"""engine.mta_sts_match: RFC 8461 MX pattern matching."""

from __future__ import annotations

import pytest

from engine.mta_sts_match import mx_allowed, mx_matches


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mx1.example.com", "mx1.example.com", True),
        ("MX1.Example.COM", "mx1.example.com.", True),
        ("mx1.example.com", "mx2.example.com", False),
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "MX1.EXAMPLE.COM.", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "mx1.example.net", False),
        ("*.example.com", "*.example.com", False),
        ("", "mx1.example.com", False),
        ("mx1.example.com", "", False),
    ],
)
def test_mx_matches(pattern: str, host: str, expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


def test_mx_allowed_any_pattern() -> None:
    patterns = ("mail.example.org", "*.example.com")
    assert mx_allowed(patterns, "mx7.example.com") is True
    assert mx_allowed(patterns, "mail.example.org") is True
    assert mx_allowed(patterns, "mx7.example.org") is False
    assert mx_allowed((), "mx7.example.com") is False
