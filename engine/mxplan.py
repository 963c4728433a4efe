"""The connection plan: which addresses a new session tries, in which order.

KumoMTA builds a plan per connection attempt from the destination's MX set:
preferences ascending, hosts of equal preference shuffled (so equal hosts share
the load), each host's resolved addresses (A then AAAA, as resolved) in order.
The shuffle draws from the engine's seeded generator, so a replay shuffles the
same way.  Before the plan is used, `prohibited_hosts` poisons it (any resolved
address listed fails the whole ready queue, ``550 5.4.4``), `skip_hosts` drops
addresses (none left: ``550 5.4.4`` too), and an enforcing MTA-STS policy keeps
only hosts matching its ``mx`` patterns.

Pure functions over plain values; the plan is a tuple of (host, address).
"""

from __future__ import annotations

import random
from collections.abc import Container, Sequence

from engine.events import MxRecord
from engine.reply import Reply

Plan = tuple[tuple[str, str], ...]


def sts_host_matches(host: str, patterns: Sequence[str]) -> bool:
    """RFC 8461 section 4.1: ``*.example.com`` matches exactly one extra label."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            head, sep, tail = host.partition(".")
            if sep and head and tail == pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def order_hosts(mx: Sequence[MxRecord], rng: random.Random) -> list[MxRecord]:
    """Ascending preference; equal preferences shuffled by `rng` (name-sorted first,
    so the result depends only on the MX set and the generator's state)."""
    by_pref: dict[int, list[MxRecord]] = {}
    for rec in sorted(mx, key=lambda r: (r.preference, r.host.lower())):
        by_pref.setdefault(rec.preference, []).append(rec)
    ordered: list[MxRecord] = []
    for pref in sorted(by_pref):
        group = by_pref[pref]
        if len(group) > 1:
            rng.shuffle(group)
        ordered.extend(group)
    return ordered


def build_plan(
    mx: Sequence[MxRecord],
    rng: random.Random,
    *,
    prohibited: Container[str],
    skip: Container[str],
    sts_patterns: Sequence[str] | None = None,
) -> Plan | Reply:
    """The addresses to try, or the permanent `Reply` that fails the ready queue.

    An empty tuple means the MX hosts had no addresses at all (a transient
    condition for the caller to report).
    """
    hosts = order_hosts(mx, rng)
    poisoned = [a for h in hosts for a in h.addresses if a in prohibited]
    if poisoned:
        return Reply.make(
            550, "5.4.4", f"MX resolved to prohibited host(s): {', '.join(poisoned)}"
        )
    plan: list[tuple[str, str]] = []
    seen_any = False
    for rec in hosts:
        name = rec.host.lower().rstrip(".")
        if sts_patterns is not None and not sts_host_matches(name, sts_patterns):
            continue
        for address in rec.addresses:
            seen_any = True
            if address not in skip:
                plan.append((name, address))
    if seen_any and not plan:
        return Reply.make(550, "5.4.4", "MX consisted solely of hosts on the skip_hosts list")
    if sts_patterns is not None and not seen_any and any(r.addresses for r in hosts):
        return Reply.make(
            451, "4.4.4", "MTA-STS policy in enforce mode matches none of the MX hosts"
        )
    return tuple(plan)
