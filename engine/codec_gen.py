"""Source generation for the journal codec (`engine.codec`).

Kept apart from the codec's public API because it is a different kind of code:
it reads a dataclass's field types once and writes the Python source of a
straight-line encoder and decoder for it, then compiles that source.  The
generated functions do no per-field dispatch at run time, which is what makes
a pure-Python decoder reach a few hundred thousand events per second.

The generated code works on two locals: ``d`` (the bytes) and ``p`` (the
offset).  It lets ``IndexError``/``struct.error`` escape on truncated input and
raises `Corrupt` (or the dataclass's own ``ValueError``) on bytes no encoder
could have written; `engine.codec` turns both into `JournalError` with the
offset.  Pure: no clock, no I/O.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import pathlib
import struct
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from engine.events import Event

_pack_d = struct.Struct("<d").pack
_unpack_d = struct.Struct("<d").unpack_from


class Corrupt(Exception):
    """Raised inside generated decoders for bytes no encoder could have written."""


def _write_uvarint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_int(out: bytearray, v: int) -> None:
    _write_uvarint(out, v << 1 if v >= 0 else ((-v) << 1) - 1)


def _read_uvarint(d: bytes, p: int) -> tuple[int, int]:
    shift = 0
    result = 0
    while True:
        b = d[p]
        p += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, p
        shift += 7


class _Gen:
    """Accumulates the source of one encoder or decoder function."""

    def __init__(self, ns: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.ns = ns
        self.n = 0

    def var(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def ref(self, obj: Any, prefix: str) -> str:
        name = f"_{prefix}{len(self.ns)}"
        self.ns[name] = obj
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def fields_of(cls: type) -> list[tuple[str, Any]]:
    """The (name, resolved type) of each constructor field of a dataclass, in order."""
    hints = _compiled_hints(cls) if "__mypyc_attrs__" in vars(cls) else typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _compiled_hints(cls: type) -> dict[str, Any]:
    """The field types of a dataclass of the optional compiled build (setup.py).

    mypyc replaces a compiled dataclass's annotations by bare runtime classes
    (``tuple[str, ...]`` becomes ``tuple``, ``Reply | None`` becomes ``type``),
    which would give the compiled build another codec and fingerprint.  The
    annotations are read instead from the class's source, installed beside
    the compiled module, and evaluated in that module's namespace as
    `typing.get_type_hints` evaluates the Python build's: read once, at
    import, from the package's own files (what importing it reads anyway),
    so the codec stays a pure function of the installed code."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            namespace = vars(sys.modules[klass.__module__])
            for name, text in _source_annotations(klass.__module__)[klass.__name__].items():
                hints[name] = eval(text, namespace)  # as get_type_hints evaluates a string
    return hints


@functools.cache
def _source_annotations(module: str) -> dict[str, dict[str, str]]:
    """{class name: {field: annotation text}} of every class in `module`'s source."""
    compiled = pathlib.Path(sys.modules[module].__file__ or module)
    source = compiled.with_name(module.rsplit(".", 1)[-1] + ".py")
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImportError(f"the journal codec needs the source of the compiled module {module} "
                          f"beside it ({source}): {exc.strerror}") from None
    return {node.name: {item.target.id: ast.unparse(item.annotation) for item in node.body
                        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
            for node in tree.body if isinstance(node, ast.ClassDef)}


def describe(tp: Any) -> str:
    """A canonical text of a type, recursing into dataclasses (for the fingerprint)."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        inner = ",".join(f"{n}:{describe(t)}" for n, t in fields_of(tp))
        return f"{tp.__name__}({inner})"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"enum {tp.__name__}"
    args = typing.get_args(tp)
    if args:
        origin = typing.get_origin(tp)
        name = "union" if origin in (typing.Union, types.UnionType) else origin.__name__
        return f"{name}[{','.join('...' if a is Ellipsis else describe(a) for a in args)}]"
    return getattr(tp, "__name__", repr(tp))


def _enc(g: _Gen, ind: int, expr: str, tp: Any) -> None:
    """Emit code appending the encoding of `expr` (of type `tp`) to `out`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is float:
        g.emit(ind, f"out += _pack_d({expr})")
    elif tp is bool:
        g.emit(ind, f"out.append(1 if {expr} else 0)")
    elif tp is int:
        v = g.var("v")
        g.emit(ind, f"{v} = {expr}")
        g.emit(ind, f"if {v}.__class__ is int and 0 <= {v} < 64: out.append({v} << 1)")
        # 64..8191 zigzag to 128..16383: two LEB128 bytes, written inline (SMTP
        # codes, connection numbers); the same bytes `_write_int` would write.
        g.emit(ind, f"elif {v}.__class__ is int and 0 <= {v} < 8192: "
                    f"out.append(({v} << 1 & 0x7F) | 0x80); out.append({v} >> 6)")
        g.emit(ind, f"else: _write_int(out, {v}.__index__())")
    elif tp is str or tp is bytes:
        b, n = g.var("b"), g.var("n")
        if tp is str:
            g.emit(ind, f"{b} = {expr}.encode()")
        else:
            g.emit(ind, f"{b} = {expr}")
            g.emit(ind, f"if not isinstance({b}, bytes): raise TypeError('bytes expected')")
        g.emit(ind, f"{n} = len({b})")
        g.emit(ind, f"if {n} < 128: out.append({n})")
        g.emit(ind, f"else: _write_uvarint(out, {n})")
        g.emit(ind, f"out += {b}")
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        kinds = {type(m.value) for m in tp}
        if not (kinds <= {str} or kinds <= {int}):
            raise TypeError(f"enum {tp.__name__} has values that are neither all str nor all int")
        _enc(g, ind, f"{g.ref(tp, 'enum')}({expr}).value", kinds.pop() if kinds else str)
    elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
        x = g.var("x")
        g.emit(ind, f"{x} = {expr}")
        g.emit(ind, f"if {x}.__class__ is not {g.ref(tp, 'cls')}: raise TypeError("
                    f"'expected {tp.__name__}, got ' + type({x}).__name__)")
        for name, ftp in fields_of(tp):
            _enc(g, ind, f"{x}.{name}", ftp)
    elif origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        x = g.var("x")
        g.emit(ind, f"{x} = {expr}")
        if len(members) < len(args):  # X | None: a presence byte
            g.emit(ind, f"if {x} is None: out.append(0)")
            g.emit(ind, "else:")
            g.emit(ind + 1, "out.append(1)")
            inner = members[0] if len(members) == 1 else typing.Union[tuple(members)]  # noqa: UP007
            _enc(g, ind + 1, x, inner)
            return
        for i, m in enumerate(members):
            check = f"{x}.__class__ is bool" if m is bool else (
                f"isinstance({x}, {g.ref(m, 'cls')}) and {x}.__class__ is not bool"
                if m is int else f"isinstance({x}, {g.ref(m, 'cls')})")
            g.emit(ind, f"{'if' if i == 0 else 'elif'} {check}:")
            g.emit(ind + 1, f"out.append({i})")
            _enc(g, ind + 1, x, m)
        g.emit(ind, f"else: raise TypeError('{describe(tp)} expected, got ' + type({x}).__name__)")
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        t, item = g.var("t"), g.var("i")
        g.emit(ind, f"{t} = {expr}")
        g.emit(ind, f"if {t}.__class__ is not tuple: raise TypeError('tuple expected')")
        g.emit(ind, f"_write_uvarint(out, len({t}))")
        g.emit(ind, f"for {item} in {t}:")
        _enc(g, ind + 1, item, args[0])
    elif origin is tuple:
        t = g.var("t")
        g.emit(ind, f"{t} = {expr}")
        g.emit(ind, f"if {t}.__class__ is not tuple or len({t}) != {len(args)}: "
                    f"raise TypeError('tuple of {len(args)} expected')")
        for i, a in enumerate(args):
            _enc(g, ind, f"{t}[{i}]", a)
    else:
        raise TypeError(f"the journal codec cannot encode fields of type {describe(tp)}")


def _dec(g: _Gen, ind: int, tp: Any) -> str:
    """Emit code decoding a value of type `tp` from ``d`` at ``p``; return its variable."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    v = g.var("v")
    if tp is float:
        g.emit(ind, f"{v} = _unpack_d(d, p)[0]; p += 8")
    elif tp is bool:
        g.emit(ind, f"{v} = d[p]; p += 1")
        g.emit(ind, f"if {v} > 1: raise Corrupt('bool byte %d' % {v})")
        g.emit(ind, f"{v} = {v} == 1")
    elif tp is int:
        g.emit(ind, f"{v} = d[p]; p += 1")
        g.emit(ind, f"if {v} & 0x80: {v}, p = _read_uvarint(d, p - 1)")
        g.emit(ind, f"{v} = ({v} >> 1) ^ -({v} & 1)")
    elif tp is str or tp is bytes:
        n = g.var("n")
        g.emit(ind, f"{n} = d[p]; p += 1")
        g.emit(ind, f"if {n} & 0x80: {n}, p = _read_uvarint(d, p - 1)")
        g.emit(ind, f"{v} = d[p:p + {n}]{'.decode()' if tp is str else ''}; p += {n}")
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        kind = type(next(iter(tp)).value) if len(tp) else str
        raw = _dec(g, ind, kind)
        g.emit(ind, f"{v} = {g.ref(tp, 'enum')}({raw})")
    elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
        parts = [f"{name}={_dec(g, ind, ftp)}" for name, ftp in fields_of(tp)]
        g.emit(ind, f"{v} = {g.ref(tp, 'cls')}({', '.join(parts)})")
    elif origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        k = g.var("k")
        g.emit(ind, f"{k} = d[p]; p += 1")
        if len(members) < len(args):
            inner = members[0] if len(members) == 1 else typing.Union[tuple(members)]  # noqa: UP007
            g.emit(ind, f"if {k} == 0: {v} = None")
            g.emit(ind, f"elif {k} == 1:")
            g.emit(ind + 1, f"{v} = {_dec(g, ind + 1, inner)}")
        else:
            for i, m in enumerate(members):
                g.emit(ind, f"{'if' if i == 0 else 'elif'} {k} == {i}:")
                g.emit(ind + 1, f"{v} = {_dec(g, ind + 1, m)}")
        g.emit(ind, f"else: raise Corrupt('union member %d' % {k})")
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        n, acc = g.var("n"), g.var("a")
        g.emit(ind, f"{n} = d[p]; p += 1")
        g.emit(ind, f"if {n} & 0x80: {n}, p = _read_uvarint(d, p - 1)")
        g.emit(ind, f"if {n} > len(d) - p: raise IndexError('item count %d' % {n})")
        g.emit(ind, f"{acc} = []")
        g.emit(ind, f"for _ in range({n}):")
        g.emit(ind + 1, f"{acc}.append({_dec(g, ind + 1, args[0])})")
        g.emit(ind, f"{v} = tuple({acc})")
    elif origin is tuple:
        parts = [_dec(g, ind, a) for a in args]
        g.emit(ind, f"{v} = ({', '.join(parts)},)")
    else:
        raise TypeError(f"the journal codec cannot decode fields of type {describe(tp)}")
    return v


_HELPERS: dict[str, Any] = {
    "_pack_d": _pack_d, "_unpack_d": _unpack_d, "_write_int": _write_int,
    "_write_uvarint": _write_uvarint, "_read_uvarint": _read_uvarint, "Corrupt": Corrupt,
}

Encoder = Callable[[Any, bytearray], None]
Decoder = Callable[[bytes, int], tuple[Event, int]]


def compile_event(cls: type[Event], tag: int) -> tuple[Encoder, Decoder]:
    """Generate and compile the encoder (writing `tag` first) and decoder of `cls`."""
    ns: dict[str, Any] = dict(_HELPERS)
    enc = _Gen(ns)
    enc.emit(0, "def encode(ev, out):")
    enc.emit(1, f"out.append({tag})")
    for name, tp in fields_of(cls):
        _enc(enc, 1, f"ev.{name}", tp)
    dec = _Gen(ns)
    dec.emit(0, "def decode(d, p):")
    parts = [f"{name}={_dec(dec, 1, tp)}" for name, tp in fields_of(cls)]
    dec.emit(1, f"return {dec.ref(cls, 'cls')}({', '.join(parts)}), p")
    source = "\n".join(enc.lines + dec.lines) + "\n"
    exec(compile(source, f"<codec {cls.__name__}>", "exec"), ns)
    return ns["encode"], ns["decode"]

