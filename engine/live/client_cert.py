"""A client certificate for the pyOpenSSL stack, from two keysources.

``tls_certificate`` and ``tls_private_key`` are keysources of PEM text (a
file, inline data, the environment, Vault), read at each handshake so a
rotated certificate is picked up by the next connection.  They are set on
the context as KumoMTA's ``build_openssl_connector`` does
(crates/kumo-tls-helper/src/lib.rs): the first certificate is the leaf, the
rest its chain, and the key must match the leaf.  Every failure is a
`TlsHandshakeError` naming the key, never the secret.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from engine.errors import ConfigError
from engine.live.keysource_resolve import resolve_keysource
from engine.live.tls_info import TlsHandshakeError

__all__ = ["use_client_certificate"]


def use_client_certificate(ctx: SSL.Context, certificate: Any, private_key: Any) -> None:
    """Present the keysources' certificate (leaf first, then its chain) and key."""
    try:
        cert_pem = resolve_keysource(certificate).encode()
        key_pem = resolve_keysource(private_key).encode()
    except ConfigError as exc:
        raise TlsHandshakeError(f"client certificate: {exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TlsHandshakeError(f"tls_certificate holds no PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsHandshakeError(f"tls_private_key holds no PEM private key: {exc}") from None
    try:
        ctx.use_certificate(certs[0])
        for extra in certs[1:]:
            ctx.add_extra_chain_cert(extra)
        ctx.use_privatekey(key)  # type: ignore[arg-type]
        ctx.check_privatekey()
    except SSL.Error as exc:
        raise TlsHandshakeError(
            f"tls_private_key does not match tls_certificate: {exc}") from None
