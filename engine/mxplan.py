"""The connection plan: which addresses a new session tries, in which order.

KumoMTA builds a plan per connection attempt from the destination's MX set
(crates/mailexchanger: ``MailExchanger::resolve_addresses``): preferences
ascending; within one preference every resolved *address* of every host of
that preference goes into one list, which is shuffled as a whole
(``by_pref.shuffle(&mut rng)``), so two hosts' addresses interleave and a host
with more addresses gets a larger share of first tries.  The shuffle draws
from the engine's seeded generator (hosts name-sorted first, so the result
depends only on the MX set and the generator's state) and a replay shuffles
the same way.  Before the plan is used, `prohibited_hosts` poisons it (any resolved
address listed fails the whole ready queue, ``550 5.4.4``), `skip_hosts` drops
addresses (none left: ``550 5.4.4`` too), and an enforcing MTA-STS policy keeps
only hosts matching its ``mx`` patterns (`engine.mta_sts_match`).

The path's ``ip_lookup_strategy`` picks each host's addresses as KumoMTA's
``ip_lookup`` does (crates/dns-resolver/src/lib.rs): ``Ipv4Only`` /
``Ipv6Only`` keep one family; ``Ipv4ThenIpv6`` keeps the A addresses and
falls back to AAAA only when the host has none (``Ipv6ThenIpv4`` the
reverse); ``Ipv4AndIpv6`` (the default) keeps both, A first.  The drivers
answer both families for every host (one `Resolve` per domain serves every
path, whatever its strategy), so the choice is made here, per path.

Pure functions over plain values; the plan is a tuple of (host, address).
"""

from __future__ import annotations

import random
from collections.abc import Container, Sequence

from engine.events import MxRecord
from engine.mta_sts_match import mx_allowed
from engine.reply import Reply

Plan = tuple[tuple[str, str], ...]


DEFAULT_STRATEGY = "Ipv4AndIpv6"


def by_strategy(addresses: Sequence[str], strategy: str) -> Sequence[str]:
    """One host's addresses as `strategy` (an ``IpLookupStrategy`` value) keeps
    them: a family, a family with the other as fallback, or both, A first."""
    v6 = [a for a in addresses if ":" in a]
    if not v6:
        return () if strategy == "Ipv6Only" else addresses
    v4 = [a for a in addresses if ":" not in a]
    if strategy == "Ipv4AndIpv6":
        return v4 + v6
    if strategy == "Ipv4Only":
        return v4
    if strategy == "Ipv6Only":
        return v6
    if strategy == "Ipv4ThenIpv6":
        return v4 or v6
    if strategy == "Ipv6ThenIpv4":
        return v6 or v4
    raise ValueError(f"ip_lookup_strategy {strategy!r} is not one of KumoMTA's")


def order_addresses(mx: Sequence[MxRecord], rng: random.Random,
                    strategy: str = DEFAULT_STRATEGY) -> list[tuple[str, str]]:
    """(host, address) pairs: ascending preference; within a preference all the
    addresses of all its hosts (as `strategy` keeps them) shuffled together by
    `rng`, as KumoMTA does."""
    by_pref: dict[int, list[tuple[str, str]]] = {}
    for rec in sorted(mx, key=lambda r: (r.preference, r.host.lower())):
        name = rec.host.lower().rstrip(".")
        group = by_pref.setdefault(rec.preference, [])
        group.extend((name, a) for a in by_strategy(rec.addresses, strategy))
    ordered: list[tuple[str, str]] = []
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
    strategy: str = DEFAULT_STRATEGY,
) -> Plan | Reply:
    """The addresses to try, or the permanent `Reply` that fails the ready queue.

    An empty tuple means the MX hosts had no addresses at all (a transient
    condition for the caller to report).
    """
    pairs = order_addresses(mx, rng, strategy)
    poisoned = [a for _, a in pairs if a in prohibited]
    if poisoned:
        return Reply.make(
            550, "5.4.4", f"MX resolved to prohibited host(s): {', '.join(poisoned)}"
        )
    plan: list[tuple[str, str]] = []
    seen_any = False
    for name, address in pairs:
        if sts_patterns is not None and not mx_allowed(sts_patterns, name):
            continue
        seen_any = True
        if address not in skip:
            plan.append((name, address))
    if seen_any and not plan:
        return Reply.make(550, "5.4.4", "MX consisted solely of hosts on the skip_hosts list")
    if sts_patterns is not None and not seen_any and pairs:
        return Reply.make(
            451, "4.4.4", "MTA-STS policy in enforce mode matches none of the MX hosts"
        )
    return tuple(plan)
