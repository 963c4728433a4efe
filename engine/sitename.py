"""site_name: the name of the destination *site* a ready queue delivers to.

KumoMTA names a site after the MX host set of the destination domain, so that
domains served by the same hosts share one ready queue (and so one set of
connections and throttles).  The name is built exactly as KumoMTA's
`factor_names` builds it: hosts ordered by preference, then by name within a
preference; lowercased, trailing dot dropped; labels aligned from the right;
each label position folded into an alternation ``(a|b)`` in first-seen order,
with ``?`` when some host has no label there.  Example: Gmail's five hosts give
``(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com``.

The function is pure and cheap; the engine still caches it per MX set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine.events import MxRecord


def factor_names(names: Iterable[str]) -> str:
    """Fold host names into KumoMTA's compact alternation form (order matters)."""
    split: list[list[str]] = []
    width = 0
    for name in names:
        labels = name.lower().rstrip(".").split(".")
        labels.reverse()
        width = max(width, len(labels))
        split.append(labels)
    columns: list[list[str]] = []
    for labels in split:
        padded = labels + ["?"] * (width - len(labels))
        for i, label in enumerate(padded):
            if i == len(columns):
                columns.append([label])
            elif label not in columns[i]:
                columns[i].append(label)
    parts: list[str] = []
    for column in columns:
        optional = "?" in column
        alts = [c for c in column if c != "?"]
        text = alts[0] if len(alts) == 1 else "(" + "|".join(alts) + ")"
        parts.append(text + "?" if optional else text)
    parts.reverse()
    return ".".join(parts)


def ordered_hosts(mx: Sequence[MxRecord]) -> list[str]:
    """MX host names by ascending preference, then by (lowercased) name."""
    return [
        h
        for _, h in sorted(
            (r.preference, r.host.lower().rstrip(".")) for r in mx
        )
    ]


def site_name(mx: Sequence[MxRecord]) -> str:
    """The site name of an MX set; see the module docstring."""
    return factor_names(ordered_hosts(mx))


def is_null_mx(mx: Sequence[MxRecord]) -> bool:
    """RFC 7505: a single MX record whose host is ``.`` (or an empty name)."""
    return len(mx) == 1 and mx[0].host.rstrip(".") == ""
