"""Effects: the orders the engine gives its driver.

A driver carries out every effect, in the order given, and never decides
anything itself (see STYLE.md, "Drivers").  Effects are frozen, slotted,
keyword-only dataclasses of plain values, like events.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from engine.events import MxRecord, Timer, TlsaRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class Effect:
    """Base of all effects."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolve(Effect):
    """Look up the MX set of `domain` with each host's A/AAAA; answer with
    `Resolved` or `ResolveFailed`."""

    domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveHosts(Effect):
    """Look up the A/AAAA of each of `hosts` (smart hosts, not MX); answer with
    `Resolved` for `domain` (one `MxRecord` per host with its addresses), or
    `ResolveFailed` when any of them has none (KumoMTA fails the list as a whole)."""

    domain: str
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchMtaSts(Effect):
    """Find `domain`'s MTA-STS policy (TXT + HTTPS); answer with `MtaStsResolved`."""

    domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveTlsa(Effect):
    """Look up ``_port._tcp.host`` TLSA with DNSSEC; answer with `TlsaResolved`."""

    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Connect(Effect):
    """Open a TCP connection; answer with `Connected` or `ConnectFailed`.

    The engine arms the connect timeout itself; if it fires first the engine
    emits `Close(conn)` and the driver must not report the connection afterwards.
    """

    conn: int
    host: str
    address: str
    port: int
    source: str
    source_address: str | None = None
    path: str = ""  # the ready queue ("source->site") this connection serves

    def __init__(self, *, conn: int, host: str, address: str, port: int, source: str,
                 source_address: str | None = None, path: str = "") -> None:
        # written out, as SetTimer's
        object.__setattr__(self, "conn", conn)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "source_address", source_address)
        object.__setattr__(self, "path", path)


class TlsMode(enum.StrEnum):
    """How the driver verifies the peer during the handshake."""

    VERIFY = "verify"  # full certificate and host name verification
    INSECURE = "insecure"  # encrypt, verify nothing
    DANE = "dane"  # verify against `TlsSettings.tlsa` (RFC 7672)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """Everything the driver needs to run the handshake the config asks for."""

    mode: TlsMode
    server_name: str
    prefer_openssl: bool = False
    openssl_cipher_list: str | None = None
    openssl_cipher_suites: str | None = None
    openssl_options: str | None = None
    rustls_cipher_suites: tuple[str, ...] | None = None
    tlsa: tuple[TlsaRecord, ...] = ()
    # tls_certificate / tls_private_key: keysources of a client certificate (PEM)
    certificate: Any = None
    private_key: Any = field(default=None, repr=False)
    # a failed handshake hands the clear socket back instead of closing it: the
    # session goes on in clear on it (OpportunisticInsecure, as KumoMTA does)
    fallback_clear: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTls(Effect):
    """Run the TLS handshake on `conn` (after a 220 to STARTTLS); answer with
    `TlsEstablished` or `TlsFailed`."""

    conn: int
    settings: TlsSettings


class Verb(enum.StrEnum):
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH_PLAIN = "AUTH PLAIN"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    BODY = "BODY"  # the message content and the final dot; arg is the message id
    RSET = "RSET"
    QUIT = "QUIT"
    DOT = "."  # a lone final dot: a 354 answered with no recipient accepted (RFC 2920 3.1)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class SmtpCommand:
    """One SMTP command.  `arg` is the EHLO domain, the address, or for BODY the
    message id whose spooled content the driver sends (dot-stuffed, with the
    final dot).  For AUTH PLAIN `arg` is the user name and `secret` the keysource
    of the password, resolved by the driver at the last moment and never logged.
    `params` are ESMTP parameters after a MAIL/RCPT address (e.g. ``SIZE=1234``)."""

    verb: Verb
    arg: str = ""
    params: str = ""
    secret: Any = field(default=None, repr=False, compare=False)

    def __init__(self, *, verb: Verb, arg: str = "", params: str = "",
                 secret: Any = None) -> None:
        # written out, as SetTimer's
        object.__setattr__(self, "verb", verb)
        object.__setattr__(self, "arg", arg)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "secret", secret)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Send(Effect):
    """Write these commands on `conn` in one write (a PIPELINING batch is one Send).
    Each command but BODY gets exactly one reply; BODY gets one (after the dot)."""

    conn: int
    commands: tuple[SmtpCommand, ...]

    def __init__(self, *, conn: int, commands: tuple[SmtpCommand, ...]) -> None:
        # written out, as SetTimer's
        object.__setattr__(self, "conn", conn)
        object.__setattr__(self, "commands", commands)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Close(Effect):
    """Drop `conn` now (after a QUIT reply, a 421, a timeout, or a broken peer)."""

    conn: int

    def __init__(self, *, conn: int) -> None:
        object.__setattr__(self, "conn", conn)  # written out, as SetTimer's


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class SetTimer(Effect):
    """Arm (or re-arm) the timer named `timer` to fire at `at`.

    Its ``__init__`` is written out (``init=False``) for the compiled build,
    where mypyc makes a written ``__init__`` native and a generated one not:
    several are made per simulated message."""

    timer: Timer
    at: float

    def __init__(self, *, timer: Timer, at: float) -> None:
        object.__setattr__(self, "timer", timer)
        object.__setattr__(self, "at", at)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class CancelTimer(Effect):
    timer: Timer

    def __init__(self, *, timer: Timer) -> None:
        object.__setattr__(self, "timer", timer)  # written out, as SetTimer's


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Log(Effect):
    """A log record in KumoMTA's JSON log shape (see engine.records).

    `where`, for a `Delayed` record of a full ready queue, is that ready queue's
    name: KumoMTA's text for it (``Context: ..., ReadyQueueWasFull. Next due
    in ...``) names none, and a driver's accounting (the simulator's re-delays
    per path) needs it.  It is not part of the record."""

    record: dict[str, Any]
    where: str | None = None

    def __init__(self, *, record: dict[str, Any], where: str | None = None) -> None:
        # written out, as SetTimer's
        object.__setattr__(self, "record", record)
        object.__setattr__(self, "where", where)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Discard(Effect):
    """The message is finished (delivered to every recipient, bounced or expired):
    the driver may drop its body from the spool."""

    message_id: str

    def __init__(self, *, message_id: str) -> None:
        object.__setattr__(self, "message_id", message_id)  # written out, as SetTimer's


@dataclass(frozen=True, slots=True, kw_only=True)
class AcquireLease(Effect):
    """Take one of `limit` leases under `key` in the shared store, named `lease`,
    held until `ttl` seconds from now unless extended or released (KumoMTA's
    sorted-set lease: prune expired members, count, add).  Answer with
    `LimitAnswered(request=...)`: wait 0 when granted, else the wait."""

    request: int
    key: str
    limit: int
    lease: str
    ttl: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtendLease(Effect):
    """Push the expiry of a held lease to `ttl` seconds from now; no answer."""

    key: str
    lease: str
    ttl: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseLease(Effect):
    """Give a lease back (its connection closed); no answer."""

    key: str
    lease: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckThrottle(Effect):
    """Count one event against the shared GCRA throttle `key` (`limit` per
    `period` seconds, bursting to `burst`) if it conforms.  Answer with
    `LimitAnswered(request=...)`: wait 0 when counted, else the wait."""

    request: int
    key: str
    limit: int
    period: float
    burst: int


def closes(effects: list[Effect], conn: int) -> bool:
    """Whether `effects` close `conn`: a driver reads none of its replies after
    them (`Engine.handle_replies` stops there; so does a driver feeding one
    `Response` at a time)."""
    return any(type(e) is Close and e.conn == conn for e in effects)  # type: ignore[attr-defined]


__all__ = [
    "AcquireLease",
    "CancelTimer",
    "CheckThrottle",
    "Close",
    "Connect",
    "Discard",
    "Effect",
    "ExtendLease",
    "FetchMtaSts",
    "Log",
    "MxRecord",
    "ReleaseLease",
    "Resolve",
    "ResolveHosts",
    "ResolveTlsa",
    "Send",
    "SetTimer",
    "SmtpCommand",
    "StartTls",
    "TlsMode",
    "TlsSettings",
    "Verb",
    "closes",
]
