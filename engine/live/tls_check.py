"""Checking and applying the TLS tuning keys against the real OpenSSL.

The pure core (`engine.tls_options`) checks names and syntax; this module,
in the live driver, asks the linked OpenSSL itself (through pyOpenSSL and the
stdlib `ssl` module, which share it).  `egress check` runs `verify_tls_config`
on every egress path it prints; the live driver uses `openssl_option_bits`
and `rustls_restriction` when it builds a context.

How the settings map (see also `engine.tls_options`):

- "prefer rustls" (``tls_prefer_openssl = false``): Python has no rustls, so
  the driver uses the stdlib `ssl` module; ``tls_prefer_openssl = true`` or
  DANE uses pyOpenSSL.  Both are OpenSSL underneath, so every key below
  applies to either.
- ``openssl_cipher_list``: each entry is tried on a throwaway context on its
  own, because OpenSSL accepts a whole list as long as one entry matches and
  would silently drop a misspelt one.  Negations (``!x``, ``-x``) and
  reordering (``+x``) and ``@`` directives cannot match alone and are only
  checked as part of the whole list.
- ``openssl_cipher_suites``: set with ``SSL_CTX_set_ciphersuites``.
- ``openssl_options``: the page's names map to OpenSSL's ``SSL_OP_*`` bits.
  The DTLS-only options (NO_QUERY_MTU, COOKIE_EXCHANGE, NO_DTLSV1,
  NO_DTLSV1_2) do nothing on the TCP connections egress makes (as the page
  says) and map to 0: in OpenSSL NO_DTLSV1 shares its bit with NO_TLSV1, and
  applying it to a TLS context would disable TLS 1.0 by accident.
- ``rustls_cipher_suites``: enforced by restriction (`rustls_restriction`)
  and by the driver checking the negotiated suite.
"""

from __future__ import annotations

import re
import ssl

from OpenSSL import SSL

from engine.config import EgressPathConfig
from engine.errors import ConfigError
from engine.tls_options import OPENSSL_OPTION_NAMES, RUSTLS_TO_OPENSSL, validate_with

__all__ = [
    "OPENSSL_OPTION_BITS",
    "OpenSslValidator",
    "openssl_option_bits",
    "rustls_restriction",
    "verify_tls_config",
]

# OpenSSL 1.1.1/3.x ssl.h values for the bits neither ssl nor pyOpenSSL export.
_SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION = 1 << 16
_SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION = 1 << 18
_SSL_OP_TLS_ROLLBACK_BUG = 1 << 23
_SSL_OP_ENABLE_MIDDLEBOX_COMPAT = 1 << 20

OPENSSL_OPTION_BITS: dict[str, int] = {
    "ALL": int(SSL.OP_ALL),
    "NO_QUERY_MTU": 0,
    "COOKIE_EXCHANGE": 0,
    "NO_TICKET": int(SSL.OP_NO_TICKET),
    "NO_SESSION_RESUMPTION_ON_RENEGOTIATION": _SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION,
    "NO_COMPRESSION": int(SSL.OP_NO_COMPRESSION),
    "ALLOW_UNSAFE_LEGACY_RENEGOTIATION": _SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION,
    "SINGLE_ECDH_USE": int(SSL.OP_SINGLE_ECDH_USE),
    "SINGLE_DH_USE": int(SSL.OP_SINGLE_DH_USE),
    "TLS_ROLLBACK_BUG": _SSL_OP_TLS_ROLLBACK_BUG,
    "NO_SSLV2": int(SSL.OP_NO_SSLv2),
    "NO_SSLV3": int(SSL.OP_NO_SSLv3),
    "NO_TLSV1": int(SSL.OP_NO_TLSv1),
    "NO_TLSV1_1": int(SSL.OP_NO_TLSv1_1),
    "NO_TLSV1_2": int(SSL.OP_NO_TLSv1_2),
    "NO_TLSV1_3": int(SSL.OP_NO_TLSv1_3),
    "NO_DTLSV1": 0,
    "NO_DTLSV1_2": 0,
    "NO_RENEGOTIATION": int(SSL.OP_NO_RENEGOTIATION),
    "ENABLE_MIDDLEBOX_COMPAT": int(
        getattr(ssl, "OP_ENABLE_MIDDLEBOX_COMPAT", _SSL_OP_ENABLE_MIDDLEBOX_COMPAT)
    ),
}
assert set(OPENSSL_OPTION_BITS) == set(OPENSSL_OPTION_NAMES)


def openssl_option_bits(options: str | None) -> int:
    """The OR of the ``SSL_OP_*`` bits named in an ``openssl_options`` string."""
    if not options:
        return 0
    bits = 0
    for name in options.split("|"):
        bits |= OPENSSL_OPTION_BITS[name.strip()]
    return bits


class OpenSslValidator:
    """A `engine.tls_options.TlsValidator` backed by pyOpenSSL and `ssl`."""

    def cipher_list(self, text: str) -> None:
        """Refuse the list if OpenSSL refuses it, or refuses any positive entry
        on its own (OpenSSL would otherwise drop a misspelt entry silently)."""
        self._set_list(text)
        for token in re.split(r"[:, ]", text):
            if token and token[0] not in "!-+@":
                try:
                    self._set_list(token)
                except ValueError:
                    raise ValueError(f"entry {token!r} matches no cipher") from None
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(text)
        except ssl.SSLError as exc:
            raise ValueError(f"the ssl module refuses it ({exc.reason})") from None

    def cipher_suites(self, text: str) -> None:
        """Refuse a TLS 1.3 suite list OpenSSL refuses."""
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        for name in text.split(":"):
            try:
                ctx.set_tls13_ciphersuites(name.encode("ascii"))
            except (SSL.Error, UnicodeEncodeError):
                raise ValueError(f"suite {name!r} is not supported by this OpenSSL") from None

    @staticmethod
    def _set_list(text: str) -> None:
        try:
            SSL.Context(SSL.TLS_CLIENT_METHOD).set_cipher_list(text.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            raise ValueError("no cipher matches") from None


def rustls_restriction(
    suites: tuple[str, ...] | None,
) -> tuple[str | None, str | None, bool]:
    """What ``rustls_cipher_suites`` means for an OpenSSL context:
    ``(cipher_list for TLS <= 1.2, ciphersuites for TLS 1.3, disable_tls12)``.
    ``(None, None, False)`` when unset.  With only TLS 1.3 suites listed, TLS 1.2
    is disabled (rustls would offer no TLS 1.2 suite); with only TLS 1.2 suites,
    TLS 1.3 is left with no suite, i.e. the list is ``""`` and the driver must
    disable TLS 1.3."""
    if suites is None:
        return None, None, False
    tls13 = [RUSTLS_TO_OPENSSL[s] for s in suites if s.startswith("TLS13_")]
    tls12 = [RUSTLS_TO_OPENSSL[s] for s in suites if not s.startswith("TLS13_")]
    return (":".join(tls12) or None, ":".join(tls13), not tls12)


def verify_tls_config(cfg: EgressPathConfig) -> None:
    """Check `cfg`'s cipher settings against the linked OpenSSL; a `ConfigError`
    naming the key and value when it refuses one."""
    validate_with(
        OpenSslValidator(),
        openssl_cipher_list=cfg.openssl_cipher_list,
        openssl_cipher_suites=cfg.openssl_cipher_suites,
    )
    if cfg.rustls_cipher_suites is not None:
        tls12, tls13, _ = rustls_restriction(cfg.rustls_cipher_suites)
        validator = OpenSslValidator()
        try:
            if tls12:
                validator.cipher_list(tls12)
            if tls13:
                validator.cipher_suites(tls13)
        except ValueError as exc:
            raise ConfigError(
                f"rustls_cipher_suites: {list(cfg.rustls_cipher_suites)!r} cannot be enforced "
                f"with this OpenSSL: {exc}"
            ) from None
