"""engine.live.tls: STARTTLS upgrades against a real aiosmtpd server on 127.0.0.1.

Each test speaks SMTP up to STARTTLS over a raw asyncio transport, calls
`upgrade`, then proves the TLS transport works by doing EHLO over it.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trustme
from cryptography import x509

from engine.effects import TlsMode, TlsSettings
from engine.events import TlsaRecord
from engine.live.dane import tlsa_association
from engine.live.tls import TlsHandshakeError, TlsInfo, upgrade
from tests.support.certs import ServerCert, issue, self_signed
from tests.support.smtp_servers import (
    DEFAULT_EXTENSIONS,
    Script,
    ScriptedServer,
    SinkServer,
    Step,
    TlsMaterial,
    tls_handshake_failure,
)

HOST = "mx.test"


class LineClient(asyncio.Protocol):
    """Reads complete SMTP replies; the transport may be swapped after STARTTLS."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.changed = asyncio.Event()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.changed.set()

    async def reply(self) -> bytes:
        while True:
            lines = self.buffer.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if line[3:4] == b" " or len(line) == 3:
                    reply = b"\r\n".join(lines[: i + 1])
                    self.buffer = b"\r\n".join(lines[i + 1 :])
                    return reply
            if self.lost:
                raise ConnectionError("closed")
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)

    async def command(self, line: str) -> bytes:
        assert self.transport is not None
        self.transport.write(line.encode() + b"\r\n")
        return await self.reply()


async def starttls(
    address: tuple[str, int], settings: TlsSettings, **kw: Any
) -> tuple[TlsInfo, bytes]:
    """Connect, EHLO, STARTTLS, upgrade, EHLO again; return the TLS info and 2nd EHLO reply."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(LineClient, *address)
    try:
        assert (await client.reply()).startswith(b"220")
        assert b"STARTTLS" in await client.command("EHLO client.test")
        assert (await client.command("STARTTLS")).startswith(b"220")
        new_transport, info = await upgrade(loop, transport, client, settings, **kw)
        client.transport = new_transport
        ehlo = await client.command("EHLO client.test")
        await client.command("QUIT")
        new_transport.close()
        return info, ehlo
    finally:
        transport.close()


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        return await coro_fn()

    return asyncio.run(main())


def run_with(server: Any, settings: TlsSettings, **kw: Any) -> tuple[TlsInfo, bytes]:
    async def go() -> tuple[TlsInfo, bytes]:
        async with server:
            return await starttls(server.address, settings, **kw)

    return run(go)


@pytest.fixture
def good(ca: trustme.CA, tmp_path: pathlib.Path) -> ServerCert:
    return issue(ca, tmp_path, HOST, include_root=True)


def sink(cert: ServerCert) -> SinkServer:
    return SinkServer(hostname=HOST, tls=TlsMaterial(cert.server_context()))


def subject(cert: ServerCert) -> str:
    return x509.load_der_x509_certificate(cert.chain_der[0]).subject.rfc4514_string()


VERIFY = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST)
INSECURE = TlsSettings(mode=TlsMode.INSECURE, server_name=HOST)
OPENSSL_VERIFY = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST, prefer_openssl=True)


# -- the stdlib stack


def test_verify_succeeds_with_the_ca(good: ServerCert, cafile: str) -> None:
    info, ehlo = run_with(sink(good), VERIFY, cafile=cafile)
    assert info == TlsInfo(protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
                           peer_subject=subject(good))
    assert ehlo.startswith(b"250-mx.test") and b"STARTTLS" not in ehlo


def test_verify_fails_with_a_self_signed_certificate(tmp_path: pathlib.Path, cafile: str) -> None:
    bad = self_signed(tmp_path, HOST)
    with pytest.raises(TlsHandshakeError) as info:
        run_with(sink(bad), VERIFY, cafile=cafile)
    assert info.value.reason == (
        "certificate verification failed for mx.test: self-signed certificate"
    )


def test_verify_fails_for_the_wrong_host_name(
    ca: trustme.CA, tmp_path: pathlib.Path, cafile: str
) -> None:
    other = issue(ca, tmp_path, "other.test")
    with pytest.raises(TlsHandshakeError) as info:
        run_with(sink(other), VERIFY, cafile=cafile)
    assert info.value.reason.startswith("certificate verification failed for mx.test: Hostname")


def test_verify_without_the_ca_uses_the_system_store_and_fails(good: ServerCert) -> None:
    with pytest.raises(TlsHandshakeError, match=r"self-signed certificate in certificate chain$"):
        run_with(sink(good), VERIFY)


def test_insecure_accepts_a_self_signed_certificate(tmp_path: pathlib.Path) -> None:
    bad = self_signed(tmp_path, HOST)
    info, ehlo = run_with(sink(bad), INSECURE)
    assert (info.protocol, info.peer_subject) == ("TLSv1.3", "CN=mx.test")
    assert ehlo.startswith(b"250")


def test_rustls_suites_tls12_only_restricts_the_cipher(good: ServerCert, cafile: str) -> None:
    settings = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST,
                           rustls_cipher_suites=("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",))
    info, _ = run_with(sink(good), settings, cafile=cafile)
    assert (info.protocol, info.cipher) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")


def test_rustls_tls13_suite_checked_after_the_handshake(good: ServerCert, cafile: str) -> None:
    allowed = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST,
                          rustls_cipher_suites=("TLS13_AES_256_GCM_SHA384",))
    info, _ = run_with(sink(good), allowed, cafile=cafile)
    assert (info.protocol, info.cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    # the stdlib cannot restrict TLS 1.3 suites: the server picks AES-256, which is refused
    refused = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST,
                          rustls_cipher_suites=("TLS13_CHACHA20_POLY1305_SHA256",))
    with pytest.raises(TlsHandshakeError) as err:
        run_with(sink(good), refused, cafile=cafile)
    assert err.value.reason == (
        "negotiated cipher suite TLS_AES_256_GCM_SHA384 (TLSv1.3) is not in "
        "rustls_cipher_suites ['TLS13_CHACHA20_POLY1305_SHA256']"
    )


def test_handshake_failure_on_garbage() -> None:
    with pytest.raises(TlsHandshakeError, match=r"^TLS handshake failed: "):
        run_with(ScriptedServer(tls_handshake_failure()), INSECURE)


@pytest.mark.parametrize("prefer_openssl", [False, True])
def test_handshake_timeout(prefer_openssl: bool) -> None:
    script = Script({"STARTTLS": Step("220 2.0.0 go ahead", then="hang")},
                    extensions=(*DEFAULT_EXTENSIONS, "STARTTLS"))
    settings = TlsSettings(mode=TlsMode.INSECURE, server_name=HOST,
                           prefer_openssl=prefer_openssl)
    with pytest.raises(TlsHandshakeError) as err:
        run_with(ScriptedServer(script), settings, handshake_timeout=0.3)
    assert err.value.reason == "TLS handshake timed out after 0.3s"


# -- the pyOpenSSL stack


def test_openssl_verify_succeeds(good: ServerCert, cafile: str) -> None:
    info, ehlo = run_with(sink(good), OPENSSL_VERIFY, cafile=cafile)
    assert info == TlsInfo(protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
                           peer_subject=subject(good))
    assert ehlo.startswith(b"250-mx.test") and b"STARTTLS" not in ehlo


def test_openssl_verify_fails_self_signed(tmp_path: pathlib.Path, cafile: str) -> None:
    with pytest.raises(TlsHandshakeError) as err:
        run_with(sink(self_signed(tmp_path, HOST)), OPENSSL_VERIFY, cafile=cafile)
    assert err.value.reason == (
        "certificate verification failed for mx.test: self-signed certificate"
    )


def test_openssl_verify_fails_wrong_name(
    ca: trustme.CA, tmp_path: pathlib.Path, cafile: str
) -> None:
    with pytest.raises(TlsHandshakeError) as err:
        run_with(sink(issue(ca, tmp_path, "other.test")), OPENSSL_VERIFY, cafile=cafile)
    assert err.value.reason == (
        "certificate verification failed: the certificate is for ['other.test'], not mx.test"
    )


def test_openssl_insecure_self_signed(tmp_path: pathlib.Path) -> None:
    settings = TlsSettings(mode=TlsMode.INSECURE, server_name=HOST, prefer_openssl=True)
    info, ehlo = run_with(sink(self_signed(tmp_path, HOST)), settings)
    assert info.peer_subject == "CN=mx.test" and ehlo.startswith(b"250")


def test_openssl_options_no_tlsv1_3_gives_tls12(good: ServerCert, cafile: str) -> None:
    settings = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST, prefer_openssl=True,
                           openssl_options="NO_TLSV1_3|NO_TICKET")
    info, _ = run_with(sink(good), settings, cafile=cafile)
    assert info.protocol == "TLSv1.2"


def test_openssl_cipher_list_gives_that_cipher(good: ServerCert, cafile: str) -> None:
    settings = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST, prefer_openssl=True,
                           openssl_options="NO_TLSV1_3",
                           openssl_cipher_list="ECDHE-ECDSA-CHACHA20-POLY1305")
    info, _ = run_with(sink(good), settings, cafile=cafile)
    assert (info.protocol, info.cipher) == ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305")


def test_openssl_cipher_suites_gives_that_tls13_suite(good: ServerCert, cafile: str) -> None:
    settings = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST, prefer_openssl=True,
                           openssl_cipher_suites="TLS_CHACHA20_POLY1305_SHA256")
    info, _ = run_with(sink(good), settings, cafile=cafile)
    assert (info.protocol, info.cipher) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")


def test_openssl_bad_settings_are_named(good: ServerCert) -> None:
    bad_option = TlsSettings(mode=TlsMode.INSECURE, server_name=HOST, prefer_openssl=True,
                             openssl_options="NO_TLSV1_3|NO_SUCH")
    with pytest.raises(TlsHandshakeError, match="openssl_options: unknown option 'NO_SUCH'"):
        run_with(sink(good), bad_option)
    bad_list = TlsSettings(mode=TlsMode.INSECURE, server_name=HOST, prefer_openssl=True,
                           openssl_cipher_list="NOT-A-CIPHER")
    with pytest.raises(TlsHandshakeError, match="OpenSSL refused the cipher settings"):
        run_with(sink(good), bad_list)


def test_openssl_handshake_failure_on_garbage() -> None:
    settings = TlsSettings(mode=TlsMode.INSECURE, server_name=HOST, prefer_openssl=True)
    with pytest.raises(TlsHandshakeError, match=r"^TLS handshake failed: "):
        run_with(ScriptedServer(tls_handshake_failure()), settings)


# -- DANE (always the pyOpenSSL stack)


def dane(records: tuple[TlsaRecord, ...]) -> TlsSettings:
    return TlsSettings(mode=TlsMode.DANE, server_name=HOST, tlsa=records)


def test_dane_ee_match_even_self_signed(tmp_path: pathlib.Path) -> None:
    cert = self_signed(tmp_path, "unrelated.name")
    record = TlsaRecord(usage=3, selector=1, mtype=1,
                        data=tlsa_association(cert.chain_der[0], 1, 1))
    info, ehlo = run_with(sink(cert), dane((record,)))
    assert info.peer_subject == "CN=unrelated.name" and ehlo.startswith(b"250")


def test_dane_ta_match(good: ServerCert) -> None:
    record = TlsaRecord(usage=2, selector=0, mtype=1,
                        data=tlsa_association(good.chain_der[-1], 0, 1))
    info, _ = run_with(sink(good), dane((record,)))
    assert info.protocol == "TLSv1.3"


def test_dane_mismatch_fails_the_host(good: ServerCert, tmp_path: pathlib.Path) -> None:
    other = self_signed(tmp_path, HOST)
    record = TlsaRecord(usage=3, selector=1, mtype=1,
                        data=tlsa_association(other.chain_der[0], 1, 1))
    with pytest.raises(TlsHandshakeError) as err:
        run_with(sink(good), dane((record,)))
    assert err.value.reason == (
        "DANE verification failed for mx.test: no TLSA record matches the server's "
        "certificate chain"
    )


@pytest.mark.parametrize("prefer_openssl", [False, True])
def test_a_large_message_crosses_the_tls_transport_and_close_is_seen(
    good: ServerCert, cafile: str, prefer_openssl: bool
) -> None:
    """300 KB through the upgraded transport, then the server's close reaches the protocol."""
    settings = TlsSettings(mode=TlsMode.VERIFY, server_name=HOST, prefer_openssl=prefer_openssl)
    body = b"".join(b"line %06d of the message\r\n" % i for i in range(12000))
    server = sink(good)

    async def go() -> bool:
        async with server:
            loop = asyncio.get_running_loop()
            transport, client = await loop.create_connection(LineClient, *server.address)
            await client.reply()
            await client.command("EHLO client.test")
            await client.command("STARTTLS")
            tls, _ = await upgrade(loop, transport, client, settings, cafile=cafile)
            client.transport = tls
            await client.command("EHLO client.test")
            assert (await client.command("MAIL FROM:<a@client.test>")).startswith(b"250")
            assert (await client.command("RCPT TO:<b@mx.test>")).startswith(b"250")
            assert (await client.command("DATA")).startswith(b"354")
            tls.write(b"Subject: big\r\n\r\n" + body + b".\r\n")
            assert (await client.reply()).startswith(b"250")
            assert (await client.command("QUIT")).startswith(b"221")
            for _ in range(50):
                if client.lost:
                    break
                await asyncio.sleep(0.02)
            tls.close()
            return client.lost

    assert run(go) is True
    (message,) = server.messages
    assert message.tls is True
    assert message.content.replace(b"\r\n", b"\n").endswith(body.replace(b"\r\n", b"\n"))
