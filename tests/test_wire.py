"""Tests for engine.wire: the reply parser and the command/body encoders."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.effects import SmtpCommand, Verb
from engine.errors import ReplyParseError
from engine.reply import EnhancedCode, Reply
from engine.wire import ReplyParser, encode_auth_plain, encode_body, encode_command

# -- the reply parser ------------------------------------------------------


def test_single_line_reply_with_enhanced_code() -> None:
    assert ReplyParser().feed(b"250 2.1.0 Sender ok\r\n") == [
        Reply(code=250, text="Sender ok", enhanced=EnhancedCode(klass=2, subject=1, detail=0))
    ]


def test_enhanced_code_of_another_class_stays_in_the_text() -> None:
    assert ReplyParser().feed(b"250 5.1.0 odd\r\n") == [Reply(code=250, text="5.1.0 odd")]


def test_354_has_no_enhanced_code() -> None:
    assert ReplyParser().feed(b"354 go ahead\r\n") == [Reply(code=354, text="go ahead")]


def test_multi_line_ehlo_reply_is_one_reply() -> None:
    data = b"250-mx.example.com hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n"
    assert ReplyParser().feed(data) == [
        Reply(code=250, text="mx.example.com hello\nPIPELINING\nSIZE 1000\nSTARTTLS")
    ]


def test_enhanced_code_is_stripped_from_continuation_lines() -> None:
    data = b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n"
    assert ReplyParser().feed(data) == [Reply.make(550, "5.7.1", "first\nsecond\nthird")]


def test_bare_lf_and_code_only_lines() -> None:
    assert ReplyParser().feed(b"220 ready\n250\n221 \n") == [
        Reply(code=220, text="ready"),
        Reply(code=250, text=""),
        Reply(code=221, text=""),
    ]


def test_reply_split_across_feeds_at_every_byte() -> None:
    data = b"250-a\r\n250-2.0.0 b\r\n250 c\r\n451 4.3.0 later\r\n"
    expected = [Reply(code=250, text="a\n2.0.0 b\nc"), Reply.make(451, "4.3.0", "later")]
    for cut in range(len(data) + 1):
        parser = ReplyParser()
        got = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert got == expected, cut
        assert parser.pending is False


def test_pending_while_a_reply_is_open() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-one\r\n25") == []
    assert parser.pending is True
    assert parser.feed(b"0 two\r\n") == [Reply(code=250, text="one\ntwo")]


def test_pipelined_replies_in_one_read() -> None:
    data = b"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go\r\n"
    assert [r.code for r in ReplyParser().feed(data)] == [250, 550, 250, 354]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", "not an SMTP reply line: 'HTTP/1.1 400 Bad Request'"),
        (b"2x0 ok\r\n", "not an SMTP reply line: '2x0 ok'"),
        (b"250ok\r\n", "not an SMTP reply line: '250ok'"),
        (b"25\r\n", "not an SMTP reply line: '25'"),
        (b"650 what\r\n", "not an SMTP reply line: '650 what'"),
        (b"\r\n", "not an SMTP reply line: ''"),
        (
            b"250-one\r\n251 two\r\n",
            "continuation line has code 251 but the reply started with 250: '251 two'",
        ),
    ],
)
def test_garbage_raises_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(ReplyParseError) as info:
        ReplyParser().feed(data)
    assert str(info.value) == message


def test_parser_is_spent_after_an_error() -> None:
    parser = ReplyParser()
    with pytest.raises(ReplyParseError):
        parser.feed(b"2x0 ok\r\n")
    with pytest.raises(ReplyParseError, match="not an SMTP reply line: '2x0 ok'"):
        parser.feed(b"250 fine\r\n")


def test_overlong_line_raises_even_before_its_end_arrives() -> None:
    parser = ReplyParser(max_line=100)
    assert parser.feed(b"250 " + b"x" * 96 + b"\r\n") == [Reply(code=250, text="x" * 96)]
    with pytest.raises(ReplyParseError, match="reply line longer than 100 bytes"):
        parser.feed(b"250 " + b"x" * 200)


def test_overlong_complete_line_raises() -> None:
    with pytest.raises(ReplyParseError, match="reply line longer than 4096 bytes"):
        ReplyParser().feed(b"250 " + b"y" * 4093 + b"\r\n")


def test_default_line_limit_is_inclusive() -> None:
    line = b"250 " + b"y" * 4092
    assert ReplyParser().feed(line + b"\r\n") == [Reply(code=250, text="y" * 4092)]


def test_overlarge_reply_raises() -> None:
    parser = ReplyParser(max_line=100, max_reply=1000)
    with pytest.raises(ReplyParseError, match=r"reply larger than 1000 bytes \(code 250\)"):
        parser.feed((b"250-" + b"z" * 90 + b"\r\n") * 11 + b"250 end\r\n")


def test_parser_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="max_reply \\(10\\) must be at least max_line \\(100\\)"):
        ReplyParser(max_line=100, max_reply=10)


def test_non_utf8_text_is_replaced_not_fatal() -> None:
    assert ReplyParser().feed(b"250 caf\xe9\r\n") == [Reply(code=250, text="caf\ufffd")]


# -- command encoding -------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "wire"),
    [
        (SmtpCommand(verb=Verb.EHLO, arg="me.example"), b"EHLO me.example\r\n"),
        (SmtpCommand(verb=Verb.HELO, arg="me.example"), b"HELO me.example\r\n"),
        (SmtpCommand(verb=Verb.STARTTLS), b"STARTTLS\r\n"),
        (SmtpCommand(verb=Verb.MAIL, arg="a@b.example"), b"MAIL FROM:<a@b.example>\r\n"),
        (
            SmtpCommand(verb=Verb.MAIL, arg="a@b.example", params="SIZE=1234"),
            b"MAIL FROM:<a@b.example> SIZE=1234\r\n",
        ),
        (SmtpCommand(verb=Verb.MAIL, arg=""), b"MAIL FROM:<>\r\n"),
        (SmtpCommand(verb=Verb.RCPT, arg="x@y.example"), b"RCPT TO:<x@y.example>\r\n"),
        (SmtpCommand(verb=Verb.DATA), b"DATA\r\n"),
        (SmtpCommand(verb=Verb.RSET), b"RSET\r\n"),
        (SmtpCommand(verb=Verb.QUIT), b"QUIT\r\n"),
    ],
)
def test_encode_command(cmd: SmtpCommand, wire: bytes) -> None:
    assert encode_command(cmd) == wire


def test_encode_command_refuses_body_and_auth() -> None:
    with pytest.raises(ValueError, match="cannot encode BODY: use encode_body"):
        encode_command(SmtpCommand(verb=Verb.BODY, arg="msg1"))
    with pytest.raises(ValueError, match="cannot encode AUTH PLAIN"):
        encode_command(SmtpCommand(verb=Verb.AUTH_PLAIN, arg="scott"))


def test_encode_command_refuses_line_injection() -> None:
    with pytest.raises(ValueError, match="RCPT TO address must not contain CR or LF"):
        encode_command(SmtpCommand(verb=Verb.RCPT, arg="a@b\r\nDATA"))
    with pytest.raises(ValueError, match="EHLO needs a domain argument"):
        encode_command(SmtpCommand(verb=Verb.EHLO))


def test_encode_auth_plain() -> None:
    wire = encode_auth_plain("scott", "tiger")
    assert wire == b"AUTH PLAIN " + base64.b64encode(b"\0scott\0tiger") + b"\r\n"
    assert wire == b"AUTH PLAIN AHNjb3R0AHRpZ2Vy\r\n"


# -- body encoding ----------------------------------------------------------


def test_encode_body_examples() -> None:
    assert encode_body(b"") == b".\r\n"
    assert encode_body(b"hi") == b"hi\r\n.\r\n"
    assert encode_body(b"a\nb\r\n") == b"a\r\nb\r\n.\r\n"
    assert encode_body(b".x\n..y\n.\nz\r.w") == b"..x\r\n...y\r\n..\r\nz\r\n..w\r\n.\r\n"


def _unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b".\r\n")
    lines = wire[:-3].split(b"\r\n")
    assert lines[-1] == b""
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:-1])


def _normalised(content: bytes) -> bytes:
    text = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text.replace(b"\n", b"\r\n")


_TRICKY = st.lists(st.sampled_from([b".", b"\r", b"\n", b"a"])).map(b"".join)


@given(st.binary(max_size=300) | _TRICKY)
def test_unstuffing_recovers_the_content(content: bytes) -> None:
    wire = encode_body(content)
    assert b"\r\n.\r\n" in b"\r\n" + wire
    # the terminator appears exactly once, at the end
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    # no bare CR or LF anywhere
    assert wire.count(b"\n") == wire.count(b"\r\n") == wire.count(b"\r")
    assert _unstuff(wire) == _normalised(content)
