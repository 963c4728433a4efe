"""SMTP on the wire: reply bytes in, `Reply` values out; commands in, bytes out.

This module is pure (no sockets, no clock) so the live driver can use it on
real connections while the simulator skips bytes altogether and hands the
engine `Response` events directly.  It is shaped like h11's reader: a small
incremental parser fed whatever the socket returned, keeping a partial line
or a partial multi-line reply until the rest arrives, and failing loudly
(`ReplyParseError` naming what was wrong) rather than guessing at garbage.

A parse error is not an exception for the engine: the driver turns it into a
`Malformed` event, which the session routes to a transient failure and a
closed connection.
"""

from __future__ import annotations

import base64

from engine.effects import SmtpCommand, Verb
from engine.errors import ReplyParseError
from engine.reply import EnhancedCode, Reply

__all__ = [
    "MAX_LINE",
    "MAX_REPLY",
    "ReplyParser",
    "encode_auth_plain",
    "encode_body",
    "encode_command",
]

MAX_LINE = 4096
"""Longest reply line accepted, in bytes, without its line ending (RFC 5321
allows 512; real servers send longer EHLO lines, so we are generous)."""

MAX_REPLY = 64 * 1024
"""Largest whole (multi-line) reply accepted, in bytes."""

_DIGITS = frozenset(b"0123456789")


def _show(line: bytes) -> str:
    """A short printable excerpt of a bad line for an error message."""
    text = line[:60].decode("utf-8", "replace")
    return repr(text + ("..." if len(line) > 60 else ""))


def _split_enhanced(code: int, text: str) -> tuple[EnhancedCode | None, str]:
    """Split a leading RFC 3463 code off `text` when its class matches `code`'s."""
    head, _, rest = text.partition(" ")
    if head.count(".") != 2 or head[:1] != str(code // 100):
        return None, text
    try:
        enhanced = EnhancedCode.parse(head)
    except ValueError:
        return None, text
    return enhanced, rest


class ReplyParser:
    """Incremental parser of SMTP replies (RFC 5321 4.2).

    `feed` takes the bytes read so far and returns every reply they complete;
    a line split across reads, or a multi-line reply (``250-`` continuation
    lines) split anywhere, is kept until the rest arrives.  Lines may end in
    CRLF or a bare LF.  The enhanced status code (RFC 2034) is taken from the
    first line when its class matches the reply code, and stripped from the
    continuation lines that repeat it.

    Anything that is not a reply (``HTTP/1.1 400``, ``2x0 ok``, a
    continuation line with a different code, a line longer than `max_line`,
    a reply larger than `max_reply`) raises `ReplyParseError`, whose
    ``replies`` attribute holds the replies that same feed completed before
    the bad line; the parser is
    then spent and raises the same error on every later feed, since the
    stream can no longer be trusted.
    """

    __slots__ = ("_buf", "_code", "_failed", "_lines", "_size", "max_line", "max_reply")

    def __init__(self, *, max_line: int = MAX_LINE, max_reply: int = MAX_REPLY) -> None:
        if max_line < 4:
            raise ValueError(f"max_line must be at least 4 bytes, not {max_line}")
        if max_reply < max_line:
            raise ValueError(f"max_reply ({max_reply}) must be at least max_line ({max_line})")
        self.max_line = max_line
        self.max_reply = max_reply
        self._buf = b""
        self._lines: list[bytes] = []  # text parts of the reply being assembled
        self._code = 0  # its code, 0 when no reply is open
        self._size = 0  # its size in bytes so far
        self._failed: str | None = None

    @property
    def pending(self) -> bool:
        """True when part of a reply has been read but not yet completed."""
        return bool(self._buf) or bool(self._lines)

    def feed(self, data: bytes) -> list[Reply]:
        """Consume `data`; return the replies it completes, in order."""
        if self._failed is not None:
            raise ReplyParseError(self._failed)
        buf = self._buf + data if self._buf else data
        replies: list[Reply] = []
        start = 0
        try:
            while True:
                end = buf.find(b"\n", start)
                if end < 0:
                    break
                stop = end - 1 if end > start and buf[end - 1] == 13 else end
                reply = self._line(buf[start:stop])
                if reply is not None:
                    replies.append(reply)
                start = end + 1
            rest = buf[start:]
            if len(rest) > self.max_line + 1:  # +1: a CR waiting for its LF
                self._fail(f"reply line longer than {self.max_line} bytes: {_show(rest)}")
            self._buf = rest
        except ReplyParseError as exc:
            self._failed = str(exc)
            self._buf = b""
            self._lines = []
            # The replies completed before the bad line are still replies (a 220
            # to STARTTLS followed by garbage): the caller may use them.
            exc.replies = replies  # type: ignore[attr-defined]
            raise
        return replies

    def _fail(self, message: str) -> None:
        raise ReplyParseError(message)

    def _line(self, line: bytes) -> Reply | None:
        if len(line) > self.max_line:
            self._fail(f"reply line longer than {self.max_line} bytes: {_show(line)}")
        if (
            len(line) < 3
            or line[0] not in b"2345"
            or line[1] not in _DIGITS
            or line[2] not in _DIGITS
            or (len(line) > 3 and line[3] not in b" -")
        ):
            self._fail(f"not an SMTP reply line: {_show(line)}")
        code = int(line[:3])
        if self._code and code != self._code:
            self._fail(
                f"continuation line has code {code} but the reply started with "
                f"{self._code}: {_show(line)}"
            )
        self._size += len(line) + 2
        if self._size > self.max_reply:
            self._fail(f"reply larger than {self.max_reply} bytes (code {code})")
        self._code = code
        self._lines.append(line[4:])
        if len(line) > 3 and line[3] == 45:  # "-": more lines follow
            return None
        return self._finish()

    def _finish(self) -> Reply:
        code = self._code
        texts = [part.decode("utf-8", "replace") for part in self._lines]
        self._lines = []
        self._code = 0
        self._size = 0
        enhanced, texts[0] = _split_enhanced(code, texts[0])
        if enhanced is not None:
            prefix = f"{enhanced} "
            bare = str(enhanced)
            for i in range(1, len(texts)):
                if texts[i].startswith(prefix):
                    texts[i] = texts[i][len(prefix) :]
                elif texts[i] == bare:
                    texts[i] = ""
        return Reply(code=code, text="\n".join(texts), enhanced=enhanced)


def _checked(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must not contain CR or LF: {value!r}")
    return value


_BARE = {
    Verb.STARTTLS: b"STARTTLS\r\n",
    Verb.DATA: b"DATA\r\n",
    Verb.RSET: b"RSET\r\n",
    Verb.QUIT: b"QUIT\r\n",
    Verb.DOT: b".\r\n",
}


def encode_command(cmd: SmtpCommand) -> bytes:
    """The bytes of one command line, CRLF included.

    MAIL and RCPT wrap `arg` in angle brackets (an empty `arg` is the null
    sender ``<>``) and append `cmd.params` (e.g. ``SIZE=1234``).  BODY and
    AUTH PLAIN are not command lines of this kind: use `encode_body` and
    `encode_auth_plain`.
    """
    verb = cmd.verb
    bare = _BARE.get(verb)
    if bare is not None:
        return bare
    if verb is Verb.EHLO or verb is Verb.HELO:
        if not cmd.arg:
            raise ValueError(f"{verb.value} needs a domain argument, got {cmd.arg!r}")
        return f"{verb.value} {_checked(cmd.arg, verb.value + ' domain')}\r\n".encode()
    if verb is Verb.MAIL or verb is Verb.RCPT:
        line = f"{verb.value}:<{_checked(cmd.arg, verb.value + ' address')}>"
        if cmd.params:
            line += " " + _checked(cmd.params, verb.value + " parameters")
        return (line + "\r\n").encode()
    raise ValueError(
        f"encode_command cannot encode {verb.value}: use encode_body for BODY and "
        "encode_auth_plain for AUTH PLAIN"
    )


def encode_auth_plain(user: str, password: str) -> bytes:
    """``AUTH PLAIN <base64("\\0user\\0password")>`` with its CRLF (RFC 4616)."""
    if "\0" in user or "\0" in password:
        raise ValueError("AUTH PLAIN user name and password must not contain NUL")
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
    return b"AUTH PLAIN " + token + b"\r\n"


def encode_body(content: bytes) -> bytes:
    """The message content as sent after a 354: every line ending (CRLF, bare
    LF, bare CR) made CRLF, lines starting with ``.`` dot-stuffed, a final
    CRLF added when missing, then the terminating ``.`` line.

    Empty content gives just ``.\\r\\n`` (the CRLF before it is the DATA
    line's own)."""
    text = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    if text.startswith(b"."):
        text = b"." + text
    text = text.replace(b"\n.", b"\n..")
    return text.replace(b"\n", b"\r\n") + b".\r\n"
