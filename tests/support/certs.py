"""trustme helpers: a CA, leaf certificates for host names, and untrusted ones.

Tests need three kinds of server certificate: one a test CA vouches for (the
client is given that CA as its cafile), one for the wrong name, and one nobody
vouches for (self-signed).  Each helper returns plain files and DER bytes so the
same certificate serves the TLS tests and the DANE matching tests.
"""

from __future__ import annotations

import datetime
import pathlib
import ssl
from dataclasses import dataclass

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ServerCert:
    """A server certificate: PEM files on disk and the chain as DER (leaf first)."""

    cert_file: pathlib.Path
    key_file: pathlib.Path
    chain_der: tuple[bytes, ...]

    def server_context(self) -> ssl.SSLContext:
        """A server-side stdlib context presenting this certificate (TLS 1.2 and 1.3)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


def make_ca() -> trustme.CA:
    """A fresh test certificate authority."""
    return trustme.CA()


def write_cafile(ca: trustme.CA, directory: pathlib.Path) -> pathlib.Path:
    """Write the CA certificate to `directory`/ca.pem and return the path."""
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def issue(
    ca: trustme.CA,
    directory: pathlib.Path,
    *names: str,
    stem: str = "server",
    include_root: bool = False,
) -> ServerCert:
    """A leaf for `names` signed by `ca`, written under `directory`.

    The server presents the leaf and any intermediates; with `include_root` it
    also presents `ca` itself (what a DANE-TA server must do, RFC 7672 3.1.2).
    `chain_der` is exactly what the server presents, leaf first.
    """
    leaf = ca.issue_cert(*names)
    pems = list(leaf.cert_chain_pems) + ([ca.cert_pem] if include_root else [])
    cert_file = directory / f"{stem}.pem"
    key_file = directory / f"{stem}.key"
    pems[0].write_to_path(str(cert_file))
    for blob in pems[1:]:
        blob.write_to_path(str(cert_file), append=True)
    leaf.private_key_pem.write_to_path(str(key_file))
    chain = tuple(
        x509.load_pem_x509_certificate(b.bytes()).public_bytes(serialization.Encoding.DER)
        for b in pems
    )
    return ServerCert(cert_file, key_file, chain)


def self_signed(directory: pathlib.Path, name: str, *, stem: str = "selfsigned") -> ServerCert:
    """A certificate for `name` signed by its own key: valid shape, trusted by nobody."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / f"{stem}.pem"
    key_file = directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ServerCert(cert_file, key_file, (cert.public_bytes(serialization.Encoding.DER),))
