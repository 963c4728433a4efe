"""Client TLS for the live driver: one coroutine, `upgrade`, turns a connected
asyncio transport into a TLS one after the server's 220 to STARTTLS.

KumoMTA has two TLS stacks, rustls by default and OpenSSL when
``tls_prefer_openssl`` is set or DANE is in use.  Python has no rustls, so:

- the default stack is the stdlib `ssl` module (OpenSSL underneath, driven
  through `loop.start_tls`, the fastest path asyncio offers);
- pyOpenSSL (`engine.live.openssl_tls`) is used when ``settings.prefer_openssl``
  (so ``openssl_cipher_list``, ``openssl_cipher_suites`` and ``openssl_options``
  apply exactly as OpenSSL takes them) and always for `TlsMode.DANE`, which
  needs the whole presented chain (the stdlib gives only the leaf before
  Python 3.13), for a client certificate (``tls_certificate`` and
  ``tls_private_key`` are keysources, read into memory; the `ssl` module
  loads a certificate only from a file), and for ``settings.fallback_clear``:
  after a failed handshake KumoMTA goes on in clear on the same socket
  (OpportunisticInsecure), and `loop.start_tls` cannot do that, since asyncio's
  SSL protocol force-closes the transport when the handshake fails
  (``SSLProtocol._on_handshake_complete`` -> ``_fatal_error``); the memory-BIO
  bridge hands the clear transport back instead.

``rustls_cipher_suites`` on the stdlib stack: the `ssl` module cannot restrict
TLS 1.3 suites (it has no ``set_ciphersuites``), so the listed TLS 1.2 suites
restrict the cipher list, the protocol range is narrowed when only TLS 1.3 (or
only TLS 1.2) suites are listed, and after the handshake the negotiated suite
is checked against the list; a suite outside it fails the handshake (the
connection is closed and `TlsHandshakeError` raised).  The ``openssl_*`` keys
are ignored on this stack and ``rustls_cipher_suites`` on the OpenSSL one, as
in KumoMTA.

Verification: `TlsMode.VERIFY` checks the chain (against `cafile` if given,
else the system store) and the host name `settings.server_name`;
`TlsMode.INSECURE` checks nothing; `TlsMode.DANE` matches the chain against
`settings.tlsa` (RFC 7672, `engine.live.dane`).

On failure the connection is closed, the protocol is not called, and
`TlsHandshakeError(reason)` is raised: the caller reports `TlsFailed` and
`Closed` itself.  With ``settings.fallback_clear`` a handshake that failed
before completing leaves the connection open in clear, feeding `protocol`
again, and the error says so (``clear_kept``).
"""

from __future__ import annotations

import asyncio
import ssl

from engine.effects import TlsMode, TlsSettings
from engine.live.openssl_tls import openssl_upgrade
from engine.live.tls_info import TlsHandshakeError, TlsInfo, subject_of
from engine.tls_options import RUSTLS_TO_OPENSSL

__all__ = ["TlsHandshakeError", "TlsInfo", "stdlib_context", "subject_of", "upgrade"]

DEFAULT_HANDSHAKE_TIMEOUT = 60.0


async def upgrade(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    settings: TlsSettings,
    *,
    cafile: str | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> tuple[asyncio.Transport, TlsInfo]:
    """Run the client handshake over `transport`; return the TLS transport
    (feeding `protocol`) and what was negotiated.

    Raises `TlsHandshakeError` (the connection then closed) when the handshake
    fails, times out, or its outcome is refused (verification, DANE mismatch,
    a suite outside ``rustls_cipher_suites``).
    """
    if (settings.prefer_openssl or settings.mode is TlsMode.DANE or settings.fallback_clear
            or settings.certificate is not None):
        return await openssl_upgrade(
            loop, transport, protocol, settings, cafile=cafile, handshake_timeout=handshake_timeout
        )
    ctx, allowed = stdlib_context(settings, cafile=cafile)
    try:
        # Our own deadline, so a timeout reads as one; start_tls's own (later)
        # one would surface as a ConnectionAbortedError.
        new_transport = await asyncio.wait_for(
            loop.start_tls(
                transport,
                protocol,
                ctx,
                server_side=False,
                server_hostname=settings.server_name,
                ssl_handshake_timeout=handshake_timeout + 1.0,
            ),
            handshake_timeout,
        )
    except ssl.SSLCertVerificationError as exc:
        raise TlsHandshakeError(
            f"certificate verification failed for {settings.server_name}: {exc.verify_message}"
        ) from None
    except ssl.SSLError as exc:
        raise TlsHandshakeError(f"TLS handshake failed: {exc.reason or exc}") from None
    except TimeoutError:
        transport.close()
        raise TlsHandshakeError(
            f"TLS handshake timed out after {handshake_timeout:g}s"
        ) from None
    except (ConnectionError, OSError) as exc:
        transport.close()
        raise TlsHandshakeError(f"connection lost during the TLS handshake: {exc}") from None
    if new_transport is None:  # pragma: no cover - only when the loop is closing
        raise TlsHandshakeError("the event loop refused to start TLS")
    sslobj = new_transport.get_extra_info("ssl_object")
    cipher = sslobj.cipher()[0] if sslobj.cipher() else ""
    info = TlsInfo(
        protocol=sslobj.version() or "",
        cipher=cipher,
        peer_subject=subject_of(sslobj.getpeercert(binary_form=True)),
    )
    if allowed is not None and cipher not in allowed:
        new_transport.abort()
        raise TlsHandshakeError(
            f"negotiated cipher suite {cipher} ({info.protocol}) is not in "
            f"rustls_cipher_suites {list(settings.rustls_cipher_suites or ())}"
        )
    return new_transport, info


def stdlib_context(
    settings: TlsSettings, *, cafile: str | None = None
) -> tuple[ssl.SSLContext, frozenset[str] | None]:
    """The `ssl.SSLContext` for `settings` (VERIFY or INSECURE), and the OpenSSL
    names of the suites ``rustls_cipher_suites`` allows (None: no restriction)."""
    if settings.mode is TlsMode.VERIFY:
        ctx = ssl.create_default_context(cafile=cafile)
    elif settings.mode is TlsMode.INSECURE:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        raise TlsHandshakeError(f"TLS mode {settings.mode} needs the OpenSSL stack")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    suites = settings.rustls_cipher_suites
    if not suites:
        return ctx, None
    unknown = [s for s in suites if s not in RUSTLS_TO_OPENSSL]
    if unknown:
        raise TlsHandshakeError(
            f"rustls_cipher_suites: unknown suite {unknown[0]!r}; valid names are: "
            f"{', '.join(RUSTLS_TO_OPENSSL)}"
        )
    tls13 = [RUSTLS_TO_OPENSSL[s] for s in suites if s.startswith("TLS13_")]
    tls12 = [RUSTLS_TO_OPENSSL[s] for s in suites if not s.startswith("TLS13_")]
    if tls12:
        ctx.set_ciphers(":".join(tls12))
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if not tls13:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx, frozenset(tls12 + tls13)

