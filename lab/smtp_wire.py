"""The SMTP wire of a lab server: replies as bytes, command lines as verbs.

Split from `lab.servers` so that module holds only the connection's life;
what a reply looks like on the wire and how a line is read live here (what
the host answers is `sim.host_behaviour`'s).
"""

from __future__ import annotations

from engine.reply import Reply


def wire(reply: Reply) -> bytes:
    """A reply as the server sends it: one CRLF line per text line, enhanced
    code repeated on each line, ``-`` after the code on all lines but the last."""
    lines = reply.text.split("\n") or [""]
    code = str(reply.code)
    enhanced = f"{reply.enhanced} " if reply.enhanced is not None else ""
    out = []
    for i, line in enumerate(lines):
        sep = "-" if i < len(lines) - 1 else " "
        out.append(f"{code}{sep}{enhanced}{line}\r\n")
    return "".join(out).encode()


def command_verb(line: bytes) -> str:
    """A command line's verb as `sim.host_behaviour` compares it ("MAIL FROM",
    "RCPT TO", "AUTH PLAIN" for any AUTH, else the first word, upper case)."""
    head = line.decode("latin-1").upper()
    if head.startswith("MAIL FROM:"):
        return "MAIL FROM"
    if head.startswith("RCPT TO:"):
        return "RCPT TO"
    verb = head.rstrip("\r\n").split(" ", 1)[0]
    return "AUTH PLAIN" if verb == "AUTH" else verb


def take_lines(buf: bytearray) -> list[bytes]:
    """Every complete line in `buf` (removed from it), CRLF kept."""
    end = buf.rfind(b"\n")
    if end < 0:
        return []
    chunk = bytes(buf[: end + 1])
    del buf[: end + 1]
    return chunk.splitlines(keepends=True)
