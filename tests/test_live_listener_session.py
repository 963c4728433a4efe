"""engine/live/listener_session.py: the listener's protocol, byte by byte.

A real Listener on 127.0.0.1 and a raw client (tests/support/smtp_raw.py)
that writes exactly the bytes given: commands split across reads, whole
pipelined transactions in one write, bodies with the terminator split,
dot-stuffing, bare LF, limits, sequence errors, a client vanishing mid-DATA.
Where the listener means to behave as aiosmtpd did (it replaced an
aiosmtpd-based listener), the reply codes are aiosmtpd's.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

from engine.live.listener import Listener
from engine.live.listener_session import SmtpConnection
from engine.live.submission import Submission
from tests.support.listener_kit import CommitRecorder
from tests.support.smtp_raw import RawClient
from tests.support.waiting import until


def session(script: Callable[[RawClient, CommitRecorder], Awaitable[Any]],
            **kw: Any) -> tuple[Any, CommitRecorder]:
    """Run `script` against a fresh Listener; (its result, the journal)."""
    journal = CommitRecorder()

    async def go() -> Any:
        async with (Listener("127.0.0.1", 0, submit=journal, hostname="mx.test", **kw) as server,
                    RawClient(server.port) as c):
            return await script(c, journal)

    return asyncio.run(go()), journal


def test_commands_split_across_reads() -> None:
    async def script(c: RawClient, j: CommitRecorder) -> list[tuple[int, str]]:
        for part in (b"EH", b"LO client.test\r", b"\nMAIL FR", b"OM:<a@s.test>\r\n"):
            await c.send(part)
            await asyncio.sleep(0.02)
        code, lines = await c.reply()
        return [(code, lines[0]), *await c.replies(1)]

    got, _ = session(script)
    assert [code for code, _ in got] == [250, 250]
    assert got[0][1] == "mx.test"


def test_a_pipelined_transaction_in_one_write_is_answered_in_order() -> None:
    async def script(c: RawClient, j: CommitRecorder) -> list[tuple[int, str]]:
        await c.cmd(b"EHLO client.test")
        await c.send(b"MAIL FROM:<a@s.test>\r\nRCPT TO:<x@one.test>\r\n"
                     b"RCPT TO:<y@two.test>\r\nDATA\r\n")
        first = await c.replies(4)
        await c.send(b"Subject: p\r\n\r\nhi\r\n.\r\nMAIL FROM:<b@s.test>\r\n"
                     b"RCPT TO:<z@one.test>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n")
        return first + await c.replies(5)

    got, journal = session(script)
    assert got == [(250, "2.1.0 OK"), (250, "2.1.5 OK"), (250, "2.1.5 OK"),
                   (354, "End data with <CR><LF>.<CR><LF>"), (250, "2.0.0 OK ids=id1,id2"),
                   (250, "2.1.0 OK"), (250, "2.1.5 OK"), (354, "End data with <CR><LF>.<CR><LF>"),
                   (250, "2.0.0 OK ids=id3")]
    assert [(s.sender, s.recipients, s.content) for s in journal.committed] == [
        ("a@s.test", ("x@one.test",), b"Subject: p\r\n\r\nhi\r\n"),
        ("a@s.test", ("y@two.test",), b"Subject: p\r\n\r\nhi\r\n"),
        ("b@s.test", ("z@one.test",), b"second\r\n")]


class _Transport:
    """Records writes; enough of a transport for SmtpConnection without a socket."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return (self.peer, 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.writes.append(b"<paused>")

    def resume_reading(self) -> None:
        self.writes.append(b"<resumed>")


def drive(chunks: list[bytes], peer: str = "127.0.0.1", **kw: Any
          ) -> tuple[list[bytes], CommitRecorder]:
    """Feed `chunks` to one SmtpConnection (no socket); the transport's writes, the journal."""
    journal = CommitRecorder()

    async def go() -> list[bytes]:
        listener = Listener(submit=journal, hostname="mx.test", **kw)
        conn = SmtpConnection(listener)
        transport = _Transport(peer)
        conn.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            conn.data_received(chunk)
            for _ in range(3):
                await asyncio.sleep(0)  # let a commit task finish
        conn.connection_lost(None)
        return transport.writes

    return asyncio.run(go()), journal


def test_one_write_per_batch_of_pipelined_commands() -> None:
    writes, journal = drive([
        b"EHLO c\r\n",
        b"MAIL FROM:<a@s.test>\r\nRCPT TO:<x@one.test>\r\nRCPT TO:<nodomain>\r\nDATA\r\n",
        b"body\r\n.\r\n",
    ])
    assert writes[1:] == [
        b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 20971520\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n",
        b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n"
        b"501 5.1.3 recipient must be an address of the form local@domain\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
        b"250 2.0.0 OK ids=id1\r\n"]
    assert writes[0] == b"220 mx.test ESMTP egress\r\n"
    assert [s.recipients for s in journal.committed] == [("x@one.test",)]


def test_relay_and_auth_rules_for_a_client_outside_loopback() -> None:
    plain = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw") + b"\r\n"
    writes, journal = drive([b"EHLO c\r\n", plain,
                             b"MAIL FROM:<a@s.test>\r\nRCPT TO:<x@one.test>\r\n"],
                            peer="192.0.2.7", auth={"alice": "pw"})
    assert b"AUTH" not in writes[1]  # not offered in clear to a remote client
    assert writes[2:] == [
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n",
        b"250 2.1.0 OK\r\n550 5.7.1 relaying denied\r\n"]
    writes, _ = drive([b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<x@one.test>\r\n"],
                      peer="192.0.2.7", allowed_networks=["192.0.2.0/24"])
    assert writes[1].endswith(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n")
    assert journal.committed == []


def test_body_split_across_reads_with_the_terminator_split() -> None:
    body = b"Subject: s\r\n\r\n" + b"x" * 3000 + b"\r\nend\r\n"
    for cut in ([len(body) + 1, len(body) + 2, len(body) + 3, len(body) + 4],
                [1, 2, 3], [len(body) - 1]):
        data = body + b".\r\n"
        pieces, start = [], 0
        for c in cut:
            pieces.append(data[start:c])
            start = c
        pieces.append(data[start:])
        head = b"HELO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<x@o.test>\r\nDATA\r\n"
        writes, journal = drive([head, *[p for p in pieces if p], b"NOOP\r\n"])
        assert [s.content for s in journal.committed] == [body], cut
        assert writes[-2:] == [b"250 2.0.0 OK ids=id1\r\n", b"250 2.0.0 OK\r\n"]


def test_dot_stuffing_bare_lf_and_an_empty_body() -> None:
    # What the client sends after DATA -> what is submitted.  A bare LF is data (aiosmtpd
    # read body lines up to CRLF only), so ".\n" does not end the body; a lone "." line does.
    cases = [
        (b"..leading\r\n.b\r\nmid..dle\r\n..\r\n", b".leading\r\nb\r\nmid..dle\r\n.\r\n"),
        (b"a\nb\r\n.\nnot the end\r\n", b"a\nb\r\n\nnot the end\r\n"),
        (b"", b""),
    ]

    async def script(c: RawClient, j: CommitRecorder) -> list[bytes]:
        await c.cmd(b"HELO client.test")
        for sent, _ in cases:
            assert (await c.cmd(b"MAIL FROM:<a@s.test>"))[0] == 250
            assert (await c.cmd(b"RCPT TO:<x@one.test>"))[0] == 250
            assert (await c.cmd(b"DATA"))[0] == 354
            await c.send(sent + b".\r\n")
            assert (await c.reply())[0] == 250
        return [s.content for s in j.committed]

    got, _ = session(script)
    assert got == [expected for _, expected in cases]


def test_bare_lf_ends_command_lines() -> None:
    async def script(c: RawClient, j: CommitRecorder) -> list[int]:
        await c.send(b"HELO client.test\nMAIL FROM:<a@s.test>\nRCPT TO:<x@one.test>\nDATA\n")
        codes = [code for code, _ in await c.replies(4)]
        await c.send(b"hi\r\n.\r\n")
        return [*codes, (await c.reply())[0]]

    got, journal = session(script)
    assert got == [250, 250, 250, 354, 250]
    assert [s.content for s in journal.committed] == [b"hi\r\n"]


def test_overlong_command_line_and_unknown_commands() -> None:
    async def script(c: RawClient, j: CommitRecorder) -> list[tuple[int, str]]:
        out = [await c.cmd(b"NOOP " + b"x" * 5000), await c.cmd(b"NOOP"),
               await c.cmd(b"FROB x"), await c.cmd(b""), await c.cmd(b"EXPN list")]
        await c.send(b"FROB\r\nFROB\r\nFROB\r\nFROB\r\n")
        out += await c.replies(4)
        return [*out, (0, str(await c.closed()))]

    got, _ = session(script)
    assert [code for code, _ in got] == [500, 250, 500, 500, 502, 500, 500, 500, 502, 0]
    assert got[-1] == (0, "True")
    assert got[0] == (500, "5.5.2 Error: command line too long")
    assert got[2] == (500, '5.5.1 Error: command "FROB" not recognized')
    assert got[-2] == (502, "5.5.1 Too many unrecognized commands, goodbye.")


def test_rset_noop_helo_quit_and_sequence_errors() -> None:
    async def script(c: RawClient, j: CommitRecorder) -> list[tuple[int, str]]:
        lines = [b"MAIL FROM:<a@s.test>", b"HELO", b"HELO client.test", b"RCPT TO:<x@one.test>",
                 b"DATA", b"MAIL FROM:<a@s.test>", b"MAIL FROM:<b@s.test>",
                 b"DATA", b"RSET", b"RCPT TO:<x@one.test>", b"NOOP", b"MAIL FROM:<a@s.test> SIZE=5",
                 b"MAIL FROM:<a@s.test", b"QUIT"]
        out = [await c.cmd(line) for line in lines]
        return [*out, (0, str(await c.closed()))]

    got, journal = session(script)
    # An unclosed "<": aiosmtpd's lenient address parser took it (250), the Listener refuses.
    assert [code for code, _ in got] == [503, 501, 250, 503, 503, 250, 503, 503, 250, 503, 250,
                                         501, 553, 221, 0]
    assert got[-1] == (0, "True") and journal.committed == []
    assert [text for _, text in got[:3]] == [
        "5.5.1 Error: send HELO first", "5.5.4 Syntax: HELO hostname", "mx.test"]
    assert got[13] == (221, "2.0.0 Bye")


def test_size_parameter_over_the_limit_and_esmtp_parameters() -> None:
    async def script(c: RawClient, j: CommitRecorder) -> list[int]:
        await c.cmd(b"EHLO client.test")
        lines = [b"MAIL FROM:<a@s.test> SIZE=1001", b"MAIL FROM:<a@s.test> SIZE=ten",
                 b"MAIL FROM:<a@s.test> BODY=BINARY", b"MAIL FROM:<a@s.test> FOO=1",
                 b"MAIL FROM:<a@s.test> SIZE=1000 BODY=8BITMIME",
                 b"RCPT TO:<x@one.test> NOTIFY=NEVER"]
        return [(await c.cmd(line))[0] for line in lines]

    got, _ = session(script, max_message_size=1000)
    assert got == [552, 501, 501, 555, 250, 555]


def test_null_sender_is_submitted_as_the_empty_string() -> None:
    async def script(c: RawClient, j: CommitRecorder) -> int:
        await c.send(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster@one.test>\r\nDATA\r\n")
        assert [code for code, _ in await c.replies(4)] == [250, 250, 250, 354]
        await c.send(b"bounce\r\n.\r\n")
        return (await c.reply())[0]

    got, journal = session(script)
    assert got == 250
    assert [(s.sender, s.recipients) for s in journal.committed] == [
        ("", ("postmaster@one.test",))]


def test_client_gone_mid_data_submits_nothing() -> None:
    journal = CommitRecorder()

    async def go() -> list[Submission]:
        async with Listener("127.0.0.1", 0, submit=journal, hostname="mx.test") as server:
            async with RawClient(server.port) as c:
                await c.send(b"HELO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<x@one.test>\r\n"
                             b"DATA\r\n")
                await c.replies(4)
                await c.send(b"Subject: half\r\n\r\nand then\r\n.")
                c.close()
                # The listener has seen the client go (its session is over), so
                # whatever it was going to do with the half body is done.
                await until(lambda: not server._conns, what="the session ended")
            async with RawClient(server.port) as again:  # the listener is still serving
                assert (await again.cmd(b"NOOP"))[0] == 250
            return list(journal.committed)

    assert asyncio.run(go()) == []
    assert journal.entered == 0


def test_idle_client_is_told_421_and_closed() -> None:
    async def script(c: RawClient, j: CommitRecorder) -> tuple[tuple[int, list[str]], bool]:
        return await c.reply(), await c.closed()

    (reply, closed), _ = session(script, timeout=0.3)
    assert reply == (421, ["4.4.2 mx.test idle timeout, closing connection"])
    assert closed is True


def test_reading_pauses_while_a_commit_waits_and_the_client_keeps_sending() -> None:
    gate_journal = CommitRecorder()

    async def go() -> list[bytes]:
        gate = asyncio.Event()

        async def submit(sub: Submission) -> list[str]:
            await gate.wait()
            return await gate_journal(sub)

        conn = SmtpConnection(Listener(submit=submit, hostname="mx.test"))
        transport = _Transport("127.0.0.1")
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(b"HELO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<x@o.test>\r\n"
                           b"DATA\r\nhi\r\n.\r\n")
        for _ in range(3):
            conn.data_received(b"NOOP\r\n" * 100_000)  # 600 KB each, not waiting for the 250
        await asyncio.sleep(0)
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        conn.connection_lost(None)
        return transport.writes

    writes = asyncio.run(go())
    assert writes[2:4] == [b"<paused>", b"<resumed>"]
    assert writes[4] == b"250 2.0.0 OK ids=id1\r\n" + b"250 2.0.0 OK\r\n" * 300_000
    assert len(writes) == 5
    assert [s.content for s in gate_journal.committed] == [b"hi\r\n"]
