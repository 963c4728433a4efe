"""SMTPUTF8 and 8BITMIME at the listener, over a real socket on 127.0.0.1:
offered in EHLO, a UTF-8 address taken with MAIL's SMTPUTF8 parameter and
refused without it, the checks on addresses (controls, length) kept."""

from __future__ import annotations

import asyncio

from engine.live.listener import Listener
from tests.support.listener_kit import CommitRecorder
from tests.support.smtp_raw import RawClient

REFUSED = (553, "5.6.7 Error: non-ASCII address needs SMTPUTF8 on MAIL FROM")


def talk(*lines: bytes) -> tuple[list[str], list[tuple[int, str]], CommitRecorder]:
    """EHLO, then each line with its reply: (EHLO keywords, replies, journal)."""
    journal = CommitRecorder()

    async def go() -> tuple[list[str], list[tuple[int, str]]]:
        async with (Listener("127.0.0.1", 0, submit=journal, hostname="mx.test") as server,
                    RawClient(server.port) as c):
            await c.send(b"EHLO client.test\r\n")
            _, ehlo = await c.reply()
            got = [await c.cmd(line) for line in lines]
            return ehlo, got

    ehlo, got = asyncio.run(go())
    return ehlo, got, journal


def test_ehlo_offers_smtputf8_and_8bitmime() -> None:
    ehlo, _, _ = talk()
    assert "SMTPUTF8" in ehlo
    assert "8BITMIME" in ehlo


def test_utf8_addresses_accepted_with_smtputf8() -> None:
    _, got, journal = talk(
        "MAIL FROM:<jörg@sender.test> SMTPUTF8 BODY=8BITMIME".encode(),
        "RCPT TO:<用户@例え.test>".encode(),
        b"DATA", "Subject: grüße\r\n\r\nhallo\r\n.".encode())
    assert got == [(250, "2.1.0 OK"), (250, "2.1.5 OK"), (354, "End data with <CR><LF>.<CR><LF>"),
                   (250, "2.0.0 OK ids=id1")]
    sub = journal.committed[0]
    assert (sub.sender, sub.recipients) == ("jörg@sender.test", ("用户@例え.test",))


def test_utf8_addresses_refused_without_smtputf8() -> None:
    _, got, _ = talk(
        "MAIL FROM:<jörg@sender.test>".encode(),
        b"MAIL FROM:<a@sender.test> BODY=8BITMIME",
        "RCPT TO:<ü@one.test>".encode(),
        b"RCPT TO:<u@one.test>")
    assert got == [REFUSED, (250, "2.1.0 OK"), REFUSED, (250, "2.1.5 OK")]


def test_smtputf8_lasts_one_transaction() -> None:
    _, got, _ = talk(b"MAIL FROM:<a@s.test> SMTPUTF8", b"RSET",
                     b"MAIL FROM:<a@s.test>", "RCPT TO:<ü@one.test>".encode())
    assert got == [(250, "2.1.0 OK"), (250, "2.0.0 OK"), (250, "2.1.0 OK"), REFUSED]


def test_controls_length_and_bad_utf8_stay_refused() -> None:
    long_local = "ü" * 33  # 66 octets, though 33 characters
    _, got, _ = talk(
        b"MAIL FROM:<a@s.test> SMTPUTF8",
        "RCPT TO:<a\u0085b@one.test>".encode(),  # C1 control NEL
        b"RCPT TO:<a\x00b@one.test>",
        f"RCPT TO:<{long_local * 2}@one.test>".encode(),
        b"RCPT TO:<\xff@one.test>",  # not UTF-8
        b"RSET",
        b"MAIL FROM:<a@s.test> SMTPUTF8=yes")
    assert got == [
        (250, "2.1.0 OK"),
        (501, "5.5.2 Error: control character in address"),
        (501, "5.5.2 Error: control character in address"),
        (553, "5.1.3 Error: local part longer than 64 octets"),
        REFUSED,
        (250, "2.0.0 OK"),
        (501, "5.5.4 Error: SMTPUTF8 takes no value"),
    ]

