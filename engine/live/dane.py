"""DANE for SMTP (RFC 7672): does the peer's certificate chain match its TLSA records?

The TLS code hands over the chain the server presented (DER, leaf first) after
the handshake; this module decides, with the `cryptography` library, whether
one of the usable TLSA records authenticates it.  It is kept apart from the
handshake so the rules can be tested with plain certificates, no sockets.

What RFC 7672 asks, and what this module therefore does:

- Only records from a DNSSEC-validated answer count (`usable_tlsa` returns
  nothing for an answer without the AD flag).
- PKIX-TA(0) and PKIX-EE(1) are not used for SMTP (section 3.1.3); records with
  unknown selector or matching type are unusable and ignored.
- DANE-EE(3): the leaf certificate (selector 0) or its public key (selector 1)
  matches; no name check, no expiry check (section 3.1.1).
- DANE-TA(2): some certificate the server presented matches the record, and
  the chain from the leaf up to it verifies signature by signature, every
  certificate on it is within its validity period, and the leaf carries one of
  the reference names (section 3.2.2: the TLSA base domain, usually the MX
  host name).
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from engine.events import TlsaRecord, TlsaResolved

__all__ = [
    "DaneVerdict",
    "certificate_names",
    "dane_verify",
    "name_matches",
    "tlsa_association",
    "usable_record",
    "usable_tlsa",
]

DANE_TA = 2
DANE_EE = 3


@dataclass(frozen=True, slots=True)
class DaneVerdict:
    """The outcome of matching a chain: `ok`, a human `reason`, and the record used."""

    ok: bool
    reason: str
    record: TlsaRecord | None = None


def usable_tlsa(resolved: TlsaResolved) -> tuple[TlsaRecord, ...]:
    """The records DANE may rely on: none unless the answer was secure (AD);
    otherwise the DANE-TA/DANE-EE records with a known selector and matching type."""
    if not resolved.secure:
        return ()
    return tuple(r for r in resolved.records if usable_record(r))


def usable_record(record: TlsaRecord) -> bool:
    """True for a DANE-TA(2)/DANE-EE(3) record with selector 0/1 and matching type 0/1/2."""
    return record.usage in (DANE_TA, DANE_EE) and record.selector in (0, 1) and record.mtype in (
        0,
        1,
        2,
    )


def tlsa_association(cert_der: bytes, selector: int, mtype: int) -> bytes:
    """The certificate association data a TLSA record would carry for `cert_der`."""
    if selector == 0:
        data = cert_der
    elif selector == 1:
        cert = x509.load_der_x509_certificate(cert_der)
        data = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        raise ValueError(f"TLSA selector must be 0 (certificate) or 1 (SPKI), not {selector}")
    if mtype == 0:
        return data
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    raise ValueError(f"TLSA matching type must be 0, 1 (SHA-256) or 2 (SHA-512), not {mtype}")


def _matches(record: TlsaRecord, cert_der: bytes) -> bool:
    return tlsa_association(cert_der, record.selector, record.mtype) == record.data


def name_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching of a certificate DNS name: exact, or a ``*.`` wildcard
    standing for exactly one whole left-most label.  Case-insensitive."""
    pattern = pattern.rstrip(".").lower()
    host = host.rstrip(".").lower()
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and bool(rest) and rest == pattern[2:] and "*" not in first
    return pattern == host


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for: its subjectAltName DNS entries, or,
    only when it has none, its subject common names."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names = san.value.get_values_for_type(x509.DNSName)
        if names:
            return list(names)
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def dane_verify(
    records: Sequence[TlsaRecord],
    chain_der: Sequence[bytes],
    names: Sequence[str],
    *,
    now: datetime.datetime | None = None,
) -> DaneVerdict:
    """Match the presented chain (DER, leaf first) against `records` (already
    filtered by `usable_tlsa`); `names` are the reference identifiers for DANE-TA.

    An empty `records` is not a match: under RFC 7672 2.2 a host whose TLSA
    records are all unusable gets mandatory but unauthenticated TLS, which is
    the caller's decision, not a verification.
    """
    if not chain_der:
        return DaneVerdict(False, "the server presented no certificate")
    usable = [r for r in records if usable_record(r)]
    if not usable:
        return DaneVerdict(False, "no usable DANE-TA(2) or DANE-EE(3) TLSA record")
    for record in usable:
        if record.usage == DANE_EE and _matches(record, chain_der[0]):
            return DaneVerdict(True, "DANE-EE: the server certificate matches", record)
    problems: list[str] = []
    ta_records = [r for r in usable if r.usage == DANE_TA]
    if ta_records:
        try:
            chain = [x509.load_der_x509_certificate(der) for der in chain_der]
        except ValueError as exc:
            return DaneVerdict(False, f"the server's certificate chain cannot be parsed: {exc}")
        when = now or datetime.datetime.now(datetime.UTC)
        for record in ta_records:
            for index in range(1, len(chain_der)):
                if _matches(record, chain_der[index]):
                    problem = _check_ta_chain(chain[: index + 1], names, when)
                    if problem is None:
                        return DaneVerdict(
                            True, f"DANE-TA: the chain verifies to certificate {index}", record
                        )
                    problems.append(problem)
    detail = f" ({'; '.join(problems)})" if problems else ""
    return DaneVerdict(
        False, f"no TLSA record matches the server's certificate chain{detail}"
    )


def _check_ta_chain(
    chain: list[x509.Certificate], names: Sequence[str], when: datetime.datetime
) -> str | None:
    """Why the chain from the leaf to the trust anchor (last) is not acceptable, or None."""
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError) as exc:
            return f"{child.subject.rfc4514_string()} is not issued by the next certificate: {exc}"
        except Exception as exc:  # InvalidSignature carries no message
            return f"{child.subject.rfc4514_string()} has a bad signature ({type(exc).__name__})"
    for cert in chain:
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            return f"{cert.subject.rfc4514_string()} is outside its validity period"
    leaf_names = certificate_names(chain[0])
    if not any(name_matches(p, n) for p in leaf_names for n in names):
        return f"the certificate names {leaf_names} match none of {list(names)}"
    return None
