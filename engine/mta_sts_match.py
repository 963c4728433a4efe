"""MTA-STS MX pattern matching (RFC 8461 section 4.1), pure.

The connection plan (`engine.mxplan`) keeps only the MX hosts an enforcing
policy's ``mx`` patterns allow; this is the one place that says which match.

RFC 8461: a pattern is ``["*."] Domain`` (section 3.2); a wildcard matches
exactly one left-most label, so ``*.example.com`` matches
``mail.example.com`` but neither ``example.com`` nor ``foo.bar.example.com``
(section 4.1).  Names compare as DNS names do: case-insensitive, a trailing
root dot ignored.  Whitespace around a value is the policy's field delimiter
(``":" *WSP``, section 3.2), not part of it, so it is stripped.  An empty
pattern names no host; a host whose left-most label is ``*`` is not a host
name (a wildcard in a pattern stands for a real label, never for ``*``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["mx_allowed", "mx_matches"]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def mx_matches(pattern: str, host: str) -> bool:
    """Does the MX `host` match the policy's `mx` `pattern` (see the module docstring)?"""
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
