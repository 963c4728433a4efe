"""What both client TLS stacks share: the handshake error, what was negotiated,
and the peer certificate's subject as a string.

Its own module so `engine.live.tls` (the stdlib stack, which picks the stack)
and `engine.live.openssl_tls` (pyOpenSSL) both import it and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from engine.errors import EgressError

__all__ = ["TlsHandshakeError", "TlsInfo", "subject_of"]


class TlsHandshakeError(EgressError):
    """The TLS handshake failed or its result was refused; `reason` says why.
    `clear_kept`: the connection is still open and back in clear text (asked
    for with `TlsSettings.fallback_clear`), its protocol restored."""

    def __init__(self, reason: str, *, clear_kept: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.clear_kept = clear_kept


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What was negotiated: protocol (``"TLSv1.3"``), cipher (OpenSSL name) and
    the peer certificate's subject (RFC 4514 string, "" when none)."""

    protocol: str
    cipher: str
    peer_subject: str


def subject_of(cert_der: bytes | None) -> str:
    """The RFC 4514 subject of a DER certificate ("" when there is none)."""
    if not cert_der:
        return ""
    try:
        return x509.load_der_x509_certificate(cert_der).subject.rfc4514_string()
    except ValueError:
        return ""
