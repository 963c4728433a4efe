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


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        # RFC 8461 4.1: "*" stands for one real left-most label, and "*" is not one.
        ("*.example.com", "*.example.com", False),
        # RFC 8461 3.2: WSP after "mx:" is the field delimiter, not part of the value.
        (" mx1.example.com", "mx1.example.com", True),
        (" *.example.com", "mx1.example.com", True),
        # An empty pattern names no host, not even an empty one.
        ("", "", False),
        (".", ".", False),
    ],
)
def test_cases_where_the_two_old_matchers_disagreed(pattern: str, host: str,
                                                    expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


def test_the_connection_plan_filters_with_the_same_matcher() -> None:
    import random

    from engine.events import MxRecord
    from engine.mxplan import build_plan

    mx = (MxRecord(preference=10, host="*.example.com", addresses=("192.0.2.1",)),
          MxRecord(preference=20, host="mx1.example.com", addresses=("192.0.2.2",)))
    plan = build_plan(mx, random.Random(1), prohibited=(), skip=(),
                      sts_patterns=(" *.example.com",))
    assert plan == (("mx1.example.com", "192.0.2.2"),)
