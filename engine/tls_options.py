"""TLS tuning keys: what the pure core can check, and the hook for what it cannot.

KumoMTA has two TLS stacks: rustls (preferred unless ``tls_prefer_openssl``
or DANE) and OpenSSL.  Python has no rustls.  egress maps both onto OpenSSL:
the live driver uses the stdlib `ssl` module (which is OpenSSL underneath)
for the "prefer rustls" default and pyOpenSSL where DANE or
``tls_prefer_openssl`` needs OpenSSL's own API.  No setting is silently
ignored:

- ``openssl_cipher_list`` (TLS <= 1.2, OpenSSL cipher-string syntax) and
  ``openssl_cipher_suites`` (TLS 1.3 names joined by ``:``) are applied with
  ``SSL_CTX_set_cipher_list`` / ``SSL_CTX_set_ciphersuites``.
- ``openssl_options`` names from the reference page are OR-ed into the
  context's options.
- ``rustls_cipher_suites`` is enforced by restricting the context to the
  OpenSSL equivalents of the listed suites (`RUSTLS_TO_OPENSSL`): TLS 1.3
  names restrict the TLS 1.3 ciphersuites, TLS 1.2 names the cipher list; if
  only TLS 1.3 names are given, TLS 1.2 is disabled, since rustls would not
  offer a TLS 1.2 suite either.  The live driver also verifies that the
  negotiated suite is one of them.

The core may not import ssl or OpenSSL, so this module checks what needs no
TLS library: option names, the fixed TLS 1.3 suite names, rustls suite names,
and cipher-list syntax (allowed characters, no empty tokens).  Whether the
linked OpenSSL actually accepts a cipher list is checked by a `TlsValidator`
that a driver injects; `engine.live.tls_check` provides the real one, and
`egress check` runs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from engine.errors import ConfigError

__all__ = [
    "OPENSSL_OPTION_NAMES",
    "RUSTLS_CIPHER_SUITES",
    "RUSTLS_TO_OPENSSL",
    "TLS13_SUITE_NAMES",
    "TlsValidator",
    "check_cipher_list",
    "check_cipher_suites",
    "check_openssl_options",
    "check_rustls_cipher_suites",
    "validate_with",
]

OPENSSL_OPTION_NAMES: tuple[str, ...] = (
    "ALL",
    "NO_QUERY_MTU",
    "COOKIE_EXCHANGE",
    "NO_TICKET",
    "NO_SESSION_RESUMPTION_ON_RENEGOTIATION",
    "NO_COMPRESSION",
    "ALLOW_UNSAFE_LEGACY_RENEGOTIATION",
    "SINGLE_ECDH_USE",
    "SINGLE_DH_USE",
    "TLS_ROLLBACK_BUG",
    "NO_SSLV2",
    "NO_SSLV3",
    "NO_TLSV1",
    "NO_TLSV1_1",
    "NO_TLSV1_2",
    "NO_TLSV1_3",
    "NO_DTLSV1",
    "NO_DTLSV1_2",
    "NO_RENEGOTIATION",
    "ENABLE_MIDDLEBOX_COMPAT",
)

# The TLS 1.3 suites OpenSSL knows (SSL_CTX_set_ciphersuites names).
TLS13_SUITE_NAMES: tuple[str, ...] = (
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)

# rustls suite name -> OpenSSL name (TLS 1.3 suites, then rustls' TLS 1.2 ones).
RUSTLS_TO_OPENSSL: dict[str, str] = {
    "TLS13_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
RUSTLS_CIPHER_SUITES: tuple[str, ...] = tuple(RUSTLS_TO_OPENSSL)

_CIPHER_TOKEN = re.compile(r"[!+\-]?@?[A-Za-z0-9_.=\-+]+")


class TlsValidator(Protocol):
    """Checks cipher strings against a real TLS library; raises ValueError
    (any message) when the library refuses the string."""

    def cipher_list(self, text: str) -> None:
        """Accept or refuse an OpenSSL cipher list (TLS <= 1.2)."""

    def cipher_suites(self, text: str) -> None:
        """Accept or refuse a TLS 1.3 ciphersuites string."""


def check_openssl_options(value: object, *, key: str = "openssl_options") -> str:
    """Validate ``"NO_TLSV1|NO_TICKET"``; return it normalised (no spaces)."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: {value!r} is not a string of option names joined by '|'")
    names = [part.strip() for part in value.split("|")]
    for name in names:
        if name not in OPENSSL_OPTION_NAMES:
            raise ConfigError(
                f"{key}: {value!r} contains unknown option {name!r}; valid names, joined by "
                f"'|', are: {', '.join(OPENSSL_OPTION_NAMES)}"
            )
    return "|".join(names)


def check_cipher_list(value: object, *, key: str = "openssl_cipher_list") -> str:
    """Syntax check of an OpenSSL cipher list (``"ECDHE+AESGCM:!aNULL"``)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{key}: {value!r} is not an OpenSSL cipher list; expected a non-empty string "
            "such as 'ECDHE+AESGCM:!aNULL'"
        )
    for token in re.split(r"[:, ]", value.strip()):
        if not token:
            raise ConfigError(f"{key}: {value!r} has an empty entry (doubled ':' or ',')")
        if not _CIPHER_TOKEN.fullmatch(token):
            raise ConfigError(
                f"{key}: {value!r} has a malformed entry {token!r}; entries are cipher names "
                "or aliases, optionally prefixed by '!', '-' or '+', separated by ':'"
            )
    return value.strip()


def check_cipher_suites(value: object, *, key: str = "openssl_cipher_suites") -> str:
    """Check a TLS 1.3 suites string (``"TLS_AES_256_GCM_SHA384:..."``): every
    name must be one OpenSSL knows."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{key}: {value!r} is not a TLS 1.3 suite list; expected names joined by ':' from "
            f"{', '.join(TLS13_SUITE_NAMES)}"
        )
    for name in value.strip().split(":"):
        if name not in TLS13_SUITE_NAMES:
            raise ConfigError(
                f"{key}: {value!r} contains unknown TLS 1.3 suite {name!r}; valid names, "
                f"joined by ':', are: {', '.join(TLS13_SUITE_NAMES)}"
            )
    return value.strip()


def check_rustls_cipher_suites(
    value: object, *, key: str = "rustls_cipher_suites"
) -> tuple[str, ...]:
    """Check a list of rustls suite names; return them as a tuple."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(
            f"{key}: {value!r} is not a list of suite names; expected e.g. "
            "['TLS13_AES_256_GCM_SHA384']"
        )
    names = tuple(value)
    if not names:
        raise ConfigError(f"{key}: an empty list would allow no cipher suite at all")
    for name in names:
        if name not in RUSTLS_TO_OPENSSL:
            raise ConfigError(
                f"{key}: {name!r} is not a known rustls cipher suite; valid names are: "
                f"{', '.join(RUSTLS_CIPHER_SUITES)}"
            )
    return names


def validate_with(
    validator: TlsValidator,
    *,
    openssl_cipher_list: str | None,
    openssl_cipher_suites: str | None,
) -> None:
    """Run a real TLS library's checks over the cipher strings of a config; a
    refusal becomes a `ConfigError` naming the key and the value."""
    for key, text, check in (
        ("openssl_cipher_list", openssl_cipher_list, validator.cipher_list),
        ("openssl_cipher_suites", openssl_cipher_suites, validator.cipher_suites),
    ):
        if text is None:
            continue
        try:
            check(text)
        except ValueError as exc:
            raise ConfigError(f"{key}: {text!r} is refused by OpenSSL: {exc}") from None
