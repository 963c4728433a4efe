"""Answers from the outside world about names: MX sets, MTA-STS policies, TLSA.

The engine never resolves anything itself; it emits `Resolve`, `FetchMtaSts`
or `ResolveTlsa` once per key and parks whatever waits on the answer:

- a domain's messages wait in its `DomainState` for `Resolved` /
  `ResolveFailed`.  The MX set is cached for ``Resolved.ttl``.  A null MX
  (RFC 7505) and NXDOMAIN bounce the parked messages; SERVFAIL, TIMEOUT and
  NO_ADDRESSES are transient (attempts + 1, the retry schedule).
- a ready queue opens no connection until its domain's MTA-STS policy is
  known (when ``enable_mta_sts``); the policy is cached for its max_age.
- a connection waits for its host's TLSA records (when ``enable_dane``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import flow
from engine.errors import ProtocolError
from engine.events import (
    DnsFailure,
    MtaStsPolicy,
    MtaStsResolved,
    MxRecord,
    Resolved,
    ResolveFailed,
    TlsaRecord,
    TlsaResolved,
)
from engine.lookups import Staged
from engine.message import Message
from engine.reply import Reply
from engine.sitename import is_null_mx, site_name

if TYPE_CHECKING:
    from engine.engine import Engine

NO_POLICY_TTL = 3600.0  # how long "this domain publishes no MTA-STS policy" is believed


class DomainState:
    """What the engine knows about one destination domain's MX set."""

    __slots__ = ("expires", "mx", "null", "parked", "resolving", "site")

    def __init__(self) -> None:
        self.mx: tuple[MxRecord, ...] = ()
        self.site: str | None = None
        self.expires = float("-inf")
        self.null = False
        self.parked: list[Message] = []
        self.resolving = False


def resolved(eng: Engine, ev: Resolved) -> None:
    """An MX answer: cache it, then promote (or bounce) the parked messages."""
    dom = ev.domain.lower()
    ds = eng.domains.get(dom)
    if ds is None:
        raise ProtocolError(f"engine cannot handle Resolved({dom!r}) in state NOT_ASKED: no "
                            f"Resolve was issued for {dom}") from None
    if ev.mx and not is_null_mx(ev.mx):
        key = tuple(sorted((r.preference, r.host.lower()) for r in ev.mx))
        site = eng.site_names.get(key)
        if site is None:
            site = eng.intern(site_name(ev.mx))
        # ask the policy for the paths the parked messages go to, before any change
        staged = Staged(eng)
        seen: set[str] = set()
        for msg in ds.parked:
            q = msg.queue
            if q.name not in seen:
                seen.add(q.name)
                staged.need_path(q, site, ev.at)
        staged.commit()
        eng.site_names[key] = site
    parked, ds.parked = ds.parked, []
    ds.resolving = False
    if is_null_mx(ev.mx):
        reply = Reply.make(556, "5.1.10", f"Recipient address has null MX: {dom}")
        ds.site = None
        for msg in parked:
            flow.bounce(eng, msg, ev.at, reply)
        return
    if not ev.mx:
        reply = Reply.make(451, "4.4.3", f"MX lookup for {dom} returned no hosts")
        ds.site = None
        for msg in parked:
            flow.transient(eng, msg, ev.at, reply)
        return
    ds.mx = ev.mx
    ds.site = site
    ds.expires = ev.at + ev.ttl
    for msg in parked:
        flow.promote(eng, msg, ev.at)


def resolve_failed(eng: Engine, ev: ResolveFailed) -> None:
    """A failed MX lookup: NXDOMAIN bounces, anything else retries later."""
    dom = ev.domain.lower()
    ds = eng.domains.get(dom)
    if ds is None:
        raise ProtocolError(f"engine cannot handle ResolveFailed({dom!r}) in state NOT_ASKED: "
                            f"no Resolve was issued for {dom}") from None
    parked, ds.parked = ds.parked, []
    ds.resolving = False
    ds.site = None
    detail = f" ({ev.detail})" if ev.detail else ""
    if ev.kind is DnsFailure.NXDOMAIN:
        reply = Reply.make(550, "5.1.2", f"MX lookup for {dom} failed: NXDOMAIN{detail}")
        for msg in parked:
            flow.bounce(eng, msg, ev.at, reply)
    else:
        reply = Reply.make(451, "4.4.3", f"MX lookup for {dom} failed: {ev.kind}{detail}")
        for msg in parked:
            flow.transient(eng, msg, ev.at, reply)


def sts_policy(eng: Engine, domain: str, now: float) -> tuple[bool, MtaStsPolicy | None]:
    """(known, policy) for `domain`; asks for it (once) when unknown or stale."""
    cached = eng.sts.get(domain)
    if cached is not None and cached[1] > now:
        return True, cached[0]
    if domain not in eng.sts_pending:
        from engine.effects import FetchMtaSts

        eng.sts_pending[domain] = True
        eng.out.append(FetchMtaSts(domain=domain))
    return False, None


def mta_sts_resolved(eng: Engine, ev: MtaStsResolved) -> None:
    """Cache the policy and let the domain's ready queues open connections."""
    dom = ev.domain.lower()
    ttl = ev.policy.max_age if ev.policy is not None else NO_POLICY_TTL
    eng.sts[dom] = (ev.policy, ev.at + ttl)
    eng.sts_pending.pop(dom, None)
    for rq in list(eng.paths.values()):
        if rq.domain == dom and rq.messages:
            eng.pump(rq, ev.at)


def tlsa_for(eng: Engine, host: str, port: int, conn: int
             ) -> tuple[bool, tuple[TlsaRecord, ...], bool]:
    """(known, records, secure) for ``_port._tcp.host``; asks once when unknown
    and registers `conn` to be resumed by the answer."""
    key = (host, port)
    cached = eng.tlsa.get(key)
    if cached is not None:
        return True, cached[0], cached[1]
    waiting = eng.tlsa_waiting.get(key)
    if waiting is None:
        from engine.effects import ResolveTlsa

        eng.tlsa_waiting[key] = [conn]
        eng.out.append(ResolveTlsa(host=host, port=port))
    else:
        waiting.append(conn)
    return False, (), False


def tlsa_resolved(eng: Engine, ev: TlsaResolved) -> None:
    """Cache TLSA records and resume the connections waiting for them."""
    key = (ev.host.lower().rstrip("."), ev.port)
    eng.tlsa[key] = (ev.records, ev.secure)
    for conn in eng.tlsa_waiting.pop(key, []):
        ctx = eng.conns.get(conn)
        if ctx is not None and ctx.waiting_tlsa:
            ctx.waiting_tlsa = False
            eng.attempt(ctx, ev.at)
