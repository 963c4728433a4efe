"""engine.live.dane: RFC 7672 matching with trustme certificates and computed TLSA data."""

from __future__ import annotations

import datetime
import hashlib
import pathlib

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine.events import TlsaRecord, TlsaResolved
from engine.live.dane import (
    certificate_names,
    dane_verify,
    name_matches,
    tlsa_association,
    usable_tlsa,
)
from tests.support.certs import ServerCert, issue, self_signed

HOST = "mx1.example.com"


@pytest.fixture
def server(ca: trustme.CA, tmp_path: pathlib.Path) -> ServerCert:
    return issue(ca, tmp_path, HOST, include_root=True)


def rec(usage: int, selector: int, mtype: int, cert_der: bytes) -> TlsaRecord:
    return TlsaRecord(
        usage=usage, selector=selector, mtype=mtype,
        data=tlsa_association(cert_der, selector, mtype),
    )


def test_association_data_for_each_selector_and_matching_type(server: ServerCert) -> None:
    leaf_der = server.chain_der[0]
    spki = x509.load_der_x509_certificate(leaf_der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert tlsa_association(leaf_der, 0, 0) == leaf_der
    assert tlsa_association(leaf_der, 0, 1) == hashlib.sha256(leaf_der).digest()
    assert tlsa_association(leaf_der, 1, 1) == hashlib.sha256(spki).digest()
    assert tlsa_association(leaf_der, 1, 2) == hashlib.sha512(spki).digest()
    with pytest.raises(ValueError, match=r"selector must be 0 .* or 1 .*, not 7"):
        tlsa_association(leaf_der, 7, 1)
    with pytest.raises(ValueError, match=r"matching type must be 0, 1 .* or 2 .*, not 3"):
        tlsa_association(leaf_der, 0, 3)


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_dane_ee_matches_every_selector_and_matching_type(
    server: ServerCert, selector: int, mtype: int
) -> None:
    record = rec(3, selector, mtype, server.chain_der[0])
    verdict = dane_verify([record], server.chain_der, ["other.name.example"])
    assert verdict.ok is True
    assert verdict.record == record
    assert verdict.reason == "DANE-EE: the server certificate matches"


def test_dane_ee_ignores_names_and_expiry(server: ServerCert) -> None:
    record = rec(3, 1, 1, server.chain_der[0])
    far_future = datetime.datetime(2999, 1, 1, tzinfo=datetime.UTC)
    assert dane_verify([record], server.chain_der[:1], ["x.invalid"], now=far_future).ok


def test_mismatch_fails(server: ServerCert, tmp_path: pathlib.Path) -> None:
    other = self_signed(tmp_path, HOST)
    record = rec(3, 1, 1, other.chain_der[0])
    verdict = dane_verify([record], server.chain_der, [HOST])
    assert verdict.ok is False
    assert verdict.reason == "no TLSA record matches the server's certificate chain"


def test_dane_ta_matches_the_presented_ca_with_name_check(
    ca: trustme.CA, server: ServerCert
) -> None:
    ca_der = server.chain_der[-1]
    for selector, mtype in [(0, 1), (1, 1), (1, 2), (0, 0)]:
        record = rec(2, selector, mtype, ca_der)
        verdict = dane_verify([record], server.chain_der, [HOST])
        assert verdict.ok is True
        assert verdict.reason == "DANE-TA: the chain verifies to certificate 1"
    wrong_name = dane_verify([rec(2, 1, 1, ca_der)], server.chain_der, ["mx9.example.com"])
    assert wrong_name.ok is False
    assert "match none of ['mx9.example.com']" in wrong_name.reason


def test_dane_ta_through_an_intermediate(ca: trustme.CA, tmp_path: pathlib.Path) -> None:
    intermediate = ca.create_child_ca()
    server = issue(intermediate, tmp_path, HOST)
    root_der = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(
        serialization.Encoding.DER
    )
    chain = (*server.chain_der, root_der)
    assert len(chain) == 3
    verdict = dane_verify([rec(2, 1, 1, root_der)], chain, [HOST])
    assert (verdict.ok, verdict.reason) == (True, "DANE-TA: the chain verifies to certificate 2")


def test_dane_ta_rejects_a_chain_that_does_not_verify(
    server: ServerCert, tmp_path: pathlib.Path
) -> None:
    # the server claims an unrelated CA as its issuer: the record matches it, the chain does not
    stranger = trustme.CA()
    stranger_der = x509.load_pem_x509_certificate(stranger.cert_pem.bytes()).public_bytes(
        serialization.Encoding.DER
    )
    chain = (server.chain_der[0], stranger_der)
    verdict = dane_verify([rec(2, 1, 1, stranger_der)], chain, [HOST])
    assert verdict.ok is False
    assert "is not issued by the next certificate" in verdict.reason


def test_dane_ta_checks_validity(server: ServerCert) -> None:
    before_issue = datetime.datetime(1990, 1, 1, tzinfo=datetime.UTC)  # trustme: from 2000
    verdict = dane_verify([rec(2, 1, 1, server.chain_der[-1])], server.chain_der, [HOST],
                          now=before_issue)
    assert verdict.ok is False
    assert "outside its validity period" in verdict.reason


def test_pkix_usages_and_unknown_parameters_are_ignored(server: ServerCert) -> None:
    leaf = server.chain_der[0]
    pkix_ee = rec(1, 1, 1, leaf)
    pkix_ta = rec(0, 1, 1, server.chain_der[-1])
    odd = TlsaRecord(usage=3, selector=1, mtype=9, data=b"x")
    resolved = TlsaResolved(at=0.0, host=HOST, port=25, records=(pkix_ee, pkix_ta, odd),
                            secure=True)
    assert usable_tlsa(resolved) == ()
    verdict = dane_verify([pkix_ee, pkix_ta], server.chain_der, [HOST])
    assert verdict == dane_verify([], server.chain_der, [HOST])
    assert (verdict.ok, verdict.reason) == (
        False, "no usable DANE-TA(2) or DANE-EE(3) TLSA record"
    )


def test_insecure_answer_is_ignored(server: ServerCert) -> None:
    good = rec(3, 1, 1, server.chain_der[0])
    insecure = TlsaResolved(at=0.0, host=HOST, port=25, records=(good,), secure=False)
    secure = TlsaResolved(at=0.0, host=HOST, port=25, records=(good,), secure=True)
    assert usable_tlsa(insecure) == ()
    assert usable_tlsa(secure) == (good,)
    assert dane_verify(usable_tlsa(insecure), server.chain_der, [HOST]).ok is False


def test_empty_chain() -> None:
    verdict = dane_verify([TlsaRecord(usage=3, selector=1, mtype=1, data=b"")], [], [HOST])
    assert (verdict.ok, verdict.reason) == (False, "the server presented no certificate")


def test_name_matching_rules(tmp_path: pathlib.Path) -> None:
    assert name_matches("*.example.com", "mx.example.com")
    assert not name_matches("*.example.com", "a.mx.example.com")
    assert not name_matches("*.example.com", "example.com")
    assert name_matches("MX.Example.com.", "mx.example.com")
    cert = x509.load_der_x509_certificate(self_signed(tmp_path, HOST).chain_der[0])
    assert certificate_names(cert) == [HOST]
