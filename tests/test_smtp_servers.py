"""The test peers in tests/support/smtp_servers.py do exactly what they claim.

Each server is exercised by a small raw client (asyncio streams), so the test
sees the exact bytes and timings a delivery driver would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import time

import pytest

from tests.support.smtp_servers import (
    Script,
    ScriptedServer,
    SinkServer,
    Step,
    banner_421,
    closed_port,
    drop_mid_data,
    fail_at,
    hang_at,
    malformed_reply,
    no_pipelining,
    overlong_reply,
    slow_reply,
    tls_handshake_failure,
)


class Client:
    """A minimal raw SMTP client over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> Client:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def reply(self, timeout: float = 3.0) -> bytes:
        """One whole reply (all its lines), or b"" at EOF."""
        out = b""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            out += line
            if not line or len(line) < 4 or line[3:4] != b"-":
                return out

    async def cmd(self, line: str | bytes) -> bytes:
        self.writer.write(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        return await self.reply()

    async def starttls(self, ctx: ssl.SSLContext, server_hostname: str) -> None:
        await self.writer.start_tls(ctx, server_hostname=server_hostname)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def dialog_to_data(c: Client) -> None:
    assert (await c.reply()).startswith(b"220")
    assert (await c.cmd("EHLO client.test")).startswith(b"250")
    assert await c.cmd("MAIL FROM:<a@x.test>") == b"250 2.1.0 OK\r\n"
    assert await c.cmd("RCPT TO:<b@y.test>") == b"250 2.1.5 OK\r\n"


# ------------------------------------------------------------------ sink


def test_sink_records_envelope_and_body() -> None:
    async def go(host: str, port: int) -> bytes:
        c = await Client.connect(host, port)
        await c.reply()
        ehlo = await c.cmd("EHLO client.test")
        await c.cmd("MAIL FROM:<a@x.test>")
        await c.cmd("RCPT TO:<b@y.test>")
        await c.cmd("RCPT TO:<c@y.test>")
        assert (await c.cmd("DATA")).startswith(b"354")
        assert await c.cmd(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n") == (
            b"250 2.0.0 OK queued as 1\r\n"
        )
        await c.close()
        return ehlo

    with SinkServer() as sink:
        ehlo = asyncio.run(go(*sink.address))
        [msg] = sink.wait_for(1)
    assert msg.sender == "a@x.test"
    assert msg.recipients == ("b@y.test", "c@y.test")
    assert msg.content == b"Subject: hi\r\n\r\n.dot\r\nbody\r\n"
    assert (msg.peer, msg.tls, msg.login) == ("127.0.0.1", False, None)
    assert b"250-PIPELINING" in ehlo and b"STARTTLS" not in ehlo
    assert sink.connections == 1


def test_sink_without_pipelining_and_rejected_recipient() -> None:
    async def go(host: str, port: int) -> tuple[bytes, bytes]:
        c = await Client.connect(host, port)
        await c.reply()
        ehlo = await c.cmd("EHLO client.test")
        await c.cmd("MAIL FROM:<a@x.test>")
        rcpt = await c.cmd("RCPT TO:<bad@y.test>")
        await c.close()
        return ehlo, rcpt

    rejects = {"bad@y.test": "550 5.1.1 no such user"}
    with SinkServer(pipelining=False, reject_recipients=rejects) as sink:
        ehlo, rcpt = asyncio.run(go(*sink.address))
    assert b"PIPELINING" not in ehlo
    assert rcpt == b"550 5.1.1 no such user\r\n"


def test_sink_starttls_with_trustme_certificate_for_its_name() -> None:
    async def go(sink: SinkServer) -> None:
        c = await Client.connect(*sink.address)
        await c.reply()
        assert b"250-STARTTLS" in await c.cmd("EHLO client.test")
        assert (await c.cmd("STARTTLS")).startswith(b"220")
        await c.starttls(sink.client_context(), "mx.test")
        await c.cmd("EHLO client.test")
        await dialog_to_data_tls(c)
        await c.close()

    with SinkServer(tls="trustme") as sink:
        asyncio.run(go(sink))
        [msg] = sink.wait_for(1)
    assert msg.tls is True
    assert msg.content == b"x\r\n"


async def dialog_to_data_tls(c: Client) -> None:
    await c.cmd("MAIL FROM:<a@x.test>")
    await c.cmd("RCPT TO:<b@y.test>")
    await c.cmd("DATA")
    assert (await c.cmd(b"x\r\n.\r\n")).startswith(b"250")


def test_sink_self_signed_certificate_fails_verification() -> None:
    async def go(sink: SinkServer) -> None:
        c = await Client.connect(*sink.address)
        await c.reply()
        await c.cmd("EHLO client.test")
        await c.cmd("STARTTLS")
        with pytest.raises(ssl.SSLCertVerificationError):
            await c.starttls(ssl.create_default_context(), "mx.test")
        await c.close()

    with SinkServer(tls="self-signed") as sink:
        asyncio.run(go(sink))
    assert sink.tls is not None and sink.tls.ca is None


def test_sink_auth_required_over_tls_and_never_seen_in_clear() -> None:
    async def go(sink: SinkServer) -> tuple[bytes, bytes, bytes]:
        c = await Client.connect(*sink.address)
        await c.reply()
        clear_ehlo = await c.cmd("EHLO client.test")
        await c.cmd("STARTTLS")
        await c.starttls(sink.client_context(), "mx.test")
        await c.cmd("EHLO client.test")
        refused = await c.cmd("MAIL FROM:<a@x.test>")
        token = base64.b64encode(b"\0user\0s3cret").decode()
        ok = await c.cmd(f"AUTH PLAIN {token}")
        await dialog_to_data_tls(c)
        await c.close()
        return clear_ehlo, refused, ok

    with SinkServer(tls="trustme", auth=("user", "s3cret")) as sink:
        clear_ehlo, refused, ok = asyncio.run(go(sink))
        [msg] = sink.wait_for(1)
    assert b"AUTH" not in clear_ehlo
    assert refused.startswith(b"530")
    assert ok == b"235 2.7.0 Authentication successful\r\n"
    assert msg.login == "user"
    assert sink.auth_attempts == [("user", True)]
    assert sink.auth_seen_in_plaintext is False
    assert sink.plaintext.startswith(b"EHLO client.test\r\nSTARTTLS\r\n")


def test_plaintext_auth_server_detects_credential_sent_in_clear() -> None:
    async def go(sink: SinkServer) -> bytes:
        c = await Client.connect(*sink.address)
        await c.reply()
        ehlo = await c.cmd("EHLO client.test")
        token = base64.b64encode(b"\0user\0s3cret").decode()
        await c.cmd(f"AUTH PLAIN {token}")
        await c.close()
        return ehlo

    with (
        pytest.warns(UserWarning, match="AUTH"),
        SinkServer(auth=("user", "s3cret"), auth_require_tls=False) as sink,
    ):
        ehlo = asyncio.run(go(sink))
        assert b"250-AUTH LOGIN PLAIN" in ehlo
        assert sink.auth_seen_in_plaintext is True


def test_sink_async_mode_on_the_tests_loop_and_other_loopback_address() -> None:
    async def go() -> tuple[str, int]:
        async with SinkServer("127.0.0.2") as sink:
            c = await Client.connect(*sink.address)
            banner = await c.reply()
            await c.close()
            assert banner.startswith(b"220 mx.test")
            return sink.address

    host, port = asyncio.run(go())
    assert host == "127.0.0.2" and port > 0


def test_servers_refuse_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match=r"loopback only, not host='192\.0\.2\.1'"):
        SinkServer("192.0.2.1")
    with pytest.raises(ValueError, match="loopback only"):
        ScriptedServer(host="10.0.0.1")


# ------------------------------------------------------------------ scripted


def run_client(server: ScriptedServer, script: object) -> object:
    async def go() -> object:
        c = await Client.connect(*server.address)
        try:
            return await script(c)  # type: ignore[operator]
        finally:
            await c.close()

    return asyncio.run(go())


def test_closed_port_refuses_connection() -> None:
    with closed_port() as (host, port), pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=2)


def test_banner_421_then_close() -> None:
    async def go(c: Client) -> tuple[bytes, bytes]:
        return await c.reply(), await c.reply()

    with ScriptedServer(banner_421()) as srv:
        banner, after = run_client(srv, go)  # type: ignore[misc]
    assert banner == b"421 4.3.2 Service not available, closing channel\r\n"
    assert after == b""
    assert srv.connections[0].closed_by_server is True


def test_default_dialog_and_pipelined_batch_in_one_read() -> None:
    async def go(c: Client) -> list[bytes]:
        assert await c.reply() == b"220 mx.test ESMTP scripted\r\n"
        ehlo = await c.cmd("EHLO client.test")
        c.writer.write(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        replies = [ehlo, await c.reply(), await c.reply(), await c.reply()]
        replies.append(await c.cmd(b"line\r\n..dotted\r\n.\r\n"))
        replies.append(await c.cmd("QUIT"))
        return replies

    with ScriptedServer() as srv:
        ehlo, mail, rcpt, data, dot, quit_ = run_client(srv, go)  # type: ignore[misc]
    assert ehlo == (b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                    b"250-ENHANCEDSTATUSCODES\r\n250 SIZE 10485760\r\n")
    assert (mail, rcpt) == (b"250 2.1.0 OK\r\n", b"250 2.1.5 OK\r\n")
    assert data.startswith(b"354 ")
    assert dot == b"250 2.0.0 OK queued\r\n"
    assert quit_ == b"221 2.0.0 Bye\r\n"
    log = srv.connections[0]
    assert b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" in log.chunks
    assert log.bodies == [b"line\r\n..dotted\r\n"]
    assert log.commands == ["EHLO client.test", "MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>",
                            "DATA", "QUIT"]


def test_no_pipelining_is_not_advertised() -> None:
    async def go(c: Client) -> bytes:
        await c.reply()
        return await c.cmd("EHLO client.test")

    with ScriptedServer(no_pipelining()) as srv:
        ehlo = run_client(srv, go)
    assert ehlo == (b"250-mx.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                    b"250 SIZE 10485760\r\n")


def test_drop_mid_data() -> None:
    async def go(c: Client) -> bytes:
        await dialog_to_data(c)
        assert (await c.cmd("DATA")).startswith(b"354")
        c.writer.write(b"Subject: partial\r\n")
        return await c.reply()

    with ScriptedServer(drop_mid_data()) as srv:
        after = run_client(srv, go)
    assert after == b""
    assert srv.connections[0].closed_by_server is True
    assert srv.connections[0].bodies == []


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA", "DOT"])
@pytest.mark.parametrize("reply", ["451 4.3.0 try later", "550 5.7.1 go away"])
def test_fail_at_each_command(verb: str, reply: str) -> None:
    async def go(c: Client) -> bytes:
        await c.reply()
        await c.cmd("EHLO client.test")
        for cmd, v in [("MAIL FROM:<a@x.test>", "MAIL"), ("RCPT TO:<b@y.test>", "RCPT"),
                       ("DATA", "DATA"), (b"x\r\n.\r\n", "DOT")]:
            got = await c.cmd(cmd)
            if v == verb:
                return got
        raise AssertionError("unreachable")

    with ScriptedServer(fail_at(verb, reply)) as srv:
        got = run_client(srv, go)
    assert got == reply.encode() + b"\r\n"


def test_slow_reply_waits_the_given_delay() -> None:
    async def go(c: Client) -> tuple[bytes, float]:
        await c.reply()
        await c.cmd("EHLO client.test")
        t0 = time.monotonic()
        got = await c.cmd("MAIL FROM:<a@x.test>")
        return got, time.monotonic() - t0

    with ScriptedServer(slow_reply("MAIL", 0.3)) as srv:
        got, took = run_client(srv, go)  # type: ignore[misc]
    assert got == b"250 2.1.0 OK\r\n"
    assert 0.3 <= took < 1.5


def test_hang_never_answers_but_keeps_connection() -> None:
    async def go(c: Client) -> None:
        await c.reply()
        await c.cmd("EHLO client.test")
        c.writer.write(b"MAIL FROM:<a@x.test>\r\n")
        with pytest.raises(TimeoutError):
            await c.reply(0.3)
        assert not c.reader.at_eof()

    with ScriptedServer(hang_at("MAIL")) as srv:
        run_client(srv, go)
    assert srv.connections[0].commands == ["EHLO client.test", "MAIL FROM:<a@x.test>"]


def test_malformed_and_overlong_replies() -> None:
    async def go(c: Client) -> bytes:
        await c.reply()
        return await c.cmd("EHLO client.test")

    with ScriptedServer(malformed_reply("EHLO")) as srv:
        assert run_client(srv, go) == b"hello, this is not SMTP\r\n"
    with ScriptedServer(overlong_reply("EHLO", 5000)) as srv:
        got = run_client(srv, go)
    assert isinstance(got, bytes) and len(got) == 5002 and got.startswith(b"250 xxx")


def test_tls_handshake_failure() -> None:
    async def go(c: Client) -> bytes:
        await c.reply()
        ehlo = await c.cmd("EHLO client.test")
        assert (await c.cmd("STARTTLS")).startswith(b"220")
        with pytest.raises(ssl.SSLError):
            await c.starttls(ssl.create_default_context(), "mx.test")
        return ehlo

    with ScriptedServer(tls_handshake_failure()) as srv:
        ehlo = run_client(srv, go)
    assert isinstance(ehlo, bytes) and ehlo.endswith(b"250 STARTTLS\r\n")


def test_step_lists_are_used_in_turn_across_connections() -> None:
    script = Script({"BANNER": [Step("421 4.7.0 busy", then="close"), Step("220 ok now")]})

    async def go(c: Client) -> bytes:
        return await c.reply()

    with ScriptedServer(script) as srv:
        first = run_client(srv, go)
        second = run_client(srv, go)
        third = run_client(srv, go)
    assert (first, second, third) == (b"421 4.7.0 busy\r\n", b"220 ok now\r\n",
                                      b"220 ok now\r\n")


def test_ipv6_loopback_banner_and_refusal() -> None:
    async def go(c: Client) -> bytes:
        return await c.reply()

    with ScriptedServer(banner_421(), host="::1") as srv:
        assert srv.address[0] == "::1"
        assert run_client(srv, go) == b"421 4.3.2 Service not available, closing channel\r\n"
    with closed_port("::1") as (host, port), pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=2)
