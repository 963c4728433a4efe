"""DNS for the live driver: MX, A/AAAA, TXT and TLSA over dnspython's async resolver.

The engine asks `Resolve(domain)` and wants one event back: `Resolved` (the MX
set with every host's addresses) or `ResolveFailed` classified as the core
expects (NXDOMAIN bounces; SERVFAIL, TIMEOUT, NO_ADDRESSES retry).  This module
makes that classification and nothing else: it never decides what a failure
means for delivery.

The cache sits at the level of single queries ``(name, type)``, not whole MX
results, so an MX host shared by many domains is looked up once and a TTL is
honoured record set by record set.  Failures are cached too, for a short
`negative_ttl`, so a domain whose servers are down is not hammered by every
message queued for it.  The clock is injectable so tests can expire entries
without sleeping.  Concurrent lookups of the same query share one request.

DNSSEC: the resolver sets the DO bit (EDNS0) and the AD bit in its queries and
reports the AD flag of the answer as `secure`.  It does not validate; it trusts
AD because the answer came from the configured resolver (dnspython only accepts
answers from the nameserver it asked), which must therefore be a validating
resolver on a trusted path, as RFC 7672 and Postfix's ``dnssec`` level assume.
Pass ``trust_ad=False`` to never report an answer as secure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.rdatatype
import dns.resolver

from engine.events import (
    DnsFailure,
    MxRecord,
    Resolved,
    ResolveFailed,
    TlsaRecord,
    TlsaResolved,
)

__all__ = ["DnsLookupError", "LiveResolver"]


class DnsLookupError(Exception):
    """A lookup failed; `kind` is the core's classification of why."""

    def __init__(self, kind: DnsFailure, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Answer:
    """One query's outcome: the records (as dnspython rdata), their TTL, AD flag."""

    records: tuple[Any, ...]
    ttl: float
    secure: bool


@dataclass(slots=True)
class _Entry:
    expires: float
    answer: _Answer | None = None
    error: DnsLookupError | None = None
    used: float = 0.0  # when last asked for (clock time): `LiveResolver.prune`


ATTEMPT = 2.0
"""Seconds one query waits for its answer before it is sent again, within the
lookup's `timeout` (dnspython's own default; glibc's stub waits 5 s, twice).
DNS is UDP: a datagram lost (a nameserver's receive buffer full in a burst of
lookups) must be asked again, not waited for until the whole lookup times out
and its messages wait for their next retry, minutes later."""

CACHE_ENTRIES = 4096
"""Most answers cached (name, type): beyond it the expired go first, then the
oldest, so one message to each of many domains does not keep every answer
for its whole TTL (issue 13.6; the engine keeps its own MX cache per domain
while it has mail for it)."""


class LiveResolver:
    """An async resolver with a TTL cache, classifying failures as the core expects.

    ``LiveResolver(nameservers=["127.0.0.1"], port=5353, timeout=2.0)`` asks that
    server only; with no nameservers it reads the system's resolv.conf.
    `timeout` bounds each whole lookup (all retries), in seconds; a query
    unanswered after `ATTEMPT` seconds is sent again within it.
    """

    def __init__(
        self,
        nameservers: list[str] | None = None,
        port: int = 53,
        timeout: float = 5.0,
        *,
        negative_ttl: float = 10.0,
        max_ttl: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
        trust_ad: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"LiveResolver timeout must be > 0 seconds, not {timeout!r}")
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.port = port
        self._resolver.lifetime = timeout
        self._resolver.timeout = min(ATTEMPT, timeout)  # then asked again (ATTEMPT)
        self._resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver.flags = dns.flags.RD | dns.flags.AD
        self.timeout = timeout
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.trust_ad = trust_ad
        self._clock = clock
        self._cache: dict[tuple[str, str], _Entry] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[_Entry]] = {}

    # -- public lookups

    async def resolve_mx(self, domain: str, at: float) -> Resolved | ResolveFailed:
        """The MX set of `domain` with each host's addresses (A then AAAA).

        Hosts are sorted by (preference, name); a host without addresses is
        dropped.  No MX records means the implicit MX (the domain itself); a null
        MX (``0 .``) gives the single ``MxRecord(preference=0, host=".")``.
        `ttl` is the smallest TTL of every record used.
        """
        name = _norm(domain)
        try:
            mx = await self._query(name, "MX")
        except DnsLookupError as err:
            return ResolveFailed(at=at, domain=name, kind=err.kind, detail=err.detail)
        targets = sorted({(int(r.preference), _norm(r.exchange.to_text())) for r in mx.records})
        if any(host == "" for _, host in targets):
            # RFC 7505: "0 ." is the whole answer; a "." among real hosts is ignored.
            if len(targets) == 1:
                return Resolved(
                    at=at, domain=name, mx=(MxRecord(preference=0, host="."),), ttl=mx.ttl
                )
            targets = [t for t in targets if t[1] != ""]
        implicit = not targets
        if implicit:
            targets = [(0, name)]
        looked_up = await asyncio.gather(*(self._addresses(host) for _, host in targets))
        ttl = mx.ttl if not implicit else self.max_ttl
        records: list[MxRecord] = []
        problems: list[str] = []
        for (preference, host), (addresses, host_ttl, problem, secure) in zip(
            targets, looked_up, strict=True
        ):
            ttl = min(ttl, host_ttl)
            if addresses:
                # DANE needs the whole chain validated: the MX answer (or, for the
                # implicit MX, its NODATA) and this host's address answers
                records.append(MxRecord(preference=preference, host=host, addresses=addresses,
                                        secure=mx.secure and secure))
            else:
                problems.append(f"{host}: {problem}")
        if not records:
            detail = f"no MX host of {name} has an address ({'; '.join(problems)})"
            return ResolveFailed(at=at, domain=name, kind=DnsFailure.NO_ADDRESSES, detail=detail)
        return Resolved(at=at, domain=name, mx=tuple(records), implicit=implicit, ttl=ttl)

    async def resolve_hosts(self, key: str, hosts: tuple[str, ...], at: float
                            ) -> Resolved | ResolveFailed:
        """The A then AAAA addresses of each of `hosts` (a queue's smart hosts),
        answered for `key`: one `MxRecord` per host, or `ResolveFailed` naming
        the first host without an address (KumoMTA fails the list as a whole,
        crates/kumod/src/smtp_dispatcher.rs ``MxListEntry::resolve_into``)."""
        looked_up = await asyncio.gather(*(self._addresses(_norm(h)) for h in hosts))
        records: list[MxRecord] = []
        ttl = self.max_ttl
        for i, (host, (addresses, host_ttl, problem, _)) in enumerate(
            zip(hosts, looked_up, strict=True)
        ):
            if not addresses:
                kind = _worst(problem)
                return ResolveFailed(at=at, domain=key, kind=kind,
                                     detail=f"{_norm(host)}: {problem}")
            ttl = min(ttl, host_ttl)
            records.append(MxRecord(preference=i, host=_norm(host), addresses=addresses))
        return Resolved(at=at, domain=key, mx=tuple(records), ttl=ttl)

    async def resolve_addresses(self, host: str) -> tuple[str, ...]:
        """The A then AAAA addresses of `host` (empty when it has none)."""
        addresses, _, _, _ = await self._addresses(_norm(host))
        return addresses

    async def resolve_txt(self, name: str) -> tuple[str, ...]:
        """The TXT records of `name`, each one's strings joined, decoded as UTF-8.

        NXDOMAIN and an empty answer give ``()``; SERVFAIL and timeouts raise
        `DnsLookupError` so a caller can tell "none published" from "unknown".
        """
        try:
            answer = await self._query(_norm(name), "TXT")
        except DnsLookupError as err:
            if err.kind is DnsFailure.NXDOMAIN:
                return ()
            raise
        return tuple(
            b"".join(r.strings).decode("utf-8", errors="replace") for r in answer.records
        )

    async def resolve_tlsa(self, host: str, port: int, at: float) -> TlsaResolved:
        """The TLSA records of ``_port._tcp.host``; `secure` is the answer's AD flag.

        NXDOMAIN is an answer with no records (DANE does not apply, as KumoMTA's
        ``classify_tlsa_answer`` in crates/dns-resolver/src/lib.rs); a lookup
        that failed (SERVFAIL, which a validating resolver also gives for a
        bogus answer, or a timeout) is reported as `TlsaResolved.failure`, so
        the engine defers the host rather than go on without DANE.
        """
        name = f"_{port}._tcp.{_norm(host)}"
        try:
            answer = await self._query(name, "TLSA")
        except DnsLookupError as err:
            failure = "" if err.kind is DnsFailure.NXDOMAIN else f"{err.kind}: {err.detail}"
            return TlsaResolved(at=at, host=_norm(host), port=port, records=(), secure=False,
                                failure=failure)
        records = tuple(
            TlsaRecord(usage=r.usage, selector=r.selector, mtype=r.mtype, data=bytes(r.cert))
            for r in answer.records
        )
        return TlsaResolved(
            at=at, host=_norm(host), port=port, records=records, secure=answer.secure
        )

    def clear_cache(self) -> None:
        """Forget every cached answer and failure."""
        self._cache.clear()

    def prune(self, idle: float, domains: Collection[str] | None = None) -> int:
        """Forget the answers that are idle state; how many went.  The driver
        calls it at the engine's reap sweep (issue 13.6): once a domain's path,
        queue and MX entry are reaped its answers are idle too, and kept they
        pin memory that would otherwise go back to the idle figure.

        Expired answers go.  With `domains` (those the engine still knows), an
        MX answer goes unless its domain is one of them; an address answer
        stays while its host is such a domain or an exchange of a kept MX
        answer; any other answer (TXT, TLSA, a smart host's addresses), or
        every answer without `domains`, goes when not asked for in the last
        `idle` seconds, except the addresses of an exchange only a dropped MX
        answer named, which go with it.  A domain seen again is
        asked again, as a lookup past its TTL is.  The dict is rebuilt: CPython
        never shrinks one after deletions."""
        now = self._clock()
        since = now - idle
        cache = self._cache
        kept = {k: e for k, e in cache.items() if e.expires > now and e.used > since}
        if domains is not None:
            wanted = {_norm(d) for d in domains}
            hosts = set(wanted)
            orphans: set[str] = set()  # exchanges of the MX answers that go
            for (name, rtype), e in cache.items():
                if rtype == "MX" and e.answer is not None:
                    (hosts if name in wanted else orphans).update(
                        _norm(r.exchange.to_text()) for r in e.answer.records)
            orphans -= hosts
            kept = {k: e for k, e in cache.items() if e.expires > now and (
                k[0] in wanted if k[1] == "MX" else (k[1] in ("A", "AAAA") and k[0] in hosts) or (
                    e.used > since and not (k[1] in ("A", "AAAA") and k[0] in orphans)))}
        if len(kept) < len(cache):
            self._cache = kept
        return len(cache) - len(kept)

    # -- internals

    async def _addresses(self, host: str) -> tuple[tuple[str, ...], float, str, bool]:
        """(A then AAAA addresses, smallest TTL, why empty, secure) for one host;
        secure when there are addresses and every family that gave some was
        DNSSEC-validated (KumoMTA's ``ip_lookup``, crates/dns-resolver/src/lib.rs)."""
        results = await asyncio.gather(
            self._query(host, "A"), self._query(host, "AAAA"), return_exceptions=True
        )
        addresses: list[str] = []
        ttl = self.max_ttl
        problems: list[str] = []
        secure = True
        for result in results:
            if isinstance(result, DnsLookupError):
                problems.append(result.kind.value)
                ttl = min(ttl, self.negative_ttl)
            elif isinstance(result, BaseException):
                raise result
            else:
                addresses.extend(r.address for r in result.records)
                if result.records:
                    ttl = min(ttl, result.ttl)
                    secure = secure and result.secure
        problem = "/".join(problems) or "no A or AAAA records"
        return tuple(addresses), ttl, problem, secure and bool(addresses)

    async def _query(self, name: str, rtype: str) -> _Answer:
        """One cached query; raises `DnsLookupError` (cached for `negative_ttl`)."""
        key = (name, rtype)
        now = self._clock()
        entry = self._cache.get(key)
        fresh = entry is None or entry.expires <= now
        if not fresh:
            entry.used = now  # type: ignore[union-attr]
        if fresh:
            pending = self._inflight.get(key)
            if pending is None:
                pending = asyncio.ensure_future(self._lookup(name, rtype))
                self._inflight[key] = pending
                try:
                    entry = await pending
                finally:
                    del self._inflight[key]
                self._remember(key, entry, now)
            else:
                entry = await asyncio.shield(pending)
        assert entry is not None
        if entry.error is not None:
            raise entry.error
        assert entry.answer is not None
        if fresh:
            return entry.answer
        return replace(entry.answer, ttl=max(0.0, entry.expires - now))

    def _remember(self, key: tuple[str, str], entry: _Entry, now: float) -> None:
        entry.used = now
        cache = self._cache
        cache.pop(key, None)
        if len(cache) >= CACHE_ENTRIES:
            for old in [k for k, e in cache.items() if e.expires <= now]:
                del cache[old]
            while len(cache) >= CACHE_ENTRIES:
                del cache[next(iter(cache))]
            if not cache:
                self._cache = cache = {}  # a dict never shrinks: start a small one
        cache[key] = entry

    async def _lookup(self, name: str, rtype: str) -> _Entry:
        started = self._clock()
        try:
            answer = await self._resolver.resolve(
                name, rtype, raise_on_no_answer=False, search=False, lifetime=self.timeout
            )
        except dns.resolver.NXDOMAIN:
            return self._failed(started, DnsFailure.NXDOMAIN, f"{name} {rtype}: no such domain")
        except dns.resolver.NoNameservers as exc:
            return self._failed(started, DnsFailure.SERVFAIL, f"{name} {rtype}: {exc}")
        except dns.exception.Timeout:
            return self._failed(
                started, DnsFailure.TIMEOUT, f"{name} {rtype}: no answer in {self.timeout:g}s"
            )
        except dns.exception.DNSException as exc:
            return self._failed(started, DnsFailure.SERVFAIL, f"{name} {rtype}: {exc}")
        rrset = answer.rrset
        secure = self.trust_ad and bool(answer.response.flags & dns.flags.AD)
        if rrset is None:
            result = _Answer(records=(), ttl=self.negative_ttl, secure=secure)
            return _Entry(expires=started + self.negative_ttl, answer=result)
        ttl = min(float(rrset.ttl), self.max_ttl)
        return _Entry(expires=started + ttl, answer=_Answer(tuple(rrset), ttl, secure))

    def _failed(self, started: float, kind: DnsFailure, detail: str) -> _Entry:
        return _Entry(expires=started + self.negative_ttl, error=DnsLookupError(kind, detail))


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def _worst(problem: str) -> DnsFailure:
    """The failure kind of a host's A/AAAA ``problem`` text (see `_addresses`)."""
    for kind in (DnsFailure.TIMEOUT, DnsFailure.SERVFAIL, DnsFailure.NXDOMAIN):
        if kind.value in problem:
            return kind
    return DnsFailure.NO_ADDRESSES
