"""The ``kumo`` module a Lua policy sees: KumoMTA's names, egress's values.

A KumoMTA policy begins ``local kumo = require 'kumo'`` and calls
``kumo.on``, ``kumo.make_egress_path { ... }`` and a few helpers.  This
module holds the Python side of every one of those functions, each a plain
function of converted Python values, so the Lua state (`engine.lua_policy`)
only wires names to them.  Three kinds of names exist:

- **built**: the makers (`make_egress_path` and friends: they call the Python
  makers, so a wrong key is the very `ConfigError` Python users get) and the
  helpers policies call around them (``kumo.memoize``, the ``kumo.serde``
  JSON/TOML parsers and loaders and their older ``kumo.json_*`` spellings,
  ``kumo.log_*``);
- **mapped**: calls that configure something egress configures another way
  (a listener, the spool, logs, Redis).  They are accepted and recorded in
  `KumoState.settings`; docs/KUMOMTA.md says what each means in egress;
- **refused**: any other name, which the Lua side reports as an error naming
  it with the file and line of the call.

Lua tables arrive as lupa ``LuaTable`` objects; `to_python` turns them into
lists (a sequence 1..n) or dicts (keys sorted, so the order is the same on
every run whatever Lua's hash seed).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import EgressPathConfig, make_egress_path
from engine.errors import ConfigError
from engine.queue_config import (
    EgressPool,
    EgressSource,
    QueueConfig,
    make_egress_pool,
    make_egress_source,
    make_queue_config,
)

__all__ = [
    "MAPPED", "SUPPORTED_EVENTS", "KumoState", "call_maker", "listen_address", "to_python",
]

#: Events a Lua policy may register with ``kumo.on``: ``init`` runs once after
#: the file is loaded; the four others are the Python policy's hooks.
SUPPORTED_EVENTS = (
    "init",
    "get_egress_path_config",
    "get_queue_config",
    "get_egress_source",
    "get_egress_pool",
)

#: Calls accepted and recorded, with what egress does instead (docs/KUMOMTA.md).
MAPPED: dict[str, str] = {
    "start_esmtp_listener": "egress deliver --listen HOST:PORT",
    "start_http_listener": "egress deliver --metrics-port N (Prometheus /metrics)",
    "define_spool": "egress deliver --spool DIR (one SQLite journal holds data and meta)",
    "configure_local_logs": "egress deliver --log-dir DIR (JSON-lines records)",
    "configure_redis_throttles": "throttles are kept by the engine itself (one node)",
    "dns.configure_resolver": "egress deliver --resolver HOST:PORT",
    "dns.configure_unbound_resolver": "egress deliver --resolver HOST:PORT",
    "configure_bounce_classifier": "Policy.configure_bounce_classifier: records carry the class",
}

# Keys whose Lua value `{}` means an empty list, not an empty mapping.
_LIST_KEYS = frozenset({"prohibited_hosts", "skip_hosts", "rustls_cipher_suites", "entries"})
_LUA_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|/\*.*?\*/|//[^\n]*|#[^\n]*', re.S)


#: Lua source of the encoder `to_python` decodes: a table (nested tables
#: inline) as one flat tuple, ``n, k1, kind1, v1, ...`` where kind 1 means the
#: value is the nested table that follows.  One crossing into Lua per table
#: tree instead of one per key through lupa's iteration, which was most of a
#: hook's cost.
ENCODER = """
local next, unpack, type, error = next, table.unpack, type, error
local function encode(t, out, n, depth)
  if depth > 64 then error('a table nested more than 64 deep (a cycle?)', 0) end
  local count_at, count = n + 1, 0
  n = n + 1
  for k, v in next, t do
    count = count + 1
    if type(v) == 'table' then
      out[n + 1], out[n + 2] = k, 1
      n = encode(v, out, n + 2, depth + 1)
    else
      out[n + 1], out[n + 2], out[n + 3] = k, 0, v
      n = n + 3
    end
  end
  out[count_at] = count
  return n
end
return function(t)
  local out = {}
  return unpack(out, 1, encode(t, out, 0, 0))
end
"""


def to_python(value: Any, table_type: type, encode: Callable[[Any], Any]) -> Any:
    """A Lua value as plain Python: a table (of lupa's `table_type`) becomes a
    list (keys 1..n) or a dict (keys sorted, so the order is the same on every
    run whatever Lua's hash seed), recursively.  `encode` is `ENCODER`'s
    function in the value's Lua state."""
    if type(value) is not table_type:
        return value
    tokens = encode(value)
    return _decode(tokens if type(tokens) is tuple else (tokens,), 0)[0]


def _decode(tokens: tuple[Any, ...], i: int) -> tuple[Any, int]:
    count = tokens[i]
    i += 1
    pairs: list[tuple[Any, Any]] = []
    append = pairs.append
    for _ in range(count):
        if tokens[i + 1]:
            key = tokens[i]
            value, i = _decode(tokens, i + 2)
            append((key, value))
        else:
            append((tokens[i], tokens[i + 2]))
            i += 3
    if count > 1:
        try:
            pairs.sort()  # keys are distinct, so values are never compared
        except TypeError:  # mixed key types: a stable order all the same
            pairs.sort(key=lambda kv: (type(kv[0]).__name__, str(kv[0])))
    if count and type(pairs[0][0]) is int and pairs[0][0] == 1 and pairs[-1][0] == count and all(
        type(k) is int for k, _ in pairs
    ):  # keys 1..n, distinct and sorted: a sequence
        return [v for _, v in pairs], i
    return dict(pairs), i


def from_tokens(tokens: Any) -> Any:
    """What `ENCODER`'s function returned for a table, as plain Python."""
    return _decode(tokens if type(tokens) is tuple else (tokens,), 0)[0]


def call_maker(
    fn: Callable[[dict[str, Any]], Any], value: Any, table_type: type,
    encode: Callable[[Any], Any], what: str,
) -> Any:
    """``kumo.make_*(value)``: the table's keys to the maker `fn`.  On a
    `ConfigError` the keys are tried again in sorted order, so the first
    wrong key named is the same on every run."""
    return call_maker_keys(fn, to_python(value, table_type, encode), what)


def call_maker_keys(fn: Callable[[dict[str, Any]], Any], keys: Any, what: str) -> Any:
    """`call_maker` once the table is plain Python."""
    if not isinstance(keys, dict) or not all(type(k) is str for k in keys):
        if keys == []:
            keys = {}
        else:
            raise ConfigError(f"{what}: expected a table of key = value, got {keys!r}")
    try:
        return fn(keys)
    except ConfigError:
        if len(keys) < 2:
            raise
        return fn(dict(sorted(keys.items())))


def _empty_lists(keys: dict[str, Any]) -> dict[str, Any]:
    return {k: ([] if v == {} and k in _LIST_KEYS else v) for k, v in keys.items()}


def _keysource(value: Any) -> Any:
    """KumoMTA's keysource spellings: a path string, ``{ key_data = ... }``,
    a vault table; ``{ key = '/path' }`` (the DKIM signer's field) is a path."""
    if isinstance(value, dict) and set(value) == {"key"} and isinstance(value["key"], str):
        return value["key"]
    return value


def _table(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{what}: expected a table of key = value, got {value!r}")
    return value


# -- the makers --------------------------------------------------------------


def egress_path(keys: Any) -> EgressPathConfig:
    """``kumo.make_egress_path { ... }``."""
    keys = _empty_lists(_table(keys, "make_egress_path"))
    if "smtp_auth_plain_password" in keys:
        keys["smtp_auth_plain_password"] = _keysource(keys["smtp_auth_plain_password"])
    return make_egress_path(**keys)


def queue_config(keys: Any) -> QueueConfig:
    """``kumo.make_queue_config { ... }``."""
    return make_queue_config(**_table(keys, "make_queue_config"))


def egress_source(keys: Any) -> EgressSource:
    """``kumo.make_egress_source { name = ..., source_address = ..., ... }``."""
    keys = _table(keys, "make_egress_source")
    if "name" not in keys:
        raise ConfigError("make_egress_source: the table has no 'name'; every source needs one")
    return make_egress_source(**keys)


def egress_pool(keys: Any) -> EgressPool:
    """``kumo.make_egress_pool { name = ..., entries = { { name = ..., weight = N } } }``."""
    keys = _table(keys, "make_egress_pool")
    if len(keys) > 2 or not set(keys) <= {"name", "entries"}:
        unknown = sorted(set(keys) - {"name", "entries"})
        raise ConfigError(
            f"make_egress_pool: unknown key {unknown[0]!r}; valid keys are: name, entries"
        )
    if "name" not in keys:
        raise ConfigError("make_egress_pool: the table has no 'name'; every pool needs one")
    entries = keys.get("entries")
    return make_egress_pool(keys["name"], entries=[] if entries == {} else entries)


#: What a hook of each name must return, and how a plain table is built into it.
RESULTS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "get_egress_path_config": (EgressPathConfig, egress_path),
    "get_queue_config": (QueueConfig, queue_config),
    "get_egress_source": (EgressSource, egress_source),
    "get_egress_pool": (EgressPool, egress_pool),
}


# -- serde: KumoMTA's JSON (comments allowed) and TOML ------------------------


def json_parse(text: str) -> Any:
    """``kumo.serde.json_parse``: JSON that may hold /* */, // and # comments."""
    if not isinstance(text, str):
        raise ConfigError(f"json_parse: expected a string, got {type(text).__name__}")
    stripped = _LUA_COMMENT.sub(lambda m: m.group(0) if m.group(0)[0] == '"' else " ", text)
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"json_parse: {exc}") from None


def toml_parse(text: str) -> Any:
    """``kumo.serde.toml_parse``."""
    if not isinstance(text, str):
        raise ConfigError(f"toml_parse: expected a string, got {type(text).__name__}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"toml_parse: {exc}") from None


def json_encode(value: Any, *, pretty: bool = False) -> str:
    """``kumo.serde.json_encode`` / ``json_encode_pretty``."""
    return json.dumps(value, indent=2 if pretty else None, sort_keys=pretty)


class KumoState:
    """What one Lua policy's ``kumo`` calls left behind: the registered event
    handlers, the mapped calls' settings, the log lines, the memo caches.
    `base` is the policy file's directory, where relative paths are read."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.handlers: dict[str, Any] = {}
        self.settings: dict[str, list[Any]] = {}
        self.log: list[tuple[str, str]] = []
        #: Files beside the policy it read (modules, data), relative to `base`.
        self.files: list[str] = []

    def load_text(self, name: str, filename: Any) -> str:
        """Read a policy data file (``kumo.serde.json_load`` and friends)."""
        if not isinstance(filename, str):
            raise ConfigError(f"{name}: expected a file name, got {filename!r}")
        path = Path(filename)
        if not path.is_absolute():
            path = self.base / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
        if not Path(filename).is_absolute():
            self.read(filename)
        return text

    def read(self, relative: str) -> None:
        """Note a file beside the policy (at or below its directory) that it read."""
        inside = (self.base / relative).resolve().is_relative_to(self.base)
        if inside and relative not in self.files:
            self.files.append(relative)

    def record(self, name: str, params: Any) -> None:
        """A mapped call: keep its parameters for the commands and `egress check`.
        A bounce classifier's rules files are checked and read now (an error
        names the call's line; a file beside the policy is noted in `files`),
        and built by `Policy.from_file`."""
        if name == "configure_bounce_classifier":
            from engine.bounce_classify import SHIPPED_IANA, classifier_params

            if name in self.settings:
                raise ConfigError(f"{name}: the classifier is already configured")
            if not isinstance(params, dict):
                raise ConfigError(f"{name}: expected a table {{ files = {{...}} }}, got {params!r}")
            for file in classifier_params(params):
                if not (file.endswith(SHIPPED_IANA) and not (self.base / file).exists()):
                    self.load_text(name, file)
        self.settings.setdefault(name, []).append(params)


class Memo:
    """``kumo.memoize(fn, { name, ttl, capacity })``: results cached per
    argument tuple, least recently used evicted beyond `capacity`.

    The ttl is checked and kept but not applied: the core reads no clock, and
    within one run a policy's answers must not change under the engine."""

    def __init__(self, fn: Any, params: dict[str, Any]) -> None:
        from engine.durations import parse_duration

        missing = [k for k in ("name", "ttl", "capacity") if k not in params]
        if missing:
            raise ConfigError(f"memoize: the parameters table has no {missing[0]!r}; "
                              "expected { name = ..., ttl = ..., capacity = N }")
        extra = sorted(set(params) - {"name", "ttl", "capacity", "invalidate_with_epoch",
                                      "retry_on_error"})
        if extra:
            raise ConfigError(f"memoize: unknown parameter {extra[0]!r}")
        self.ttl = parse_duration(params["ttl"], key="memoize ttl")
        capacity = params["capacity"]
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"memoize capacity: {capacity!r} is not an integer >= 1")
        self.capacity = capacity
        self.fn = fn
        self.cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def __call__(self, *args: Any) -> Any:
        try:
            value = self.cache[args]
        except KeyError:
            value = self.fn(*args)
            self.cache[args] = value
            if len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
            return value
        except TypeError:  # an unhashable argument (a table): not cached
            return self.fn(*args)
        self.cache.move_to_end(args)
        return value


def listen_address(settings: dict[str, list[Any]]) -> str | None:
    """The first ``kumo.start_esmtp_listener { listen = ... }`` address, if any:
    what ``egress deliver`` listens on when ``--listen`` is not given."""
    for params in settings.get("start_esmtp_listener", []):
        if isinstance(params, dict) and isinstance(params.get("listen"), str):
            return str(params["listen"])
    return None
