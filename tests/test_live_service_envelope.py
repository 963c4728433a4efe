"""engine.live (listener + service): bad envelopes are refused at MAIL/RCPT.

A real `Service` with its SQLite spool on loopback and a raw client that
writes exactly the bytes given.  Each bad address gets 501 or 553 at the
command that carries it, and nothing it was part of reaches the journal.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from engine.live.journal import iter_events
from engine.live.service import Service
from engine.policy import Policy
from tests.support.smtp_raw import RawClient

pytestmark = pytest.mark.timeout(30)

_LONG_LOCAL = "l" * 65
_LONG_DOMAIN = ".".join(["d" * 60] * 5)  # 304 octets
_LONG_PATH = "p" * 60 + "@" + ".".join(["d" * 60] * 4)  # 305 octets


class _NoResolver:
    """Delivery is not under test: lookups never answer."""

    async def resolve_mx(self, domain: str, now: float) -> Any:
        await asyncio.Event().wait()

    async def resolve_tlsa(self, host: str, port: int, now: float) -> Any:
        await asyncio.Event().wait()


BAD_SENDERS = [
    (b"MAIL FROM:<a\rb@s.test>", 501),
    (b"MAIL FROM:<a\x00b@s.test>", 501),
    (b"MAIL FROM:<a\x01b@s.test>", 501),
    (b"MAIL FROM:<a\x7fb@s.test>", 501),
    (b"MAIL FROM:<a\tb@s.test>", 501),
    ("MAIL FROM:<é@s.test>".encode(), 553),
    (f"MAIL FROM:<{_LONG_LOCAL}@s.test>".encode(), 553),
    (f"MAIL FROM:<a@{_LONG_DOMAIN}>".encode(), 553),
    (f"MAIL FROM:<{_LONG_PATH}>".encode(), 501),
]

BAD_RECIPIENTS = [
    (b"RCPT TO:<x\ry@example.com>", 501),
    (b"RCPT TO:<x\x00y@example.com>", 501),
    (b"RCPT TO:<x@exa\x1bmple.com>", 501),
    ("RCPT TO:<x@exämple.com>".encode(), 553),
    (f"RCPT TO:<{_LONG_LOCAL}@example.com>".encode(), 553),
    (f"RCPT TO:<x@{_LONG_DOMAIN}>".encode(), 553),
    (f"RCPT TO:<{_LONG_PATH}>".encode(), 501),
]


def _run(tmp_path: pathlib.Path, script: Any) -> list[str]:
    """Run `script(client)` against a fresh service; the journal's event kinds after."""
    spool = tmp_path / "spool"

    async def go() -> None:
        svc = Service(Policy(), spool, listen=("127.0.0.1", 0), resolver=_NoResolver())
        async with svc:
            port = svc.listen_port
            assert port is not None
            async with RawClient(port) as c:
                await script(c)
            assert svc.engine is not None and svc.engine.queued_count == 0

    asyncio.run(go())
    return [type(ev).__name__ for _, ev in iter_events(spool / "journal.sqlite")]


@pytest.mark.parametrize(("line", "code"), BAD_SENDERS)
def test_a_bad_sender_is_refused_at_mail_and_nothing_is_journaled(
        tmp_path: pathlib.Path, line: bytes, code: int) -> None:
    async def script(c: RawClient) -> None:
        assert (await c.cmd(b"EHLO client.test"))[0] == 250
        assert (await c.cmd(line))[0] == code
        # The client goes on as if it had been accepted: nothing may be queued.
        assert (await c.cmd(b"RCPT TO:<x@example.com>"))[0] == 503
        assert (await c.cmd(b"DATA"))[0] == 503

    assert "MessageSubmitted" not in _run(tmp_path, script)


@pytest.mark.parametrize(("line", "code"), BAD_RECIPIENTS)
def test_a_bad_recipient_is_refused_at_rcpt_and_nothing_is_journaled(
        tmp_path: pathlib.Path, line: bytes, code: int) -> None:
    async def script(c: RawClient) -> None:
        assert (await c.cmd(b"EHLO client.test"))[0] == 250
        assert (await c.cmd(b"MAIL FROM:<a@s.test>"))[0] == 250
        assert (await c.cmd(line))[0] == code
        assert (await c.cmd(b"DATA"))[0] == 503

    assert "MessageSubmitted" not in _run(tmp_path, script)


def test_a_bare_lf_inside_an_address_cannot_smuggle_a_recipient(tmp_path: pathlib.Path) -> None:
    """A LF ends the command line: the address is cut and refused, the rest is garbage."""
    async def script(c: RawClient) -> None:
        assert (await c.cmd(b"EHLO client.test"))[0] == 250
        await c.send(b"MAIL FROM:<a\nb@s.test>\r\n")
        assert [code for code, _ in await c.replies(2)] == [553, 500]
        assert (await c.cmd(b"DATA"))[0] == 503

    assert "MessageSubmitted" not in _run(tmp_path, script)


def test_a_good_envelope_next_to_bad_ones_is_journaled_once(tmp_path: pathlib.Path) -> None:
    async def script(c: RawClient) -> None:
        assert (await c.cmd(b"EHLO client.test"))[0] == 250
        assert (await c.cmd(b"MAIL FROM:<a@s.test>"))[0] == 250
        assert (await c.cmd(b"RCPT TO:<x\x00@example.com>"))[0] == 501
        assert (await c.cmd(b"RCPT TO:<x@example.com>"))[0] == 250
        assert (await c.cmd(b"DATA"))[0] == 354
        assert (await c.cmd(b"Subject: t\r\n\r\nhi\r\n."))[0] == 250

    spool = tmp_path / "spool"

    async def go() -> None:
        svc = Service(Policy(), spool, listen=("127.0.0.1", 0), resolver=_NoResolver())
        async with svc:
            assert svc.listen_port is not None
            async with RawClient(svc.listen_port) as c:
                await script(c)

    asyncio.run(go())
    submitted = [ev for _, ev in iter_events(spool / "journal.sqlite")
                 if type(ev).__name__ == "MessageSubmitted"]
    assert [(ev.sender, ev.recipients) for ev in submitted] == [("a@s.test",
                                                                  ("x@example.com",))]
