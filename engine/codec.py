"""The journal codec: events to compact bytes and back, exactly.

Why it is shaped so:

* **Derived from the dataclass fields, compiled once.**  Each event class gets
  an encoder and a decoder generated as straight-line Python source from its
  field types (``typing.get_type_hints``) the first time the module is
  imported (the generator is `engine.codec_gen`).  A field added to an event, or an event added to
  `engine.events.ALL_EVENTS`, is picked up with no codec change; what is
  generated is as fast as hand-written code (no per-field dispatch at run time).
* **Tags are explicit and stable.**  The one-byte tag of each event class comes
  from `TAGS` below, an ordered table that is only ever appended to; a class in
  `ALL_EVENTS` without a tag is refused with a `JournalError` naming it (and a
  test fails).  Layouts are fingerprinted (`SCHEMA_FINGERPRINT`) so bytes
  written under another layout are refused rather than misread.
* **Compact.**  Per event: the tag byte, then the fields in declaration order.
  ``float`` is a little-endian float64 (so `at` round-trips bit for bit); ``int``
  a zigzag LEB128 varint (any size); ``str``/``bytes`` a varint length and the
  UTF-8/raw bytes; ``bool`` and ``X | None`` one byte; enums by value; tuples a
  varint count (``tuple[T, ...]``) or their fixed elements; a union such as
  ``str | int`` a one-byte index of its member; nested dataclasses inline.
  No JSON, no pickle: decoding cannot run code.
* **Single events carry no header** (the journal stores one per row and keeps
  the format in its own metadata); streams (`encode_events`) start with
  ``b"EGJ"``, the version byte and the 4-byte schema fingerprint.

Bad input (unknown tag, truncated or corrupt bytes, wrong header) raises
`JournalError` naming the offset.  Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator

from engine import events as _events
from engine.codec_gen import Corrupt, Decoder, Encoder, compile_event, describe
from engine.errors import JournalError
from engine.events import Event

MAGIC = b"EGJ"
VERSION = 1

# Append only: a tag, once written to a journal, names its class for ever.
TAGS: tuple[tuple[int, str], ...] = (
    (1, "MessageSubmitted"),
    (2, "Resolved"),
    (3, "ResolveFailed"),
    (4, "MtaStsResolved"),
    (5, "TlsaResolved"),
    (6, "Connected"),
    (7, "ConnectFailed"),
    (8, "TlsEstablished"),
    (9, "TlsFailed"),
    (10, "Response"),
    (11, "Malformed"),
    (12, "Closed"),
    (13, "TimerFired"),
    (14, "Suspend"),
    (15, "Resume"),
    (16, "Bounce"),
    (17, "Restarted"),
    (18, "Drain"),
    (19, "AdminSuspend"),
    (20, "AdminSuspendReadyQ"),
    (21, "AdminBounceRule"),
    (22, "AdminCancel"),
    (23, "PolicyReloaded"),
    (24, "LimitAnswered"),
)


_UNSUPPORTED: dict[str, str] = {}


def _build() -> tuple[dict[type, Encoder], list[Decoder | None], list[str], bytes]:
    by_name = {name: tag for tag, name in TAGS}
    encoders: dict[type, Encoder] = {}
    decoders: list[Decoder | None] = [None] * 256
    names = ["?"] * 256
    schema = []
    for tag, name in TAGS:
        cls = getattr(_events, name, None)
        if isinstance(cls, type) and issubclass(cls, Event):
            try:
                encoders[cls], decoders[tag] = compile_event(cls, tag)
            except TypeError as exc:  # an unsupported field type: refuse this class only
                _UNSUPPORTED[name] = str(exc)
                continue
            names[tag] = name
            schema.append(f"{tag}={describe(cls)}")
    for cls in _events.ALL_EVENTS:
        if cls.__name__ not in by_name:
            schema.append(f"untagged={cls.__name__}")
    fingerprint = hashlib.blake2b(";".join(schema).encode(), digest_size=4).digest()
    return encoders, decoders, names, fingerprint


_ENCODERS, _DECODERS, _NAMES, SCHEMA_FINGERPRINT = _build()
HEADER = MAGIC + bytes([VERSION]) + SCHEMA_FINGERPRINT


def tag_of(cls: type[Event]) -> int:
    """The stable one-byte tag of an event class; `JournalError` if it has none."""
    for tag, name in TAGS:
        if name == cls.__name__ and _NAMES[tag] == name:
            return tag
    if cls.__name__ in _UNSUPPORTED:
        raise JournalError(f"event class {cls.__name__}: {_UNSUPPORTED[cls.__name__]}")
    raise JournalError(
        f"event class {cls.__name__} has no journal tag: add it to TAGS in engine/codec.py"
    )


def _encode_into(ev: Event, out: bytearray) -> None:
    enc = _ENCODERS.get(ev.__class__)
    if enc is None:
        tag_of(type(ev))  # raises, naming the class
        raise JournalError(f"cannot encode {type(ev).__name__}: not an event")
    try:
        enc(ev, out)
    except (TypeError, AttributeError, ValueError, OverflowError, struct.error) as exc:
        raise JournalError(f"cannot encode {ev!r}: {exc}") from None


def encode_event(ev: Event) -> bytes:
    """One event as its tag byte and fields (no stream header)."""
    out = bytearray()
    _encode_into(ev, out)
    return bytes(out)


def encode_each(evs: Iterable[Event]) -> list[bytes]:
    """Each event's `encode_event` bytes, in order (the journal's rows of one append).

    The same bytes as `encode_event` one by one, without its per-call lookups.
    """
    encoders = _ENCODERS
    out: list[bytes] = []
    buf = bytearray()
    for ev in evs:
        enc = encoders.get(ev.__class__)
        if enc is None:
            _encode_into(ev, buf)  # raises, naming the class
        try:
            enc(ev, buf)  # type: ignore[misc]
        except (TypeError, AttributeError, ValueError, OverflowError, struct.error) as exc:
            raise JournalError(f"cannot encode {ev!r}: {exc}") from None
        out.append(bytes(buf))
        buf.clear()
    return out


def encode_events(evs: Iterable[Event]) -> bytes:
    """A stream: `HEADER`, then each event's encoding, back to back."""
    out = bytearray(HEADER)
    for ev in evs:
        _encode_into(ev, out)
    return bytes(out)


def _decode_at(d: bytes, p: int) -> tuple[Event, int]:
    """Decode the event that starts at offset `p`; return it and the next offset."""
    try:
        tag = d[p]
    except IndexError:
        raise JournalError(f"truncated journal data: no event at offset {p}") from None
    dec = _DECODERS[tag]
    if dec is None:
        raise JournalError(f"unknown event tag {tag} at offset {p}")
    try:
        ev, q = dec(d, p + 1)
    except (IndexError, struct.error) as exc:
        raise JournalError(
            f"truncated {_NAMES[tag]} event at offset {p} (data ends at {len(d)}): {exc}"
        ) from None
    except (Corrupt, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise JournalError(f"corrupt {_NAMES[tag]} event at offset {p}: {exc}") from None
    if q > len(d):
        raise JournalError(
            f"truncated {_NAMES[tag]} event at offset {p} (needs {q} bytes, data ends at {len(d)})"
        )
    return ev, q


def _as_bytes(b: bytes | bytearray | memoryview) -> bytes:
    return b if type(b) is bytes else bytes(b)


def decode_event(b: bytes | bytearray | memoryview) -> Event:
    """Decode exactly one event written by `encode_event`."""
    d = _as_bytes(b)
    ev, p = _decode_at(d, 0)
    if p != len(d):
        raise JournalError(f"{len(d) - p} trailing bytes after the event, at offset {p}")
    return ev


def check_header(d: bytes) -> int:
    """Validate a stream header; return the offset of the first event."""
    if len(d) < len(HEADER) or d[:3] != MAGIC:
        raise JournalError(f"not an egress journal stream: header {d[:len(HEADER)]!r} at offset 0")
    if d[3] != VERSION:
        raise JournalError(
            f"journal format version {d[3]} at offset 3 is not supported "
            f"(this build reads {VERSION})"
        )
    if d[4:8] != SCHEMA_FINGERPRINT:
        raise JournalError(
            f"journal written with another event schema: fingerprint {d[4:8].hex()} at offset 4, "
            f"this build has {SCHEMA_FINGERPRINT.hex()}"
        )
    return len(HEADER)


def iter_decode(b: bytes | bytearray | memoryview) -> Iterator[Event]:
    """Decode a stream lazily, one event at a time (errors name the offset)."""
    d = _as_bytes(b)
    p = check_header(d)
    end = len(d)
    decoders = _DECODERS
    while p < end:
        dec = decoders[d[p]]
        try:
            ev, q = dec(d, p + 1)  # type: ignore[misc]
        except Exception:
            ev, q = _decode_at(d, p)  # unknown tag or bad bytes: raise the precise error
        if q > end:
            _decode_at(d, p)
        p = q
        yield ev


def decode_events(b: bytes | bytearray | memoryview) -> list[Event]:
    """Decode a whole stream written by `encode_events`."""
    return list(iter_decode(b))


def decode_many(blobs: Iterable[bytes]) -> Iterator[Event]:
    """Decode header-less single-event blobs (the journal's rows) in order."""
    decoders, names = _DECODERS, _NAMES
    for d in blobs:
        dec = decoders[d[0]] if d else None
        if dec is None:
            yield decode_event(d)  # raises with the precise message
            continue
        try:
            ev, p = dec(d, 1)
        except Exception:
            yield decode_event(d)
            continue
        if p != len(d):
            raise JournalError(f"{names[d[0]]} event: {len(d) - p} bytes left over at offset {p}")
        yield ev
