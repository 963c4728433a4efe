"""Which TLS a connection uses: enable_tls after DANE, MTA-STS and the site's
remembered broken TLS, and the handshake settings the driver needs.

KumoMTA decides this per connection in crates/kumod/src/smtp_dispatcher.rs
(``attempt_connection``), in this order, which egress follows:

1. DANE, when ``enable_dane``: only for a host whose chain is DNSSEC-secure
   (the MX answer and the host's A/AAAA answers carried AD,
   `MxRecord.secure`; RFC 7672 2.2).  The TLSA answer is classified as
   crates/dns-resolver/src/lib.rs ``classify_tlsa_answer`` does
   (`classify_tlsa`): usable DANE-TA/DANE-EE records -> Required, verified
   against them; records published but none usable -> RequiredInsecure
   (RFC 7672 4.1); no records, NXDOMAIN or an answer without AD -> DANE does
   not apply; a lookup that failed (SERVFAIL, timeout, bogus) -> the host is
   deferred (`TlsChoice.defer`: the session fails it after EHLO, where
   KumoMTA bails), never downgraded.
2. MTA-STS, unless DANE found usable records: enforce -> Required; testing
   -> OpportunisticInsecure, except after unusable TLSA (STARTTLS stays
   mandatory).
3. Broken TLS: an opportunistic mode skips STARTTLS while the site is
   remembered as broken (``remember_broken_tls``, `TlsBroken`); Required
   modes ignore it, as KumoMTA does.

A host whose address answers were insecure is not DANE-eligible here;
KumoMTA asks one more question first (is the name a DNSSEC-signed CNAME
into an unsigned zone, RFC 7672 2.2.2), which egress does not (see
docs/KUMOMTA.md, row 7d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config import EnableTls
from engine.core import Core
from engine.effects import TlsMode, TlsSettings
from engine.events import TlsaRecord, trusted_factory
from engine.lookups import tlsa_for
from engine.ready import ConnCtx

__all__ = [
    "TlsChoice",
    "classify_tlsa",
    "remember_broken_tls",
    "site_tls_broken",
    "tls_for",
    "usable_tlsa_record",
]

_INSECURE = (EnableTls.OpportunisticInsecure, EnableTls.RequiredInsecure)
_OPPORTUNISTIC = (EnableTls.Opportunistic, EnableTls.OpportunisticInsecure)
# EnableTls(x) without the enum's Python-level lookup (a StrEnum member hashes as
# its value, so the config's member or its string finds the same member)
_TLS_MODES: dict[str, EnableTls] = {m.value: m for m in EnableTls}
_DIGEST_LENGTH = {0: None, 1: 32, 2: 64}  # TLSA matching type -> digest bytes
# (mode, server_name, prefer_openssl, openssl_cipher_list, openssl_cipher_suites,
#  openssl_options, rustls_cipher_suites, tlsa, certificate, private_key,
#  fallback_clear): values from a checked path config, one per connection
_TlsSettings = trusted_factory(TlsSettings)
_PRUNE_AT = 1024  # broken-TLS entries kept before the expired ones are swept


@dataclass(frozen=True, slots=True)
class TlsChoice:
    """The effective enable_tls of one connection, its handshake settings, and
    why the host must be deferred instead ("" when it need not be)."""

    mode: EnableTls
    settings: TlsSettings
    defer: str = ""


def usable_tlsa_record(r: TlsaRecord) -> bool:
    """RFC 7672 3.1.3 as KumoMTA's ``tlsa_is_usable``: DANE-TA(2) or
    DANE-EE(3), selector 0/1, matching type 0/1/2 with a digest of its length."""
    if r.usage not in (2, 3) or r.selector not in (0, 1) or r.mtype not in _DIGEST_LENGTH:
        return False
    length = _DIGEST_LENGTH[r.mtype]
    return length is None or len(r.data) == length


def classify_tlsa(records: tuple[TlsaRecord, ...], secure: bool
                  ) -> tuple[str, tuple[TlsaRecord, ...]]:
    """KumoMTA's DaneStatus of an answered TLSA lookup: ``("records", usable
    sorted)``, ``("unusable", ())`` or ``("not_applicable", ())``.  (A failed
    lookup is ``TempFail``, which `tls_for` handles before asking this.)"""
    if not secure or not records:
        return "not_applicable", ()
    usable = sorted((r for r in records if usable_tlsa_record(r)),
                    key=lambda r: (r.usage, r.selector, r.mtype, r.data))
    if not usable:
        return "unusable", ()
    return "records", tuple(usable)


def _chain_secure(ctx: ConnCtx) -> bool:
    host = ctx.host
    return any(r.secure for r in ctx.rq.mx if r.host == host)


def site_tls_broken(eng: Core, path: str, now: float) -> bool:
    """Is `path`'s TLS remembered as broken at `now`?  (An expired entry goes.)"""
    until = eng.broken_tls.get(path)
    if until is None:
        return False
    if until > now:
        return True
    del eng.broken_tls[path]
    return False


def remember_broken_tls(eng: Core, ctx: ConnCtx, o: Any, now: float) -> None:
    """The `TlsBroken` outcome: the site's TLS is broken for ``o.duration``
    (KumoMTA keys it by the ready queue; egress by the path, its equivalent)."""
    broken = eng.broken_tls
    if type(broken) is not dict:  # an engine restored from an older snapshot
        eng.broken_tls = broken = {}
    if len(broken) >= _PRUNE_AT:
        for path in [p for p, until in broken.items() if until <= now]:
            del broken[path]
    broken[ctx.rq.path] = max(broken.get(ctx.rq.path, now), now + o.duration)


def tls_for(eng: Core, ctx: ConnCtx, port: int, now: float) -> TlsChoice | None:
    """The TLS of connection `ctx` to `port`, or None while its host's TLSA
    records are being fetched (the answer resumes it)."""
    rq = ctx.rq
    cfg: Any = rq.cfg
    mode = _TLS_MODES.get(cfg.enable_tls) or EnableTls(cfg.enable_tls)
    tlsa: tuple[TlsaRecord, ...] = ()
    defer = ""
    if ctx.tls_disabled:  # reconnecting in clear after a failed handshake
        mode = EnableTls.Disabled
    else:
        dane_requires_starttls = False
        if cfg.enable_dane and _chain_secure(ctx):
            failed = eng.tlsa_failed.get((ctx.host, port))
            if failed is not None and failed[1] >= now:
                defer = (f"DANE TLSA lookup for {ctx.host} could not be securely resolved: "
                         f"{failed[0]}")
            else:
                known, records, secure = tlsa_for(eng, ctx.host, port, ctx.conn)
                if not known:
                    ctx.waiting_tlsa = True
                    return None
                status, tlsa = classify_tlsa(records, secure)
                if status == "records":
                    mode = EnableTls.Required
                elif status == "unusable":
                    mode = EnableTls.RequiredInsecure
                    dane_requires_starttls = True
        if not tlsa and cfg.enable_mta_sts and rq.mta_sts:
            policy = eng.sts.get(rq.domain, (None, 0.0))[0]
            if policy is not None and policy.mode == "enforce":
                mode = EnableTls.Required
            elif policy is not None and policy.mode == "testing" and not dane_requires_starttls:
                mode = EnableTls.OpportunisticInsecure
        if mode in _OPPORTUNISTIC and site_tls_broken(eng, rq.path, now):
            mode = EnableTls.Disabled
    settings = _TlsSettings(
        TlsMode.DANE if tlsa else (TlsMode.INSECURE if mode in _INSECURE else TlsMode.VERIFY),
        ctx.host,
        cfg.tls_prefer_openssl,
        cfg.openssl_cipher_list,
        cfg.openssl_cipher_suites,
        cfg.openssl_options,
        cfg.rustls_cipher_suites,
        tlsa,
        cfg.tls_certificate,
        cfg.tls_private_key,
        False,  # fallback_clear: the session asks for it when it matters
    )
    return TlsChoice(mode, settings, defer)
