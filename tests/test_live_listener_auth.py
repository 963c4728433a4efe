"""engine/live/listener_auth.py: AUTH PLAIN/LOGIN and STARTTLS on the fast listener.

Raw bytes over 127.0.0.1 (tests/support/smtp_raw.py), a trustme certificate
for STARTTLS; the same dialogue goes to aiosmtpd's IngestServer where the
listener means to answer as it did, and the reply codes are compared.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import pytest
import trustme

from engine.live.ingest import IngestServer, Submission
from engine.live.listener import Listener
from tests.support.smtp_raw import RawClient

BOTH = pytest.mark.parametrize("cls", [IngestServer, Listener], ids=["aiosmtpd", "listener"])


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_ctx.check_hostname = False  # we dial 127.0.0.1; the chain is still verified
    return server_ctx, client_ctx


def dialogue(cls: Any, lines: list[bytes], **kw: Any) -> list[tuple[int, str]]:
    """Send each line, one at a time, to a fresh server; the replies (code, first line)."""
    committed: list[Submission] = []

    async def submit(sub: Submission) -> list[str]:
        committed.append(sub)
        return ["id1"]

    async def go() -> list[tuple[int, str]]:
        async with (cls("127.0.0.1", 0, submit=submit, hostname="mx.test", **kw) as server,
                    RawClient(server.port) as c):
            return [await c.cmd(line) for line in lines]

    return asyncio.run(go())


AUTH = {"alice": "s3cret"}


@BOTH
def test_auth_plain_and_login_succeed_with_and_without_initial_response(cls: Any) -> None:
    for lines in (
        [b"EHLO c", b"AUTH PLAIN " + b64(b"\0alice\0s3cret")],
        [b"EHLO c", b"AUTH PLAIN", b64(b"\0alice\0s3cret")],
        [b"EHLO c", b"AUTH LOGIN", b64(b"alice"), b64(b"s3cret")],
        [b"EHLO c", b"AUTH LOGIN " + b64(b"alice"), b64(b"s3cret")],
    ):
        got = dialogue(cls, [*lines, b"AUTH PLAIN " + b64(b"\0alice\0s3cret"),
                             b"MAIL FROM:<a@s.test>", b"RCPT TO:<x@one.test>"],
                       auth=AUTH, allowed_networks=["192.0.2.0/24"])
        codes = [code for code, _ in got]
        assert codes == [250, *[334] * (len(lines) - 2), 235, 503, 250, 250], lines
        if cls is Listener:
            assert got[len(lines) - 1] == (235, "2.7.0 Authentication successful")
            assert got[1][1] in ("", "VXNlcm5hbWU6", "UGFzc3dvcmQ6", "2.7.0 Authentication "
                                 "successful")


@BOTH
def test_auth_failures(cls: Any) -> None:
    got = dialogue(cls, [
        b"AUTH PLAIN " + b64(b"\0alice\0s3cret"),  # before EHLO
        b"EHLO c",
        b"AUTH PLAIN " + b64(b"\0alice\0wrong"),
        b"AUTH LOGIN", b64(b"alice"), b64(b"nope"),
        b"AUTH PLAIN", b"*",
        b"AUTH PLAIN !!!notbase64",
        b"AUTH PLAIN " + b64(b"no-nuls"),
        b"AUTH CRAM-MD5",
        b"AUTH",
        b"MAIL FROM:<a@s.test>", b"RCPT TO:<x@one.test>",
    ], auth=AUTH, allowed_networks=["192.0.2.0/24"])
    assert [code for code, _ in got] == [503, 250, 535, 334, 334, 535, 334, 501, 501, 501, 504,
                                         501, 250, 550]
    if cls is Listener:
        assert [text for _, text in got[2:3] + got[7:11]] == [
            "5.7.8 Authentication credentials invalid", "5.7.0 Auth aborted",
            "5.5.2 Can't decode base64", "5.5.2 Can't split auth value",
            "5.5.4 Unrecognized authentication type"]


@BOTH
def test_auth_after_helo_is_not_recognised(cls: Any) -> None:
    got = dialogue(cls, [b"HELO c", b"AUTH PLAIN " + b64(b"\0alice\0s3cret")], auth=AUTH)
    assert [code for code, _ in got] == [250, 500]


@BOTH
def test_starttls_then_ehlo_again(cls: Any) -> None:
    server_ctx, client_ctx = contexts()
    committed: list[Submission] = []

    async def submit(sub: Submission) -> list[str]:
        committed.append(sub)
        return ["id1"]

    async def go() -> dict[str, Any]:
        async with (cls("127.0.0.1", 0, submit=submit, hostname="mx.test", auth=AUTH,
                        tls_context=server_ctx, allowed_networks=[]) as server,
                    RawClient(server.port) as c):
            await c.send(b"EHLO c\r\n")
            clear = (await c.reply())[1]
            start = await c.cmd(b"STARTTLS")
            await c.starttls(client_ctx)
            before_ehlo = await c.cmd(b"MAIL FROM:<a@s.test>")
            await c.send(b"EHLO c\r\n")
            tls = (await c.reply())[1]
            # aiosmtpd would start a second TLS layer inside the first; not compared
            again = await c.cmd(b"STARTTLS") if cls is Listener else (503, "")
            auth = await c.cmd(b"AUTH PLAIN " + b64(b"\0alice\0s3cret"))
            await c.send(b"MAIL FROM:<a@s.test>\r\n")
            await c.send(b"RCPT TO:<x@one.test>\r\nDATA\r\n")
            codes = [code for code, _ in await c.replies(3)]
            await c.send(b"secret\r\n.\r\n")
            done = (await c.reply())[0]
            return {"clear": clear, "start": start[0], "before_ehlo": before_ehlo[0],
                    "tls": tls, "again": again[0], "auth": auth[0], "txn": [*codes, done]}

    got = asyncio.run(go())
    # AUTH is offered in clear too: the client is on loopback (as IngestServer did)
    assert "STARTTLS" in got["clear"] and "AUTH LOGIN PLAIN" in got["clear"]
    assert "STARTTLS" not in got["tls"] and "AUTH LOGIN PLAIN" in got["tls"]
    assert (got["start"], got["before_ehlo"], got["auth"], got["txn"]) == (
        220, 503, 235, [250, 250, 354, 250])
    assert got["again"] == 503
    assert [(s.content, s.peer) for s in committed] == [(b"secret\r\n", "127.0.0.1")]


def test_commands_pipelined_after_starttls_in_clear_are_dropped() -> None:
    server_ctx, client_ctx = contexts()

    async def go() -> tuple[int, list[str]]:
        async with (Listener("127.0.0.1", 0, submit=lambda s: None, hostname="mx.test",
                             tls_context=server_ctx) as server,
                    RawClient(server.port) as c):
            await c.cmd(b"EHLO c")
            await c.send(b"STARTTLS\r\nNOOP\r\nNOOP\r\n")  # an injection in clear
            assert (await c.reply())[0] == 220
            await c.starttls(client_ctx)
            await c.send(b"EHLO c\r\n")
            return await c.reply()  # the EHLO's, not a NOOP's 250

    code, lines = asyncio.run(go())
    assert (code, lines[0], lines[-1]) == (250, "mx.test", "HELP")


def test_failed_handshake_closes_only_that_connection() -> None:
    server_ctx, _ = contexts()

    async def go() -> tuple[bool, int]:
        async with Listener("127.0.0.1", 0, submit=lambda s: None, hostname="mx.test",
                            tls_context=server_ctx) as server:
            async with RawClient(server.port) as c:
                await c.cmd(b"EHLO c")
                assert (await c.cmd(b"STARTTLS"))[0] == 220
                await c.send(b"this is not a TLS ClientHello\r\n" * 4)
                closed = await c.closed()
            async with RawClient(server.port) as d:
                return closed, (await d.cmd(b"NOOP"))[0]

    assert asyncio.run(go()) == (True, 250)
