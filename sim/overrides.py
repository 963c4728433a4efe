"""``KEY=VALUE`` overrides of a scenario's tables (``egress simulate --set``,
``egress sweep --vary``).

A key is a dotted path written the way TOML writes it, with quoted parts for
keys that contain dots and ``[N]`` for an element of an array of tables::

    egress_path.connection_limit=16
    hosts."mx1.example.com".tempfail_rcpt=0.1
    traffic[0].messages=50000
    seed=3

A value is read as a TOML value (``16``, ``0.1``, ``true``, ``"10/s"``,
``[1, 2]``, ``{ median = "20ms", p99 = "200ms" }``); anything TOML does not
read is taken as an unquoted string, so ``max_message_rate=10/s`` and
``horizon=2h`` work without shell-quoting gymnastics.

Overrides work on the raw dict, before validation, so the result is checked
exactly like a file: a misspelt field becomes the scenario's own "unknown
field" error.  Missing tables along the path are created (setting
``egress_path.domains."gmail.com".connection_limit`` in a scenario without
that table is how one adds an override); walking *through* a value that is
not a table is an error naming the path.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from sim.scenario_schema import ScenarioError, join_path

SOURCE = "--set"
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(\d+)\]")


def parse_key_path(key: str) -> list[str | int]:
    """``'hosts."mx1.example.com".tempfail_rcpt'`` -> ``['hosts', 'mx1.example.com',
    'tempfail_rcpt']``; ``'traffic[0].rate'`` -> ``['traffic', 0, 'rate']``."""
    parts: list[str | int] = []
    pos, n = 0, len(key)
    expect_part = True
    while pos < n:
        if expect_part:
            if key[pos] == '"':
                end = pos + 1
                buf = []
                while end < n and key[end] != '"':
                    if key[end] == "\\" and end + 1 < n:
                        end += 1
                    buf.append(key[end])
                    end += 1
                if end >= n:
                    raise ScenarioError(f"{SOURCE}: {key!r}: unterminated quoted key")
                parts.append("".join(buf))
                pos = end + 1
            else:
                m = _BARE.match(key, pos)
                if m is None:
                    raise ScenarioError(
                        f"{SOURCE}: {key!r}: expected a key at position {pos + 1}, "
                        f"got {key[pos:]!r} (quote keys that contain dots or spaces)"
                    )
                parts.append(m.group())
                pos = m.end()
            expect_part = False
            continue
        m = _INDEX.match(key, pos)
        if m:
            parts.append(int(m.group(1)))
            pos = m.end()
        elif key[pos] == ".":
            pos += 1
            expect_part = True
        else:
            raise ScenarioError(
                f"{SOURCE}: {key!r}: expected '.' or '[N]' at position {pos + 1}, "
                f"got {key[pos:]!r}"
            )
    if expect_part:
        raise ScenarioError(f"{SOURCE}: {key!r}: the key path is empty or ends with '.'")
    return parts


def parse_value(text: str) -> Any:
    """A TOML value, or the text itself when TOML does not read it."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def split_assignment(assignment: str) -> tuple[str, str]:
    """``'a.b=3'`` -> ``('a.b', '3')``; the key may contain a quoted ``=``."""
    in_quote = False
    for i, ch in enumerate(assignment):
        if ch == '"':
            in_quote = not in_quote
        elif ch == "=" and not in_quote:
            key, value = assignment[:i].strip(), assignment[i + 1 :].strip()
            if not key:
                break
            return key, value
    raise ScenarioError(
        f"{SOURCE}: {assignment!r}: expected KEY=VALUE, e.g. egress_path.connection_limit=16"
    )


def _show(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out = f"{out}[{p}]" if isinstance(p, int) else join_path(out, p)
    return out


def set_path(data: dict[str, Any], parts: list[str | int], value: Any, key: str) -> None:
    """Set `value` at `parts` inside `data` (in place), creating missing tables."""
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        here = _show(parts[: depth + 1])
        nxt = parts[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list):
                raise ScenarioError(f"{SOURCE}: {key}: {_show(parts[:depth]) or 'the top'} "
                                    f"is not an array, so it has no element [{part}]")
            if part >= len(node):
                raise ScenarioError(f"{SOURCE}: {key}: {here}: index out of range "
                                    f"(the array has {len(node)} elements)")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ScenarioError(f"{SOURCE}: {key}: {_show(parts[:depth])} is not a table")
        if part not in node:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
        if not isinstance(node, dict | list):
            raise ScenarioError(
                f"{SOURCE}: {key}: {here} is {node!r}, not a table, so it has no field "
                f"{nxt!r}"
            )
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ScenarioError(f"{SOURCE}: {key}: {_show(parts)}: no such array element")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ScenarioError(f"{SOURCE}: {key}: {_show(parts[:-1])} is not a table")
        node[last] = value


def apply_overrides(raw: Mapping[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """A deep copy of `raw` with each ``KEY=VALUE`` assignment applied in order."""
    data = copy.deepcopy(dict(raw))
    for assignment in assignments:
        key, text = split_assignment(assignment)
        set_path(data, parse_key_path(key), parse_value(text), key)
    return data
