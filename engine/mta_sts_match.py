"""MTA-STS MX pattern matching (RFC 8461 section 4.1), pure.

The live driver fetches a policy; the engine decides which MX hosts a policy
in ``enforce`` mode lets it use.  Both need the same matching rule, so it lives
in the core as a plain function over strings.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["mx_allowed", "mx_matches"]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def mx_matches(pattern: str, host: str) -> bool:
    """Does the MX `host` match the policy's `mx` `pattern`?

    A pattern is a host name, or ``*.`` followed by a domain, which matches
    exactly one extra left-most label: ``*.example.com`` matches
    ``mx1.example.com`` but neither ``example.com`` nor ``a.b.example.com``.
    Comparison ignores case and a trailing dot.
    """
    pattern, host = _norm(pattern), _norm(host)
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:] and label != "*"
    return pattern == host


def mx_allowed(patterns: Iterable[str], host: str) -> bool:
    """True when any of the policy's `patterns` matches `host`."""
    return any(mx_matches(p, host) for p in patterns)
