"""TLS with pyOpenSSL over an asyncio transport (memory BIOs), for
``tls_prefer_openssl`` and DANE.

`loop.start_tls` accepts only an `ssl.SSLContext`, which cannot take
``openssl_cipher_suites`` nor hand over the whole peer chain DANE needs.  So
this module runs an `OpenSSL.SSL.Connection` in memory-BIO mode: ciphertext
from the raw transport goes in with ``bio_write``, ciphertext to send comes
out with ``bio_read``, and plaintext is exchanged with the caller's protocol
through `_OpenSSLTransport`, a minimal `asyncio.Transport`.  The raw transport
is re-pointed at `_Bridge`, which owns the connection; nothing else changes
for the caller, which gets back a transport like `start_tls` gives.

Host name checks: pyOpenSSL exposes no ``X509_VERIFY_PARAM_set1_host``, so
in `TlsMode.VERIFY` the chain is verified by OpenSSL during the handshake and
the name (subjectAltName DNS entries, RFC 6125 wildcards) afterwards, before
the transport is handed out.

A client certificate (``tls_certificate``/``tls_private_key``) is set on the
context by `engine.live.client_cert`.

``settings.fallback_clear``: a handshake that fails before completing (an
alert, garbage instead of a ServerHello) puts the raw transport back on the
caller's protocol and leaves it open, since only ciphertext of the handshake
was exchanged; KumoMTA does the same (crates/rfc5321/src/client.rs
``starttls``, the dup stream when ``!is_init_finished()``).  A timeout or a
refusal after a completed handshake closes it, as there.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from engine.effects import TlsMode, TlsSettings
from engine.live.client_cert import use_client_certificate
from engine.live.dane import certificate_names, dane_verify, name_matches, usable_record
from engine.live.tls_info import TlsHandshakeError, TlsInfo, subject_of

__all__ = ["OPENSSL_OPTIONS", "openssl_context", "openssl_upgrade", "parse_openssl_options"]

# The reference page's option names -> OpenSSL's SSL_OP_* bits.  The DTLS names
# share their TLS twins' bits in OpenSSL itself (SSL_OP_NO_DTLSv1 is
# SSL_OP_NO_TLSv1), so they act the same way here as in KumoMTA.
OPENSSL_OPTIONS: dict[str, int] = {
    "ALL": SSL.OP_ALL,
    "NO_QUERY_MTU": SSL.OP_NO_QUERY_MTU,
    "COOKIE_EXCHANGE": SSL.OP_COOKIE_EXCHANGE,
    "NO_TICKET": SSL.OP_NO_TICKET,
    "NO_SESSION_RESUMPTION_ON_RENEGOTIATION": 1 << 16,
    "NO_COMPRESSION": SSL.OP_NO_COMPRESSION,
    "ALLOW_UNSAFE_LEGACY_RENEGOTIATION": 1 << 18,
    "SINGLE_ECDH_USE": SSL.OP_SINGLE_ECDH_USE,
    "SINGLE_DH_USE": SSL.OP_SINGLE_DH_USE,
    "TLS_ROLLBACK_BUG": SSL.OP_TLS_ROLLBACK_BUG,
    "NO_SSLV2": SSL.OP_NO_SSLv2,
    "NO_SSLV3": SSL.OP_NO_SSLv3,
    "NO_TLSV1": SSL.OP_NO_TLSv1,
    "NO_TLSV1_1": SSL.OP_NO_TLSv1_1,
    "NO_TLSV1_2": SSL.OP_NO_TLSv1_2,
    "NO_TLSV1_3": SSL.OP_NO_TLSv1_3,
    "NO_DTLSV1": SSL.OP_NO_TLSv1,
    "NO_DTLSV1_2": SSL.OP_NO_TLSv1_2,
    "NO_RENEGOTIATION": SSL.OP_NO_RENEGOTIATION,
    "ENABLE_MIDDLEBOX_COMPAT": 1 << 20,
}

# X509_V_ERR_* codes a mail server's certificate commonly fails with.
_VERIFY_ERRORS = {
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
}

_READ_SIZE = 65536


def parse_openssl_options(text: str) -> int:
    """``"NO_TLSV1_3|NO_TICKET"`` -> the OR of the OpenSSL option bits."""
    bits = 0
    for part in text.split("|"):
        name = part.strip()
        if name not in OPENSSL_OPTIONS:
            raise TlsHandshakeError(
                f"openssl_options: unknown option {name!r} in {text!r}; valid names, joined "
                f"by '|', are: {', '.join(OPENSSL_OPTIONS)}"
            )
        bits |= OPENSSL_OPTIONS[name]
    return bits


def openssl_context(
    settings: TlsSettings, *, cafile: str | None, verify_errors: list[int]
) -> SSL.Context:
    """A client `SSL.Context` for `settings`; OpenSSL's verification failures
    are appended to `verify_errors` (X509_V_ERR codes) for the error message."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    try:
        if settings.openssl_cipher_list:
            ctx.set_cipher_list(settings.openssl_cipher_list.encode())
        if settings.openssl_cipher_suites:
            ctx.set_tls13_ciphersuites(settings.openssl_cipher_suites.encode())
    except SSL.Error as exc:
        raise TlsHandshakeError(f"OpenSSL refused the cipher settings: {exc}") from None
    if settings.openssl_options:
        ctx.set_options(parse_openssl_options(settings.openssl_options))
    if settings.certificate is not None and settings.private_key is not None:
        use_client_certificate(ctx, settings.certificate, settings.private_key)
    if settings.mode is TlsMode.VERIFY:

        def check(conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
            if not ok:
                verify_errors.append(errno)
            return bool(ok)

        ctx.set_verify(SSL.VERIFY_PEER, check)
        if cafile:
            ctx.load_verify_locations(cafile)
        else:
            ctx.set_default_verify_paths()
    else:
        # INSECURE verifies nothing; DANE verifies after the handshake, against TLSA.
        ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


async def openssl_upgrade(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    settings: TlsSettings,
    *,
    cafile: str | None,
    handshake_timeout: float,
) -> tuple[asyncio.Transport, TlsInfo]:
    """`engine.live.tls.upgrade` on the pyOpenSSL stack (same contract)."""
    verify_errors: list[int] = []
    try:
        ctx = openssl_context(settings, cafile=cafile, verify_errors=verify_errors)
    except TlsHandshakeError:
        transport.close()
        raise
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    conn.set_tlsext_host_name(settings.server_name.encode("idna"))
    bridge = _Bridge(loop, transport, conn, protocol)
    transport.set_protocol(bridge)
    bridge.start()
    try:
        await asyncio.wait_for(asyncio.shield(bridge.handshake), handshake_timeout)
    except TimeoutError:
        transport.abort()
        raise TlsHandshakeError(f"TLS handshake timed out after {handshake_timeout:g}s") from None
    except TlsHandshakeError as exc:
        if settings.fallback_clear and not transport.is_closing():
            transport.set_protocol(protocol)  # back to clear text on the same socket
            raise TlsHandshakeError(exc.reason, clear_kept=True) from None
        transport.abort()
        if verify_errors:
            what = _VERIFY_ERRORS.get(verify_errors[0], f"X509 error {verify_errors[0]}")
            raise TlsHandshakeError(
                f"certificate verification failed for {settings.server_name}: {what}"
            ) from None
        raise TlsHandshakeError(exc.reason) from None
    chain = [
        c.public_bytes(serialization.Encoding.DER)
        for c in conn.get_peer_cert_chain(as_cryptography=True) or []
    ]
    problem = _refusal(settings, chain)
    if problem is not None:
        transport.abort()
        raise TlsHandshakeError(problem)
    info = TlsInfo(
        protocol=conn.get_protocol_version_name(),
        cipher=conn.get_cipher_name() or "",
        peer_subject=subject_of(chain[0] if chain else None),
    )
    bridge.handshake_done()
    return bridge.app_transport, info


def _refusal(settings: TlsSettings, chain: list[bytes]) -> str | None:
    """Why the completed handshake must be refused (name or DANE check), or None."""
    if settings.mode is TlsMode.VERIFY:
        from cryptography import x509

        names = certificate_names(x509.load_der_x509_certificate(chain[0])) if chain else []
        if not any(name_matches(n, settings.server_name) for n in names):
            return (
                f"certificate verification failed: the certificate is for {names}, "
                f"not {settings.server_name}"
            )
    elif settings.mode is TlsMode.DANE:
        usable = [r for r in settings.tlsa if usable_record(r)]
        if not usable:
            return None  # RFC 7672 2.2: no usable record -> encrypted, unauthenticated
        verdict = dane_verify(usable, chain, [settings.server_name])
        if not verdict.ok:
            return f"DANE verification failed for {settings.server_name}: {verdict.reason}"
    return None


class _Bridge(asyncio.Protocol):
    """The protocol of the raw transport: feeds OpenSSL and relays plaintext."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        raw: asyncio.Transport,
        conn: SSL.Connection,
        app: asyncio.BaseProtocol,
    ) -> None:
        self.raw = raw
        self.conn = conn
        self.app = app
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.app_transport = _OpenSSLTransport(self)
        self._established = False  # the caller has the transport: relay to `app`
        self._pending = b""  # plaintext that arrived before the caller took over

    def start(self) -> None:
        self._step_handshake()

    def handshake_done(self) -> None:
        self._established = True
        if self._pending:
            data, self._pending = self._pending, b""
            self.app.data_received(data)  # type: ignore[attr-defined]

    def flush(self) -> None:
        """Send whatever ciphertext OpenSSL has produced."""
        out = []
        while True:
            try:
                chunk = self.conn.bio_read(_READ_SIZE)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out.append(chunk)
        if out and not self.raw.is_closing():
            self.raw.write(b"".join(out))

    def _step_handshake(self) -> None:
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            self.flush()
            return
        except SSL.Error as exc:
            self.flush()
            self._fail(f"TLS handshake failed: {_ssl_reason(exc)}")
            return
        self.flush()
        if not self.handshake.done():
            self.handshake.set_result(None)

    def _fail(self, reason: str) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(TlsHandshakeError(reason))

    def data_received(self, data: bytes) -> None:
        if self.handshake.done() and self.handshake.exception() is not None:
            return  # the handshake failed: nothing to decrypt, the caller takes over
        self.conn.bio_write(data)
        if not self.handshake.done():
            self._step_handshake()
            if not self.handshake.done() or self.handshake.exception() is not None:
                return
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                chunks.append(self.conn.recv(_READ_SIZE))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                closed = True
                break
            except SSL.Error:
                closed = True
                break
        self.flush()
        plain = b"".join(chunks)
        if plain:
            if self._established:
                self.app.data_received(plain)  # type: ignore[attr-defined]
            else:
                self._pending += plain
        if closed:
            self.raw.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost during the TLS handshake{f': {exc}' if exc else ''}")
        if self._established:
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        self.app.pause_writing()

    def resume_writing(self) -> None:
        self.app.resume_writing()


class _OpenSSLTransport(asyncio.Transport):
    """The plaintext side handed to the caller: writes are encrypted onto the raw transport."""

    def __init__(self, bridge: _Bridge) -> None:
        super().__init__()
        self._bridge = bridge
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._bridge.conn.sendall(bytes(data))
        self._bridge.flush()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(SSL.Error):
            self._bridge.conn.shutdown()
        self._bridge.flush()
        self._bridge.raw.close()

    def abort(self) -> None:
        self._closing = True
        self._bridge.raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self._bridge.raw.is_closing()

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        conn = self._bridge.conn
        if name == "openssl_connection":
            return conn
        if name == "cipher":
            return (conn.get_cipher_name(), conn.get_cipher_version(), conn.get_cipher_bits())
        if name == "peercert":
            cert = conn.get_peer_certificate()
            return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) if cert else default
        return self._bridge.raw.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._bridge.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._bridge.app

    def pause_reading(self) -> None:
        self._bridge.raw.pause_reading()

    def resume_reading(self) -> None:
        self._bridge.raw.resume_reading()

    def is_reading(self) -> bool:
        return self._bridge.raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._bridge.raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._bridge.raw.set_write_buffer_limits(high, low)


def _ssl_reason(exc: SSL.Error) -> str:
    """OpenSSL's error queue as one short string."""
    parts = []
    for entry in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(entry, tuple) and entry:
            parts.append(str(entry[-1]))
    return ", ".join(parts) or str(exc) or type(exc).__name__
