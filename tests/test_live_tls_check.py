"""engine.live.tls_check: cipher strings checked against the real OpenSSL."""

from __future__ import annotations

import pytest
from OpenSSL import SSL

from engine.config import make_egress_path
from engine.errors import ConfigError
from engine.live.tls_check import (
    OPENSSL_OPTION_BITS,
    OpenSslValidator,
    openssl_option_bits,
    rustls_restriction,
    verify_tls_config,
)
from engine.tls_options import OPENSSL_OPTION_NAMES


def test_every_option_name_has_bits() -> None:
    assert set(OPENSSL_OPTION_BITS) == set(OPENSSL_OPTION_NAMES)
    assert openssl_option_bits("NO_TLSV1|NO_TLSV1_1") == SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1
    assert openssl_option_bits(None) == 0
    assert openssl_option_bits("NO_DTLSV1") == 0  # DTLS-only: must not disable TLS 1.0


VALID = {
    "openssl_cipher_list": "ECDHE+AESGCM:!aNULL:@STRENGTH",
    "openssl_cipher_suites": "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
    "rustls_cipher_suites": ["TLS13_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
}


def test_valid_cipher_settings_pass() -> None:
    assert verify_tls_config(make_egress_path(**VALID)) is None
    # OpenSSL itself (the reference) takes the list and selects what it says:
    # TLS 1.2 ciphers that are all ECDHE with AES-GCM.
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_cipher_list(VALID["openssl_cipher_list"].encode())
    tls12 = [n for n in SSL.Connection(ctx).get_cipher_list() if not n.startswith("TLS_")]
    assert tls12 and all(n.startswith("ECDHE-") and "GCM" in n for n in tls12), tls12
    # One wrong letter in any of the three settings is refused, naming the key:
    # the pass above is the check's verdict, not a check that never ran.
    for key, bad in (("openssl_cipher_list", "ECDHE+AESGCM:ECDHE-RSA-AES256-GCM-SHA385"),
                     ("openssl_cipher_suites", "TLS_AES_256_GCM_SHA385"),
                     ("rustls_cipher_suites", ["TLS13_AES_128_GCM_SHA257"])):
        with pytest.raises(ConfigError, match=f"^{key}"):
            verify_tls_config(make_egress_path(**{**VALID, key: bad}))


def test_misspelt_entry_is_caught_even_when_the_list_matches_something() -> None:
    # OpenSSL alone accepts "HIGH:ECDHE-RSA-AES256-GCM-SHA385" (HIGH matches); we do not.
    SSL.Context(SSL.TLS_CLIENT_METHOD).set_cipher_list(b"HIGH:ECDHE-RSA-AES256-GCM-SHA385")
    cfg = make_egress_path(openssl_cipher_list="HIGH:ECDHE-RSA-AES256-GCM-SHA385")
    with pytest.raises(ConfigError) as err:
        verify_tls_config(cfg)
    assert str(err.value) == (
        "openssl_cipher_list: 'HIGH:ECDHE-RSA-AES256-GCM-SHA385' is refused by OpenSSL: "
        "entry 'ECDHE-RSA-AES256-GCM-SHA385' matches no cipher"
    )


def test_list_matching_nothing_is_refused() -> None:
    with pytest.raises(ConfigError, match="openssl_cipher_list: 'NOTACIPHER' is refused"):
        verify_tls_config(make_egress_path(openssl_cipher_list="NOTACIPHER"))
    with pytest.raises(ValueError, match="no cipher matches"):
        OpenSslValidator().cipher_list("!ALL")


def test_rustls_restriction_mapping() -> None:
    assert rustls_restriction(None) == (None, None, False)
    assert rustls_restriction(("TLS13_AES_256_GCM_SHA384",)) == (
        None, "TLS_AES_256_GCM_SHA384", True)
    assert rustls_restriction(
        ("TLS13_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
    ) == ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_CHACHA20_POLY1305_SHA256", False)
