"""Engine snapshots: the whole state as bytes, so replay can start from a point.

Format: ``b"EGSNAP"``, one version byte, then a pickle (protocol 5) of the
engine's attributes *without the policy*: the policy is code (hooks,
closures) and is supplied again to `Engine.restore`, exactly as it is to a
fresh engine.  Configs the policy returned (frozen dataclasses) are kept by
value, so a restored engine behaves as the original did, including the age
of its cached path configs; secrets stay `KeySource` references (resolved
lazily by the driver), never their values: a KeySource holding its secret
inline (``key_data``, a ``vault_token``) is written `sealed`, its description
without the secret, and `load` takes the secret back from the policy, asking
``egress_path_config`` again for each path whose config holds a sealed one
(a hook that raises or answers with another keysource leaves it sealed: AUTH
then fails with a record saying so, never with a wrong password).

Trade-off, stated plainly: pickle makes the snapshot complete with no second
description of the state to keep in step (every new field is included
automatically), at the price of being tied to these classes (the version
byte is bumped when they change incompatibly) and of being unsafe to load
from an untrusted source: load only snapshots you wrote.  The journal (the
codec's compact, documented format) remains the durable record; a snapshot
is a cache of its fold.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from types import MappingProxyType
from typing import Any, TypeVar

from engine.errors import JournalError, PolicyError
from engine.keysource import KeySource

MAGIC = b"EGSNAP"
VERSION = 4
_POLICY = "egress-policy"
# the policy is code; hostname and nodeid are what the driver gives the engine at
# every start (engine.live.driver, engine.live.service), not state a replay rebuilds
_SKIP = ("policy", "out", "cancelled", "dropped", "hostname", "nodeid")

E = TypeVar("E")


def _proxy(d: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(d)


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, policy: Any) -> None:
        super().__init__(file, protocol=5)
        self._policy = policy

    def persistent_id(self, obj: Any) -> str | None:  # the policy, wherever referenced
        return _POLICY if obj is self._policy and obj is not None else None

    def reducer_override(self, obj: Any) -> Any:
        # configs hold read-only mappings (additional_connection_limits, ...)
        if type(obj) is MappingProxyType:
            return _proxy, (dict(obj),)
        if type(obj) is KeySource and obj.has_secret:
            return obj.sealed().__reduce__()
        cls = type(obj)
        if "__mypyc_attrs__" in cls.__dict__ and dataclasses.is_dataclass(cls):
            return by_fields(obj)
        return NotImplemented


def by_fields(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """How to pickle the frozen dataclass value `obj`: by its field values,
    rebuilt by `_value`.  What a compiled (mypyc) build needs: pickle's own
    way restores each field with setattr, which a frozen dataclass refuses.
    The simulator's frozen values return it from their ``__reduce__``."""
    cls = type(obj)
    return _value, (cls, tuple(getattr(obj, f.name) for f in dataclasses.fields(cls)))


def _value(cls: type[E], values: tuple[Any, ...]) -> E:
    """A frozen dataclass of the compiled build from its field values in
    declaration order, each stored as the dataclass's own ``__init__`` does.
    A class that writes its ``__init__`` out (``init=False``, see
    `engine.effects.SetTimer`) is called with them by keyword instead: compiled,
    its ``__new__`` runs that ``__init__``, which wants every field."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is not None and not params.init:
        every = dataclasses.fields(cls)  # type: ignore[arg-type]
        return cls(**{f.name: value for f, value in zip(every, values, strict=True)})
    obj = cls.__new__(cls)
    for f, value in zip(dataclasses.fields(cls), values, strict=True):  # type: ignore[arg-type]
        object.__setattr__(obj, f.name, value)
    return obj


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, policy: Any) -> None:
        super().__init__(file)
        self._policy = policy

    def persistent_load(self, pid: Any) -> Any:
        if pid != _POLICY:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return self._policy


def _attributes(eng: Any) -> dict[str, Any]:
    """The engine's attributes: its ``__dict__`` in pure Python; an engine of
    the optional compiled build (mypyc) keeps them in native slots, named by
    each compiled class's ``__mypyc_attrs__``, and has no ``__dict__``."""
    found = dict(getattr(eng, "__dict__", {}))
    for klass in type(eng).__mro__:
        for name in getattr(klass, "__mypyc_attrs__", ()):
            if name != "__dict__" and name not in found and hasattr(eng, name):
                found[name] = getattr(eng, name)
    return found


def dump(eng: Any) -> bytes:
    """Snapshot bytes of `eng` (policy left out)."""
    state = {k: v for k, v in _attributes(eng).items() if k not in _SKIP}
    buf = io.BytesIO()
    buf.write(MAGIC + bytes([VERSION]))
    _Pickler(buf, eng.policy).dump(state)
    return buf.getvalue()


def load(cls: type[E], data: bytes, policy: Any) -> E:
    """An engine of class `cls` from `dump` bytes, with `policy` attached."""
    if not isinstance(data, bytes | bytearray) or data[: len(MAGIC)] != MAGIC:
        raise JournalError("not an egress engine snapshot (missing EGSNAP header)")
    version = data[len(MAGIC)] if len(data) > len(MAGIC) else None
    if version != VERSION:
        raise JournalError(f"engine snapshot version {version} is not supported; expected "
                           f"{VERSION}")
    try:
        state = _Unpickler(io.BytesIO(bytes(data[len(MAGIC) + 1:])), policy).load()
    except Exception as exc:  # a truncated or corrupted snapshot
        raise JournalError(f"engine snapshot could not be read: {exc}") from None
    # made by its constructor (a compiled class cannot be made without it),
    # then every attribute the snapshot holds laid over the fresh ones
    eng = cls(policy)  # type: ignore[call-arg]
    for name, value in state.items():  # setattr: a compiled engine has no __dict__
        setattr(eng, name, value)
    eng.policy = policy  # type: ignore[attr-defined]
    eng.out = []  # type: ignore[attr-defined]
    eng.cancelled = {}  # type: ignore[attr-defined]
    eng.dropped = False  # type: ignore[attr-defined]
    _unseal(eng, policy)
    return eng


def _unseal(eng: Any, policy: Any) -> None:
    """Give the sealed KeySources of the restored configs their secrets back
    from the policy (in place, so every reference to one gets it)."""
    if policy is None:
        return
    held: list[tuple[str, str, str, KeySource]] = []
    for rq in eng.paths.values():
        ks = rq.cfg.smtp_auth_plain_password
        if ks is not None and ks.withheld:
            held.append((rq.domain, rq.source_name, rq.site, ks))
    for (source, site), (domain, cfg, _) in eng.path_cfgs.items():
        ks = cfg.smtp_auth_plain_password
        if ks is not None and ks.withheld:
            held.append((domain, source, site, ks))
    for domain, source, site, ks in held:
        if not ks.withheld:
            continue  # shared with a path unsealed already
        try:
            fresh = policy.egress_path_config(domain, source, site).smtp_auth_plain_password
        except PolicyError:
            continue
        if fresh is not None:
            ks.unseal(fresh)
