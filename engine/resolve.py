"""Answers from the outside world about names: MX sets, MTA-STS policies, TLSA.

The engine never resolves anything itself; it emits `Resolve`, `FetchMtaSts`
or `ResolveTlsa` once per key and parks whatever waits on the answer:

- a destination's messages wait in its `DomainState` for `Resolved` /
  `ResolveFailed` (the MX set, or a smart host list's addresses, see
  `engine.domains`).  The answer is cached for ``Resolved.ttl``.  A null MX
  (RFC 7505) bounces the parked messages; any failed lookup (NXDOMAIN,
  SERVFAIL, TIMEOUT, NO_ADDRESSES) is transient (attempts + 1, the retry
  schedule), as in KumoMTA.
- a ready queue opens no connection until its domain's MTA-STS policy is
  known (when ``enable_mta_sts``); the policy is cached for its max_age.
- a connection waits for its host's TLSA records (when ``enable_dane``).
"""

from __future__ import annotations

from engine.core import Core
from engine.dispatch import attempt, pump
from engine.domains import DomainState, smart_mx
from engine.errors import ProtocolError
from engine.events import (
    MtaStsResolved,
    MxRecord,
    Resolved,
    ResolveFailed,
    TlsaResolved,
)
from engine.flow import promote
from engine.lifecycle import bounce, transient
from engine.lookups import Staged
from engine.mta_sts_match import mx_allowed
from engine.reply import Reply
from engine.sitename import is_null_mx, site_name

__all__ = ["mta_sts_resolved", "resolve_failed", "resolved", "tlsa_resolved"]

NO_POLICY_TTL = 3600.0  # how long "this domain publishes no MTA-STS policy" is believed


def resolved(eng: Core, ev: Resolved) -> None:
    """An MX answer: cache it, then promote (or bounce) the parked messages."""
    dom = ev.domain.lower()
    ds = eng.domains.get(dom)
    if ds is None:
        raise ProtocolError(f"engine cannot handle Resolved({dom!r}) in state NOT_ASKED: no "
                            f"Resolve was issued for {dom}") from None
    mx = ev.mx
    if ds.smart is not None:  # the smart hosts' addresses: the list in order
        mx = smart_mx(ds.smart, mx)
    elif mx and not is_null_mx(mx):
        mx = sts_pruned(eng, dom, mx, ev.at)
        if not mx:
            _sts_impossible(eng, dom, ds, ev)
            return
    if mx and not is_null_mx(mx):
        key = tuple(sorted((r.preference, r.host.lower()) for r in mx))
        if ds.smart is not None:
            site = eng.intern(dom)  # the list's site name, whatever the addresses
        else:
            site = eng.site_names.get(key) or eng.intern(site_name(mx))
        # ask the policy for the paths the parked messages go to, before any change;
        # the answer's hosts go with them, so shaping providers matched by MX
        # (MXSuffix) apply to a path's first config, not only after its refresh
        staged = Staged(eng)
        seen: set[str] = set()
        hosts = [r.host for r in mx]
        for msg in ds.parked:
            q = msg.queue
            if q.name not in seen:
                seen.add(q.name)
                staged.need_path(q, site, ev.at, hosts)
        staged.commit()
        if ds.smart is None:
            eng.site_names[key] = site
    parked, ds.parked = ds.parked, []
    ds.resolving = False
    if is_null_mx(mx):
        reply = Reply.make(556, "5.1.10", f"Recipient address has null MX: {dom}")
        ds.site = None
        for msg in parked:
            bounce(eng, msg, ev.at, reply)
        return
    if not mx:
        # KumoMTA: "MX didn't resolve to any hosts" (crates/kumod/src/smtp_dispatcher.rs)
        reply = Reply.make(451, "4.4.4", "MX didn't resolve to any hosts")
        ds.site = None
        for msg in parked:
            transient(eng, msg, ev.at, reply)
        return
    ds.mx = mx
    ds.site = site
    ds.expires = ev.at + ev.ttl
    for msg in parked:
        promote(eng, msg, ev.at)


def sts_pruned(eng: Core, dom: str, mx: tuple[MxRecord, ...], now: float
               ) -> tuple[MxRecord, ...]:
    """The MX hosts an enforcing MTA-STS policy of `dom` allows, when that policy
    is known: KumoMTA prunes them before naming the site, so domains share a
    ready queue only by the hosts they may use (crates/mailexchanger/src/lib.rs,
    ``apply_mta_sts`` then ``factor_names``).  Empty: it allows none."""
    cached = eng.sts.get(dom)
    if cached is None or cached[1] <= now or cached[0] is None or cached[0].mode != "enforce":
        return mx
    patterns = cached[0].mx
    return tuple(r for r in mx if mx_allowed(patterns, r.host))


def _sts_impossible(eng: Core, dom: str, ds: DomainState, ev: Resolved) -> None:
    """An enforcing policy allows none of the MX hosts: KumoMTA fails the
    resolution (crates/mailexchanger/src/lib.rs), so the parked messages get
    the transient ``451 4.4.4 failed to resolve queue ...`` and are retried."""
    parked, ds.parked = ds.parked, []
    ds.resolving = False
    ds.site = None
    policy = eng.sts[dom][0]
    hosts = [r.host for r in ev.mx]
    for msg in parked:
        transient(eng, msg, ev.at, Reply.make(
            451, "4.4.4", f"failed to resolve queue {msg.queue.name}: MTA-STS enforce policy "
                          f"for {dom} permits none of its MX hosts {hosts}; allowed mx "
                          f"patterns: {list(policy.mx)}"))


def resolve_failed(eng: Core, ev: ResolveFailed) -> None:
    """A failed lookup is transient whatever the cause (NXDOMAIN, SERVFAIL,
    timeout, no addresses): ``451 4.4.4 failed to resolve queue ...``, no site,
    no source, retried on the schedule, as KumoMTA's scheduled queue logs it
    when the ready queue cannot be resolved (crates/kumod/src/queue/queue.rs).
    Only a null MX bounces (`resolved`)."""
    dom = ev.domain.lower()
    ds = eng.domains.get(dom)
    if ds is None:
        raise ProtocolError(f"engine cannot handle ResolveFailed({dom!r}) in state NOT_ASKED: "
                            f"no Resolve was issued for {dom}") from None
    parked, ds.parked = ds.parked, []
    ds.resolving = False
    ds.site = None
    detail = f" ({ev.detail})" if ev.detail else ""
    what = "address lookup" if ds.smart is not None else "MX lookup"
    replies: dict[str, Reply] = {}
    for msg in parked:
        name = msg.queue.name
        reply = replies.get(name)
        if reply is None:
            reply = replies[name] = Reply.make(
                451, "4.4.4", f"failed to resolve queue {name}: {what} for {dom} failed: "
                              f"{ev.kind}{detail}")
        transient(eng, msg, ev.at, reply)


def mta_sts_resolved(eng: Core, ev: MtaStsResolved) -> None:
    """Cache the policy and let the domain's ready queues open connections."""
    dom = ev.domain.lower()
    ttl = ev.policy.max_age if ev.policy is not None else NO_POLICY_TTL
    eng.sts[dom] = (ev.policy, ev.at + ttl)
    eng.sts_pending.pop(dom, None)
    ds = eng.domains.get(dom)
    if ds is not None and ds.site is not None and ds.smart is None and ds.mx:
        # from now on the domain's messages go to the site of the hosts the policy
        # allows (`sts_pruned`); those already queued keep their ready queue, whose
        # plan keeps only those hosts anyway
        mx = sts_pruned(eng, dom, ds.mx, ev.at)
        if mx and len(mx) < len(ds.mx):
            key = tuple(sorted((r.preference, r.host.lower()) for r in mx))
            site = eng.site_names.get(key) or eng.intern(site_name(mx))
            eng.site_names[key] = site
            ds.mx, ds.site = mx, site
    for rq in list(eng.paths.values()):
        if rq.domain == dom and rq.messages:
            pump(eng, rq, ev.at)


def tlsa_resolved(eng: Core, ev: TlsaResolved) -> None:
    """Cache TLSA records and resume the connections waiting for them.  A
    failed lookup is not cached: the connections waiting now are deferred
    with it (`engine.tls_policy`), a later one asks again."""
    key = (ev.host.lower().rstrip("."), ev.port)
    if ev.failure:
        if type(eng.tlsa_failed) is not dict:  # an engine restored from an older snapshot
            eng.tlsa_failed = {}
        eng.tlsa_failed[key] = (ev.failure, ev.at)
    else:
        if key in eng.tlsa_failed:
            del eng.tlsa_failed[key]
        eng.tlsa[key] = (ev.records, ev.secure)
    for conn in eng.tlsa_waiting.pop(key, []):
        ctx = eng.conns.get(conn)
        if ctx is not None and ctx.waiting_tlsa:
            ctx.waiting_tlsa = False
            attempt(eng, ctx, ev.at)
