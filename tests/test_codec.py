"""The journal codec round-trips every event exactly and refuses bad bytes by offset.

The Hypothesis strategies are derived from the dataclass field types, like the
codec itself, so an event added to `ALL_EVENTS` is covered with no change here;
only fields with validation rules get a hand-written strategy (`OVERRIDES`).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import codec, codec_gen
from engine.codec import (
    HEADER,
    TAGS,
    decode_event,
    decode_events,
    decode_many,
    encode_event,
    encode_events,
    iter_decode,
    tag_of,
)
from engine.errors import JournalError
from engine.events import (
    ALL_EVENTS,
    AdminBounceRule,
    AdminSuspend,
    AdminSuspendReadyQ,
    DnsFailure,
    Event,
    MessageSubmitted,
    MtaStsPolicy,
    MtaStsResolved,
    Response,
    TimerFired,
)
from engine.reply import EnhancedCode, Reply

_domain = st.text(st.characters(blacklist_characters="@", blacklist_categories=("Cs",)),
                  min_size=1, max_size=12)


@st.composite
def _recipients(draw: st.DrawFn) -> tuple[str, ...]:
    domain = draw(_domain)
    locals_ = draw(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4))
    return tuple(f"{lp}@{domain}" for lp in locals_)


OVERRIDES: dict[tuple[type, str], st.SearchStrategy[Any]] = {
    (MessageSubmitted, "id"): st.text(min_size=1, max_size=20),
    (MessageSubmitted, "recipients"): _recipients(),
    (MessageSubmitted, "size"): st.integers(min_value=0),
    (Reply, "code"): st.integers(min_value=200, max_value=599),
    (EnhancedCode, "klass"): st.sampled_from((2, 4, 5)),
    (EnhancedCode, "subject"): st.integers(min_value=0, max_value=999),
    (EnhancedCode, "detail"): st.integers(min_value=0, max_value=999),
    (MtaStsPolicy, "mode"): st.sampled_from(("enforce", "testing", "none")),
    (AdminSuspend, "id"): st.text(min_size=1, max_size=20),
    (AdminSuspendReadyQ, "id"): st.text(min_size=1, max_size=20),
    (AdminSuspendReadyQ, "name"): st.text(min_size=1, max_size=20),
    (AdminBounceRule, "id"): st.text(min_size=1, max_size=20),
}


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for any field type the codec supports, derived from the type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp in (int, str, bytes, bool):
        return st.from_type(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        fields = {
            f.name: OVERRIDES.get((tp, f.name), strategy_for(hints[f.name]))
            for f in dataclasses.fields(tp)
            if f.init
        }
        return st.builds(tp, **fields)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(a) if a is not type(None) else st.none() for a in args])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
    if origin is tuple:
        return st.tuples(*(strategy_for(a) for a in args))
    raise AssertionError(f"no strategy for {tp!r}")


any_event = st.one_of([strategy_for(cls) for cls in ALL_EVENTS])


def test_every_event_class_has_a_unique_stable_tag() -> None:
    tags = dict(TAGS)
    assert len(tags) == len(TAGS), "a tag is used twice"
    assert len(set(tags.values())) == len(TAGS), "a class has two tags"
    untagged = [cls.__name__ for cls in ALL_EVENTS if cls.__name__ not in tags.values()]
    assert untagged == [], f"add these to engine.codec.TAGS: {untagged}"
    # The first tags are written in journals already: they must never move.
    assert tag_of(MessageSubmitted) == 1
    assert tag_of(Response) == 10
    assert tag_of(TimerFired) == 13


def test_a_class_without_tag_is_refused_by_name() -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Mystery(Event):
        x: int = 0

    with pytest.raises(JournalError, match="Mystery has no journal tag: add it to TAGS"):
        encode_event(Mystery(at=1.0))


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_round_trip_each_event_type(cls: type[Event]) -> None:
    @settings(max_examples=60, deadline=None)
    @given(strategy_for(cls))
    def check(ev: Event) -> None:
        data = encode_event(ev)
        assert data[0] == tag_of(cls)
        back = decode_event(data)
        assert back == ev
        assert type(back) is cls

    check()


@settings(max_examples=100, deadline=None)
@given(st.lists(any_event, max_size=12))
def test_round_trip_streams(evs: list[Event]) -> None:
    data = encode_events(evs)
    assert data.startswith(HEADER)
    assert decode_events(data) == evs
    assert list(iter_decode(memoryview(data))) == evs
    assert list(decode_many(encode_event(e) for e in evs)) == evs


def test_golden_bytes_pin_the_layout() -> None:
    ev = Response(at=1.5, conn=3, reply=Reply.make(250, "2.0.0", "ok"))
    assert encode_event(ev).hex() == (
        "0a" "000000000000f83f" "06" "f403" "02" "6f6b" "01" "04" "00" "00"
    )
    timer = TimerFired(at=0.0, timer=("conn", -2))
    assert encode_event(timer).hex() == "0d" "0000000000000000" "04636f6e6e" "01" "03"


def test_at_round_trips_bit_for_bit_and_big_ints_survive() -> None:
    ev = MessageSubmitted(at=1.7e9 + 0.1, id="m", sender="", recipients=("a@b",), size=2**80)
    back = decode_event(encode_event(ev))
    assert back.at.hex() == ev.at.hex()
    assert back.size == 2**80


def test_enum_and_optional_values() -> None:
    from engine.events import ResolveFailed

    ev = ResolveFailed(at=1.0, domain="x.org", kind=DnsFailure.SERVFAIL, detail="é")
    back = decode_event(encode_event(ev))
    assert back.kind is DnsFailure.SERVFAIL
    none = MtaStsResolved(at=1.0, domain="d", policy=None)
    assert decode_event(encode_event(none)).policy is None


def test_unknown_tag_names_offset() -> None:
    good = encode_events([TimerFired(at=1.0, timer=("promote", ""))])
    bad = good + b"\xee"
    with pytest.raises(JournalError, match=f"unknown event tag 238 at offset {len(good)}"):
        decode_events(bad)
    with pytest.raises(JournalError, match="unknown event tag 0 at offset 0"):
        decode_event(b"\x00")


def test_every_truncation_is_reported_with_offset() -> None:
    evs = [
        MessageSubmitted(at=2.0, id="m1", sender="s@x", recipients=("r@y",), size=300),
        Response(at=3.0, conn=1, reply=Reply.make(451, "4.4.1", "later")),
    ]
    data = encode_events(evs)
    second = len(HEADER) + len(encode_event(evs[0]))
    for cut in range(len(HEADER) + 1, len(data)):
        if cut == second:
            assert decode_events(data[:cut]) == evs[:1]
            continue
        with pytest.raises(JournalError) as info:
            decode_events(data[:cut])
        offset = len(HEADER) if cut < second else second
        assert f"at offset {offset}" in str(info.value), (cut, str(info.value))
        assert "truncated" in str(info.value)
    single = encode_event(evs[0])
    for cut in range(1, len(single)):
        with pytest.raises(JournalError, match="truncated MessageSubmitted event at offset 0"):
            decode_event(single[:cut])


def test_trailing_and_corrupt_bytes() -> None:
    data = encode_event(MtaStsResolved(at=1.0, domain="d", policy=None))
    with pytest.raises(JournalError, match="1 trailing bytes after the event, at offset 12"):
        decode_event(data + b"\x00")
    corrupt = data[:-1] + b"\x07"  # the optional's presence byte may only be 0 or 1
    with pytest.raises(JournalError, match="corrupt MtaStsResolved event at offset 0"):
        decode_event(corrupt)
    invalid = encode_event(Response(at=1.0, conn=1, reply=Reply(code=250)))
    invalid = invalid[:10] + b"\x02" + invalid[12:]  # reply code 1: refused by Reply
    with pytest.raises(JournalError, match="corrupt Response event at offset 0: SMTP reply code"):
        decode_event(invalid)


def test_header_is_checked() -> None:
    data = encode_events([])
    assert data == HEADER and decode_events(data) == []
    with pytest.raises(JournalError, match="not an egress journal stream"):
        decode_events(b"JSON" + data[4:])
    with pytest.raises(JournalError, match="format version 9 at offset 3 is not supported"):
        decode_events(data[:3] + b"\x09" + data[4:])
    with pytest.raises(JournalError, match="another event schema: fingerprint 00000000"):
        decode_events(data[:4] + b"\0\0\0\0")


def test_wrong_field_types_are_refused_on_encode() -> None:
    ev = Response(at=1.0, conn=1, reply=Reply(code=250))
    object.__setattr__(ev, "conn", "one")
    with pytest.raises(JournalError, match="cannot encode Response"):
        encode_event(ev)
    tf = TimerFired(at=1.0, timer=("conn", 1.5))  # type: ignore[arg-type]
    with pytest.raises(JournalError, match="cannot encode TimerFired"):
        encode_event(tf)


def test_fingerprint_covers_the_layout() -> None:
    assert len(codec.SCHEMA_FINGERPRINT) == 4
    text = codec_gen.describe(Response)
    assert text.startswith("Response(at:float,conn:int,reply:Reply(code:int")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Odd(Event):
    extra: dict[str, int]


def test_unsupported_field_type_is_named() -> None:
    with pytest.raises(TypeError, match=r"cannot encode fields of type dict\[str,int\]"):
        codec_gen.compile_event(_Odd, 99)


def test_inline_two_byte_ints_are_the_bytes_write_int_writes() -> None:
    """The generated encoders write 64..8191 inline: the format must not move."""
    import struct as _struct

    from engine.codec_gen import _write_int
    from engine.events import Closed as _Closed

    for v in [*range(0, 9000), 16383, 16384, 2**31, 10**12]:
        ev = _Closed(at=1.0, conn=v, reason="x")
        got = encode_event(ev)
        want = bytearray([got[0]]) + _struct.pack("<d", 1.0)
        _write_int(want, v)
        want += b"\x01x"
        assert got == bytes(want), v
        assert decode_event(got) == ev
    assert encode_event(_Closed(at=0.0, conn=250, reason=""))[9:11] == b"\xf4\x03"
