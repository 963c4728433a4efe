"""engine/live/listener_auth.py: AUTH PLAIN/LOGIN and STARTTLS on the fast listener.

Raw bytes over 127.0.0.1 (tests/support/smtp_raw.py), a trustme certificate
for STARTTLS.  The reply codes are those aiosmtpd gave (the listener replaced
an aiosmtpd-based one and means to answer as it did); the texts are the
listener's own.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from typing import Any

from engine.live.listener import Listener
from engine.live.listener_limits import LimitSettings
from engine.live.submission import Submission
from tests.support.listener_kit import tls_contexts
from tests.support.smtp_raw import RawClient


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return tls_contexts("mx.test")


def dialogue(lines: list[bytes], **kw: Any) -> list[tuple[int, str]]:
    """Send each line, one at a time, to a fresh server; the replies (code, first line)."""
    committed: list[Submission] = []

    async def submit(sub: Submission) -> list[str]:
        committed.append(sub)
        return ["id1"]

    async def go() -> list[tuple[int, str]]:
        async with (Listener("127.0.0.1", 0, submit=submit, hostname="mx.test", **kw) as server,
                    RawClient(server.port) as c):
            return [await c.cmd(line) for line in lines]

    return asyncio.run(go())


AUTH = {"alice": "s3cret"}


def test_auth_plain_and_login_succeed_with_and_without_initial_response() -> None:
    for lines, first in (
        ([b"EHLO c", b"AUTH PLAIN " + b64(b"\0alice\0s3cret")],
         (235, "2.7.0 Authentication successful")),
        ([b"EHLO c", b"AUTH PLAIN", b64(b"\0alice\0s3cret")], (334, "")),
        ([b"EHLO c", b"AUTH LOGIN", b64(b"alice"), b64(b"s3cret")], (334, "VXNlcm5hbWU6")),
        ([b"EHLO c", b"AUTH LOGIN " + b64(b"alice"), b64(b"s3cret")], (334, "UGFzc3dvcmQ6")),
    ):
        got = dialogue([*lines, b"AUTH PLAIN " + b64(b"\0alice\0s3cret"),
                        b"MAIL FROM:<a@s.test>", b"RCPT TO:<x@one.test>"],
                       auth=AUTH, allowed_networks=["192.0.2.0/24"])
        codes = [code for code, _ in got]
        assert codes == [250, *[334] * (len(lines) - 2), 235, 503, 250, 250], lines
        assert got[len(lines) - 1] == (235, "2.7.0 Authentication successful")
        assert got[1] == first, lines


def test_auth_failures() -> None:
    got = dialogue([
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
    assert [text for _, text in got[2:3] + got[7:11]] == [
        "5.7.8 Authentication credentials invalid", "5.7.0 Auth aborted",
        "5.5.2 Can't decode base64", "5.5.2 Can't split auth value",
        "5.5.4 Unrecognized authentication type"]


def test_auth_after_helo_is_not_recognised() -> None:
    got = dialogue([b"HELO c", b"AUTH PLAIN " + b64(b"\0alice\0s3cret")], auth=AUTH)
    assert [code for code, _ in got] == [250, 500]


def test_starttls_then_ehlo_again() -> None:
    server_ctx, client_ctx = contexts()
    committed: list[Submission] = []

    async def submit(sub: Submission) -> list[str]:
        committed.append(sub)
        return ["id1"]

    async def go() -> dict[str, Any]:
        async with (Listener("127.0.0.1", 0, submit=submit, hostname="mx.test", auth=AUTH,
                        tls_context=server_ctx, allowed_networks=[]) as server,
                    RawClient(server.port) as c):
            await c.send(b"EHLO c\r\n")
            clear = (await c.reply())[1]
            start = await c.cmd(b"STARTTLS")
            await c.starttls(client_ctx)
            before_ehlo = await c.cmd(b"MAIL FROM:<a@s.test>")
            await c.send(b"EHLO c\r\n")
            tls = (await c.reply())[1]
            again = await c.cmd(b"STARTTLS")
            auth = await c.cmd(b"AUTH PLAIN " + b64(b"\0alice\0s3cret"))
            await c.send(b"MAIL FROM:<a@s.test>\r\n")
            await c.send(b"RCPT TO:<x@one.test>\r\nDATA\r\n")
            codes = [code for code, _ in await c.replies(3)]
            await c.send(b"secret\r\n.\r\n")
            done = (await c.reply())[0]
            return {"clear": clear, "start": start[0], "before_ehlo": before_ehlo[0],
                    "tls": tls, "again": again[0], "auth": auth[0], "txn": [*codes, done]}

    got = asyncio.run(go())
    # AUTH is offered in clear too: the client is on loopback
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


class BlockingCheck:
    """A `PasswordCheck` that waits (as bcrypt computes) until the test lets it
    answer, and notes the thread it ran in."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.threads: list[threading.Thread] = []

    def check(self, user: str, password: bytes) -> bool:
        self.threads.append(threading.current_thread())
        self.go.wait(timeout=10.0)
        return user == "alice" and password == b"s3cret"


def test_a_slow_password_check_runs_off_the_event_loop() -> None:
    """While one client's password is being checked, another client is served;
    a refused password still gets 535 and the session goes on."""
    auth = BlockingCheck()

    async def submit(sub: Submission) -> list[str]:
        return ["id1"]

    async def go() -> tuple[list[tuple[int, str]], tuple[int, str]]:
        async with (Listener("127.0.0.1", 0, submit=submit, hostname="mx.test", auth=auth,
                             limits=LimitSettings(auth_delay=0.0)) as server,
                    RawClient(server.port) as a, RawClient(server.port) as b):
            await a.cmd(b"EHLO a")
            pending = asyncio.ensure_future(a.cmd(b"AUTH PLAIN " + b64(b"\0alice\0s3cret")))
            while not auth.threads:
                await asyncio.sleep(0.01)
            other = await b.cmd(b"EHLO b")  # answered while the check waits
            auth.go.set()
            got = [await pending,
                   await b.cmd(b"AUTH PLAIN " + b64(b"\0alice\0wrong")),
                   await b.cmd(b"NOOP")]
            return got, other

    got, other = asyncio.run(go())
    assert other[0] == 250
    assert [code for code, _ in got] == [235, 535, 250]
    assert all(t is not threading.main_thread() for t in auth.threads)
