"""engine/live/listener_wire.py: addresses, MAIL parameters, un-dot-stuffing, headers, peers.

`fast_metadata` must read tenant and campaign exactly as the `email`-based
`metadata_from_headers` does; Hypothesis generates header blocks (folded
lines, odd spacing, duplicates, lookalike names, bare LF, 8-bit bytes) and
compares the two.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.live.listener_wire import (
    AddressError,
    fast_metadata,
    is_loopback,
    parse_mail_params,
    parse_path,
    undot,
)
from engine.live.submission import metadata_from_headers

T, C = b"x-tenant:", b"x-campaign:"


def fast(content: bytes) -> tuple[str, str]:
    return fast_metadata(content, T, C, "X-Tenant", "X-Campaign")


def test_parse_path() -> None:
    assert parse_path("FROM:<a@b.test>", "FROM:") == ("a@b.test", "")
    assert parse_path("from: <a@b.test>  SIZE=5 BODY=8BITMIME", "FROM:") == (
        "a@b.test", "SIZE=5 BODY=8BITMIME")
    assert parse_path("FROM:<>", "FROM:") == ("", "")
    assert parse_path("TO:<@relay.test:x@y.test>", "TO:") == ("x@y.test", "")
    assert parse_path("TO:x@y.test NOTIFY=NEVER", "TO:") == ("x@y.test", "NOTIFY=NEVER")
    assert parse_path('TO:<"a b"@y.test>', "TO:") == ('"a b"@y.test', "")
    for arg, keyword, reply in [
        ("<a@b>", "FROM:", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("TO:", "TO:", "501 5.5.4 Syntax: RCPT TO: <address>"),
        ("FROM:<a@b", "FROM:", "553 5.1.3 Error: malformed address"),
        ("TO:<a <b>", "TO:", "553 5.1.3 Error: malformed address"),
        ("TO:<a b@c>", "TO:", "553 5.1.3 Error: malformed address"),
    ]:
        with pytest.raises(AddressError) as err:
            parse_path(arg, keyword)
        assert str(err.value) == reply


def test_parse_mail_params() -> None:
    ok = parse_mail_params("SIZE=100 BODY=7bit", 100)
    assert (ok.size, ok.error) == (100, None)
    assert parse_mail_params("", 100).error is None
    assert parse_mail_params("SIZE=101", 100).error == (
        b"552 5.3.4 Error: message size exceeds fixed maximum message size\r\n")
    assert parse_mail_params("SIZE=x", 100).error == (
        b"501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n")
    assert parse_mail_params("SIZE=", 100).error == (
        b"501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n")
    assert parse_mail_params("BODY=BINARYMIME", 100).error == (
        b"501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME\r\n")
    assert parse_mail_params("SMTPUTF8", 100).smtputf8
    assert parse_mail_params("SMTPUTF8=1", 100).error == (
        b"501 5.5.4 Error: SMTPUTF8 takes no value\r\n")
    assert parse_mail_params("RET=HDRS", 100).error == (
        b"555 5.5.4 MAIL FROM parameters not recognized or not implemented\r\n")


def test_undot() -> None:
    assert undot(b"") == b""
    assert undot(b"..a\r\n...\r\nb.\r\n.c\r\n") == b".a\r\n..\r\nb.\r\nc\r\n"
    assert undot(b"plain\r\n") == b"plain\r\n"
    assert undot(b"a\n.b\r\n") == b"a\n.b\r\n"  # only a dot after CRLF begins a line


def test_fast_metadata_examples() -> None:
    msg = (b"From: a@s\r\nX-Tenant: acme\r\nX-Campaign:  spring\r\n\t sale \r\n"
           b"X-Tenant: second\r\n\r\nX-Campaign: body\r\n")
    assert fast(msg) == ("acme", "spring sale")
    assert fast(b"Subject: none\r\n\r\nX-Tenant: in body\r\n") == ("", "")
    assert fast(b"x-TENANT:t\r\n") == ("t", "")
    assert fast(b"X-Tenant : spaced name\r\n\r\n") == metadata_from_headers(
        b"X-Tenant : spaced name\r\n\r\n")


_name = st.sampled_from(["X-Tenant", "x-tenant", "X-Campaign", "X-CAMPAIGN", "Subject",
                         "X-Tenant-Id", "X-Tenant ", "From", "Received", "X Tenant"])
_value = st.text(st.sampled_from("ab c\t=;:é"), max_size=12)
_sep = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n"])


@st.composite
def _header_block(draw: st.DrawFn) -> bytes:
    out = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            out.append(draw(st.sampled_from([" folded", "\tmore", "  "])))
        elif kind == 1:
            out.append(draw(st.sampled_from(["not a header", "From someone", ":novalue"])))
        else:
            out.append(f"{draw(_name)}:{draw(_value)}")
    text = "".join(line + draw(_sep) for line in out)
    end = draw(st.sampled_from(["\r\n", "", "\r\nX-Tenant: in body\r\n"]))
    return (text + end).encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(_header_block())
def test_fast_metadata_reads_as_the_email_parser_does(content: bytes) -> None:
    assert fast(content) == metadata_from_headers(content)


def test_auth_in_clear_only_for_loopback_peers() -> None:
    assert [is_loopback(a) for a in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1",
                                     "192.0.2.1", "2001:db8::1", "garbage")] == [
        True, True, True, True, False, False, False]
