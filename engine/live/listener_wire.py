"""The byte-level pieces of the fast SMTP listener: replies, addresses, DATA, headers.

`engine.live.listener` is the asyncio Protocol (connection life, state,
commits); this module holds what it does to bytes, as plain functions with no
I/O, so each can be tested on its own and the protocol stays short.  They are
shaped for speed on the listener's hot path: bytes methods (`find`, `split`,
`replace`) over whole buffers, never a regex or the `email` package per
command, and reply lines prebuilt as bytes.

What it keeps of aiosmtpd's behaviour (what clients were tested against):
command lines end at LF (a bare LF is accepted, trailing CR/LF stripped);
DATA lines end only at CRLF, so a bare LF inside the body is kept as it is
(neither normalised nor refused) and only CRLF "." CRLF ends the body; the
first "." of every body line is removed (RFC 5321 4.5.2); the size limit is
on the body as sent (dot-stuffed, with its final CRLF).  Stricter than
aiosmtpd: a MAIL/RCPT address with a control character or over RFC 5321's
length limits is refused (`check_address`), so it never reaches the journal
or a later MAIL/RCPT on the wire.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress

from engine.live.submission import metadata_from_headers, recipient_domain

__all__ = [
    "MAX_DOMAIN",
    "MAX_LOCAL_PART",
    "MAX_PATH",
    "AddressError",
    "MailParams",
    "check_address",
    "fast_metadata",
    "is_loopback",
    "parse_mail_params",
    "parse_path",
    "undot",
    "valid_recipient",
]


class AddressError(ValueError):
    """A MAIL/RCPT argument that is not a path; the message is the reply to send."""


MAX_LOCAL_PART = 64  # octets, RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # octets, RFC 5321 4.5.3.1.2
MAX_PATH = 256  # octets with the angle brackets, RFC 5321 4.5.3.1.3

_CONTROLS = frozenset(range(0x20)) | {0x7F} | frozenset(range(0x80, 0xA0))  # C0, DEL, C1

NOT_ASCII_PATH = b"553 5.6.7 Error: non-ASCII address needs SMTPUTF8 on MAIL FROM\r\n"
"""A UTF-8 address in a transaction that did not ask for SMTPUTF8 (RFC 6531 3.6),
or bytes in MAIL/RCPT that are not UTF-8 at all."""


def check_address(addr: str) -> None:
    """Refuse what must never reach the journal or a later MAIL/RCPT: control
    characters (CR, LF, NUL, ...: they would break or smuggle commands when the
    address is relayed) and paths over RFC 5321's limits.  Raises `AddressError`
    with the reply.  A UTF-8 address (SMTPUTF8) is measured in its encoded octets;
    whether it may be non-ASCII at all is the MAIL/RCPT handler's check."""
    if any(ord(c) in _CONTROLS for c in addr):
        raise AddressError("501 5.5.2 Error: control character in address")
    octets = addr.encode("utf-8")
    at = octets.rfind(b"@")
    if at > MAX_LOCAL_PART:
        raise AddressError(f"553 5.1.3 Error: local part longer than {MAX_LOCAL_PART} octets")
    if at >= 0 and len(octets) - at - 1 > MAX_DOMAIN:
        raise AddressError(f"553 5.1.3 Error: domain longer than {MAX_DOMAIN} octets")
    if len(octets) + 2 > MAX_PATH:
        raise AddressError(f"501 5.5.4 Error: path longer than {MAX_PATH} octets")


def parse_path(arg: str, keyword: str) -> tuple[str, str]:
    """``"FROM:<a@b> SIZE=5"`` -> ``("a@b", "SIZE=5")`` for keyword ``"FROM:"``.

    A null path ``<>`` gives ``""``.  Raises `AddressError` whose text is the
    reply: ``501`` when the keyword or address is missing, ``553`` when the
    angle brackets do not close, and what `check_address` refuses.  An address
    without brackets is taken up to the first space, as aiosmtpd's parser did.
    """
    n = len(keyword)
    if arg[:n].upper() != keyword:
        raise AddressError(f"501 5.5.4 Syntax: {'MAIL FROM' if n == 5 else 'RCPT TO'}:"
                           " <address>")
    rest = arg[n:].lstrip()
    if not rest:
        raise AddressError(f"501 5.5.4 Syntax: {'MAIL FROM' if n == 5 else 'RCPT TO'}:"
                           " <address>")
    if rest[0] == "<":
        close = rest.find(">")
        if close < 0:
            raise AddressError("553 5.1.3 Error: malformed address")
        addr = rest[1:close]
        params = rest[close + 1 :].strip()
        if ":" in addr and addr.startswith("@"):  # source route <@a,@b:user@c>
            addr = addr[addr.index(":") + 1 :]
    else:
        addr, _, params = rest.partition(" ")
        params = params.strip()
        if not addr:
            raise AddressError("553 5.1.3 Error: malformed address")
    if "<" in addr or (" " in addr and not addr.startswith('"')):
        raise AddressError("553 5.1.3 Error: malformed address")
    check_address(addr)
    return addr, params


def valid_recipient(addr: str) -> bool:
    """True for ``local@domain`` (what `Submission` will take)."""
    try:
        recipient_domain(addr)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for a loopback address (IPv4-mapped IPv6 included); False for anything else."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class MailParams:
    """The outcome of parsing MAIL FROM's ESMTP parameters (`parse_mail_params`)."""

    __slots__ = ("error", "size", "smtputf8")

    def __init__(self, size: int | None = None, error: bytes | None = None,
                 smtputf8: bool = False) -> None:
        self.size = size
        self.error = error
        self.smtputf8 = smtputf8


_SYNTAX_MAIL = b"501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"


def parse_mail_params(params: str, max_size: int) -> MailParams:
    """Check MAIL's parameters: BODY=7BIT|8BITMIME, SIZE=n and SMTPUTF8 are known,
    nothing else.

    Mirrors aiosmtpd: a malformed parameter or a non-numeric SIZE is a 501,
    SIZE over `max_size` a 552, SMTPUTF8 with a value a 501, any other a 555.
    """
    if not params:
        return MailParams()
    size: int | None = None
    smtputf8 = False
    for word in params.upper().split():
        name, eq, value = word.partition("=")
        if not name.isalnum() or (eq and not value):
            return MailParams(error=_SYNTAX_MAIL)
        if name == "BODY":
            if value not in ("7BIT", "8BITMIME"):
                return MailParams(error=b"501 5.5.4 Error: BODY can only be one of 7BIT, "
                                        b"8BITMIME\r\n")
        elif name == "SIZE":
            if not value.isdigit():
                return MailParams(error=_SYNTAX_MAIL)
            size = int(value)
            if size > max_size:
                return MailParams(error=b"552 5.3.4 Error: message size exceeds fixed "
                                        b"maximum message size\r\n")
        elif name == "SMTPUTF8":
            if eq:
                return MailParams(error=b"501 5.5.4 Error: SMTPUTF8 takes no value\r\n")
            smtputf8 = True
        else:
            return MailParams(error=b"555 5.5.4 MAIL FROM parameters not recognized or not "
                                    b"implemented\r\n")
    return MailParams(size=size, smtputf8=smtputf8)


def undot(raw: bytes) -> bytes:
    """Remove the transparency dot of every body line (RFC 5321 4.5.2), in one pass.

    `raw` is the body as sent, without the final "." CRLF.  Only lines that
    begin after a CRLF count, as aiosmtpd read lines up to CRLF.
    """
    if raw[:1] == b".":
        raw = raw[1:]
    if b"\r\n." in raw:
        raw = raw.replace(b"\r\n.", b"\r\n")
    return raw


def b64(blob: bytes) -> bytes | None:
    """Strict base64 decoding; None when the blob is not valid base64."""
    try:
        return base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_name(name: bytes) -> bool:
    # A header field name as the email package's feedparser takes it: printable ASCII, no
    # space, no colon (its headerRE is [\041-\071\073-\176]*:).
    return name.isalnum() or all(33 <= c <= 126 for c in name)


def fast_metadata(content: bytes, tenant_header: bytes, campaign_header: bytes,
                  tenant_name: str, campaign_name: str) -> tuple[str, str]:
    """(tenant, campaign) exactly as `metadata_from_headers` reads them, but quicker.

    `tenant_header`/`campaign_header` are the lowercased names plus ``b":"``.
    Most messages carry neither header: one `find` over the lowercased header
    block answers that.  A plain ASCII, CRLF-only header block is scanned
    here; anything unusual (8-bit bytes, bare LF or CR, a line that is not a
    header, a leading "From " line) goes to the `email` parser itself.
    """
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    low = head.lower()
    if tenant_header not in low and campaign_header not in low:
        return "", ""
    if (not head.isascii() or head.count(b"\n") != head.count(b"\r\n")
            or head.count(b"\r") != head.count(b"\r\n") or low.startswith(b"from ")
            or (end < 0 and not head.endswith(b"\r\n"))):
        return metadata_from_headers(content, tenant_name, campaign_name)
    found: dict[bytes, list[bytes]] = {}
    current: list[bytes] | None = None
    for n, line in enumerate(head[:-2].split(b"\r\n")):
        if line[:1] in (b" ", b"\t"):
            if n == 0:  # a continuation with nothing to continue
                return metadata_from_headers(content, tenant_name, campaign_name)
            if current is not None:
                current.append(line)
            continue
        colon = line.find(b":")
        if colon <= 0 or not _is_name(line[:colon]):
            return metadata_from_headers(content, tenant_name, campaign_name)
        key = line[: colon + 1].lower()
        if key in (tenant_header, campaign_header) and key not in found:
            current = found[key] = [line[colon + 1 :]]
        else:
            current = None

    def value(key: bytes) -> str:
        parts = found.get(key)
        return "" if parts is None else " ".join(b" ".join(parts).decode("ascii").split())

    return value(tenant_header), value(campaign_header)
