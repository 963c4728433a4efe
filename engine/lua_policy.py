"""A KumoMTA ``init.lua`` run as an egress policy, in an embedded Lua 5.4.

`load_lua` runs the file once in a fresh Lua state (lupa), with ``require
'kumo'`` answering the module of `engine.lua_kumo`, then calls its ``init``
handler and registers each ``kumo.on('get_...')`` function as the hook of
the same name on the `Policy` the caller made.  From there on the engine
cannot tell a Lua policy from a Python one: the hooks take the same
arguments, return the same values (a plain table is built with the matching
maker, as KumoMTA accepts), and the engine caches their answers by its own
rules, because it only ever sees the `Policy`.

The Lua state is a sandbox, the same in a simulation, the lab and live
delivery, since a journal replay must recompute the same decisions: no
process functions (``os.execute``, ``os.exit``, ``io.popen``), nothing that
writes or removes files (``io.open`` opens for reading only), no clock
(``os.time``, ``os.clock``, ``os.date``: the core reads none), no C
modules, no ``debug`` library and no way back into Python but the ``kumo``
functions.  ``math.random`` is seeded with 0, so a policy drawing from it is
repeatable.  ``require`` finds the policy's own modules beside the file
(``require 'helpers'`` -> ``helpers.lua`` or ``helpers/init.lua``).

Errors name the file and the line: a Lua error as Lua reports it
(``init.lua:12: attempt to index a nil value``), a wrong key in
``kumo.make_egress_path { ... }`` as the Python maker's `ConfigError` (with
its suggestion) prefixed by the calling line, an unknown ``kumo`` function
as ``init.lua:3: kumo.glob is not supported by egress``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import lua_kumo
from engine.errors import ConfigError, PolicyError
from engine.lua_kumo import MAPPED, RESULTS, SUPPORTED_EVENTS, KumoState, Memo
from engine.lua_shaping import LUA_MODULE, ShapingHelper

try:
    from lupa import lua54 as _lupa
except ImportError:  # a lupa built without Lua 5.4: its default Lua
    import lupa as _lupa  # type: ignore[no-redef]

__all__ = ["load_lua"]

#: Tables remembered per maker before the memory starts over (a policy that
#: builds a different table per domain must not grow it without bound).
_BUILT_CAPACITY = 4096

_LUA_ERROR = re.compile(r"^(?P<file>[^\n:]+):(?P<line>\d+): (?P<msg>.*)$", re.S)

# The sandbox and the module system, run once per state before the policy.
# `P` holds the Python callables; the chunk returns (kumo, handlers, loader).
_BOOT = r"""
local P, BASE, SUPPORTED, MAPPED, SHAPING_SRC, SHAPING = ...
local real_open, real_load, error, type, format = io.open, load, error, type, string.format

-- sandbox: nothing that runs processes, writes files, reads a clock or reaches Python
local function removed(name)
  return function()
    error(name .. " is not available in an egress policy (no processes, file writes or "
          .. "clock; see docs/KUMOMTA.md)", 2)
  end
end
for _, name in ipairs { 'execute', 'exit', 'remove', 'rename', 'tmpname', 'setlocale',
                        'time', 'clock', 'date', 'difftime' } do
  os[name] = removed('os.' .. name)
end
for _, name in ipairs { 'popen', 'tmpfile', 'output', 'write' } do
  io[name] = removed('io.' .. name)
end
io.stdout, io.stderr = nil, nil
io.open = function(name, mode)
  mode = mode or 'r'
  if type(mode) ~= 'string' or not mode:match('^rb?$') then
    error(format("io.open(%q, %q): files may only be opened for reading in an egress policy",
                 tostring(name), tostring(mode)), 2)
  end
  return real_open(name, mode)
end
-- text chunks only: crafted bytecode can corrupt the VM
local real_loadfile = loadfile
load = function(chunk, name, mode, ...) return real_load(chunk, name, 't', ...) end
loadfile = function(filename, mode, ...) return real_loadfile(filename, 't', ...) end
dofile = function(filename) return assert(real_loadfile(filename, 't'))() end
debug, python, collectgarbage = nil, nil, nil
package.loadlib, package.cpath = nil, ''
math.randomseed(0)

local function refuse(prefix)
  return function(_, name)
    error(format("kumo%s.%s is not supported by egress (see docs/KUMOMTA.md)",
                 prefix, tostring(name)), 2)
  end
end

local function readonly(t, prefix)
  return setmetatable(t, { __index = refuse(prefix) })
end

-- the policy's own modules, beside the file; no binary chunks
local function search(name)
  local rel = name:gsub('%.', '/')
  for _, candidate in ipairs { rel .. '.lua', rel .. '/init.lua' } do
    local f = real_open(BASE .. '/' .. candidate, 'r')
    if f then
      local src = f:read('a')
      f:close()
      local chunk, err = real_load(src, '@' .. candidate, 't', _ENV)
      if not chunk then error(err, 0) end
      P.read(candidate)
      return chunk, BASE .. '/' .. candidate
    end
  end
  if name:match('^policy%-extras%.') then
    error(format("require '%s': KumoMTA's policy-extras helpers are not provided by egress "
                 .. "(see docs/KUMOMTA.md)", name), 0)
  end
  return format("\n\tno file '%s/%s.lua'", BASE, rel)
end
package.searchers = { package.searchers[1], search }
package.preload['policy-extras.shaping'] = function()
  local chunk = assert(real_load(SHAPING_SRC, '=policy-extras.shaping', 't', _ENV))
  return chunk(SHAPING)
end

local handlers = {}
local kumo = {}
function kumo.on(name, fn)
  if type(name) ~= 'string' or not SUPPORTED[name] then
    error(format("kumo.on: event %s is not supported by egress; supported: %s",
                 format('%q', tostring(name)), P.supported_list), 2)
  end
  if type(fn) ~= 'function' then
    error(format("kumo.on(%q, ...): expected a function, got a %s", name, type(fn)), 2)
  end
  if handlers[name] then
    error(format("kumo.on(%q, ...): the event already has a handler", name), 2)
  end
  handlers[name] = fn
end
kumo.make_egress_path = P.make_egress_path
kumo.make_queue_config = P.make_queue_config
kumo.make_egress_source = P.make_egress_source
kumo.make_egress_pool = P.make_egress_pool
kumo.memoize = P.memoize
for _, level in ipairs { 'debug', 'info', 'warn', 'error' } do
  kumo['log_' .. level] = function(...) P.log(level, ...) end
end
print = function(...) P.log('print', ...) end

local serde = {
  json_parse = P.json_parse, json_load = P.json_load,
  json_encode = P.json_encode, json_encode_pretty = P.json_encode_pretty,
  toml_parse = P.toml_parse, toml_load = P.toml_load,
}
for name, fn in pairs(serde) do kumo[name] = fn end   -- the older kumo.json_load spellings
kumo.serde = readonly(serde, '.serde')
kumo.dns = {}
for name in pairs(MAPPED) do
  local mod, fn = name:match('^(%w+)%.(.+)$')
  local target = mod and kumo[mod] or kumo
  target[fn or name] = function(params) P.record(name, params) end
end
kumo.dns = readonly(kumo.dns, '.dns')
readonly(kumo, '')
package.preload['kumo'] = function() return kumo end

return handlers, function(src, name) local f, e = real_load(src, name, 't', _ENV); return f, e end
"""


def _new_runtime() -> Any:
    def attribute_filter(obj: Any, name: Any, is_setting: bool) -> Any:
        if is_setting or not isinstance(name, str) or name.startswith("_"):
            raise AttributeError(f"{name!r} of a {type(obj).__name__} cannot be reached "
                                 "from an egress policy")
        return name

    return _lupa.LuaRuntime(
        unpack_returned_tuples=True, register_eval=False, register_builtins=False,
        attribute_filter=attribute_filter,
    )


class _Bridge:
    """The Python callables one Lua state's ``kumo`` table holds.  Each
    converts its Lua arguments, and prefixes a `ConfigError` with the Lua
    file and line that made the call."""

    def __init__(self, lua: Any, state: KumoState) -> None:
        self._lua = lua
        self._state = state
        self._lua_type = _lupa.lua_type
        self._table = type(lua.table())
        self._encode = lua.execute(lua_kumo.ENCODER)
        self._getinfo = lua.globals().debug.getinfo  # kept before the sandbox drops debug
        self.supported_list = ", ".join(SUPPORTED_EVENTS)
        self.make_egress_path = self._table_maker("make_egress_path", lua_kumo.egress_path)
        self.make_queue_config = self._table_maker("make_queue_config", lua_kumo.queue_config)
        self.make_egress_source = self._table_maker("make_egress_source",
                                                   lua_kumo.egress_source)
        self.make_egress_pool = self._table_maker("make_egress_pool", lua_kumo.egress_pool)
        self.json_parse = self._maker(lambda t: self.to_lua(lua_kumo.json_parse(t)))
        self.toml_parse = self._maker(lambda t: self.to_lua(lua_kumo.toml_parse(t)))
        self.json_load = self._maker(
            lambda f: self.to_lua(lua_kumo.json_parse(state.load_text("json_load", f))))
        self.toml_load = self._maker(
            lambda f: self.to_lua(lua_kumo.toml_parse(state.load_text("toml_load", f))))
        self.json_encode = self._maker(lua_kumo.json_encode)
        self.json_encode_pretty = self._maker(lambda v: lua_kumo.json_encode(v, pretty=True))
        self.memoize = self._memoize
        self.record = self._record
        self.log = self._log
        self.read = state.read

    def where(self) -> str:
        """``file:line`` of the innermost Lua code on the stack, or ``"?"``."""
        for level in range(1, 30):
            info = self._getinfo(level, "Sl")
            if info is None:
                break
            if str(info.source).startswith("@"):
                return f"{info.short_src}:{info.currentline}"
        return "?"

    def py(self, value: Any) -> Any:
        return lua_kumo.to_python(value, self._table, self._encode)

    def _table_maker(self, what: str, fn: Callable[[Any], Any]) -> Callable[..., Any]:
        table, encode = self._table, self._encode
        # Built values by the table's flattened contents and their types (so
        # 1, 1.0 and true stay apart).  The makers are pure and their values
        # frozen, so a hook that builds the same table on every call (the
        # usual `return kumo.make_egress_source { ... }`) gets the value it
        # got before without converting and validating it again: that
        # conversion is most of what a Lua hook costs over a Python one.
        built: dict[tuple[Any, ...], Any] = {}

        def call(value: Any = None, *_: Any) -> Any:
            # The makers are Python callables in the kumo table (not Lua
            # wrappers) so that Lua's stack still holds the calling line
            # when the call is a tail call (`return kumo.make_egress_path {`).
            if type(value) is not table:
                try:
                    return lua_kumo.call_maker(fn, value, table, encode, what)
                except ConfigError as exc:
                    raise ConfigError(f"{self.where()}: {exc}") from None
            tokens = encode(value)
            if type(tokens) is not tuple:
                tokens = (tokens,)
            key: tuple[Any, ...] | None = (tokens, tuple(map(type, tokens)))
            try:
                found = built.get(key)  # type: ignore[arg-type]
            except TypeError:  # a Python object inside the table: not hashable
                found = key = None
            if found is not None:
                return found
            try:
                result = lua_kumo.call_maker_keys(fn, lua_kumo.from_tokens(tokens), what)
            except ConfigError as exc:
                raise ConfigError(f"{self.where()}: {exc}") from None
            if key is not None:
                if len(built) >= _BUILT_CAPACITY:
                    built.clear()
                built[key] = result
            return result

        return call

    def to_lua(self, value: Any) -> Any:
        if isinstance(value, dict | list):
            return self._lua.table_from(value, recursive=True)
        return value

    def defined_at(self, fn: Any) -> str:
        """``file:line`` where the Lua function `fn` was defined."""
        info = self._getinfo(fn, "S")
        return f"{info.short_src}:{info.linedefined}"

    def _maker(self, fn: Callable[[Any], Any]) -> Callable[..., Any]:
        def call(value: Any = None, *_: Any) -> Any:
            try:
                return fn(self.py(value))
            except ConfigError as exc:
                raise ConfigError(f"{self.where()}: {exc}") from None

        return call

    def _memoize(self, fn: Any, params: Any = None) -> Memo:
        if self._lua_type(fn) != "function":
            raise ConfigError(f"{self.where()}: memoize: expected a function first")
        try:
            return Memo(fn, self.py(params) if params is not None else {})
        except ConfigError as exc:
            raise ConfigError(f"{self.where()}: {exc}") from None

    def _record(self, name: str, params: Any = None) -> None:
        self._state.record(name, self.py(params))

    def _log(self, level: str, *args: Any) -> None:
        self._state.log.append((level, " ".join(str(self.py(a)) for a in args)))


class _LuaHook:
    """A Lua handler as a Python hook: same arguments, a checked result."""

    def __init__(self, name: str, fn: Any, bridge: _Bridge, where: str) -> None:
        self._fn = fn
        self._bridge = bridge
        self._where = where
        self._expected, self._build = RESULTS[name]
        #: What `Policy` shows when it names the hook in an error.
        self.__qualname__ = f"Lua function at {where}"

    def __call__(self, *args: Any) -> Any:
        try:
            result = self._fn(*args)
        except _lupa.LuaError as exc:
            raise PolicyError(_lua_message(exc)) from None
        if isinstance(result, self._expected):
            return result
        if _lupa.lua_type(result) == "table":
            try:
                return self._build(self._bridge.py(result))
            except ConfigError as exc:
                raise ConfigError(f"{self._where} (the table returned): {exc}") from None
        return result  # the Policy reports the wrong type


class _NoOwner:
    """Where the shaping helper's files go when the caller keeps no policy."""

    shaping: Any = None


def _lua_message(exc: BaseException) -> str:
    """Lua's message without the stack traceback lupa appends."""
    text = str(exc).split("\nstack traceback:", 1)[0]
    return " ".join(text.split()) or type(exc).__name__


def load_lua(
    filename: str, register: Callable[[str], Callable[[Any], Any]], owner: Any = None,
) -> tuple[dict[str, list[Any]], tuple[str, ...]]:
    """Run the Lua policy `filename` and register its hooks with `register`
    (a `Policy.on`).  Returns what its mapped ``kumo`` calls asked for, and
    the files beside it that it read (modules, data; relative paths).
    `owner` (the `Policy`) receives the shaping files KumoMTA's shaping
    helper loads, as its ``shaping``."""
    path = Path(filename)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy file {filename!r} cannot be read: {exc}") from None
    base = path.parent.resolve()
    state = KumoState(base)
    lua = _new_runtime()
    bridge = _Bridge(lua, state)
    supported = lua.table_from({name: True for name in SUPPORTED_EVENTS})
    mapped = lua.table_from({name: True for name in MAPPED})
    loader = lua.eval("function(src, name) local f, e = load(src, name, 't'); return f, e end")
    boot_chunk, err = loader(_BOOT, "=egress-kumo")
    if boot_chunk is None:  # pragma: no cover - the boot chunk is ours
        raise PolicyError(f"internal Lua bootstrap failed to compile: {err}")
    helper = ShapingHelper(state, owner if owner is not None else _NoOwner(), bridge.py,
                           bridge.to_lua, bridge.where)
    handlers, load_chunk = boot_chunk(bridge, str(base), supported, mapped, LUA_MODULE, helper)
    chunk, err = load_chunk(source, "@" + path.name)
    where = f"policy file {filename!r}"
    if chunk is None:
        raise PolicyError(f"{where}: {err}")
    try:
        chunk()
        init = handlers["init"]
        if init is not None:
            init()
    except _lupa.LuaError as exc:
        raise PolicyError(f"{where}: {_lua_message(exc)}") from None
    except ConfigError as exc:
        raise PolicyError(f"{where}: {exc}") from exc
    except Exception as exc:  # a Python error reached from Lua (a refused attribute)
        raise PolicyError(f"{where}: {type(exc).__name__}: {exc}") from exc
    for name in RESULTS:
        fn = handlers[name]
        if fn is not None:
            register(name)(_LuaHook(name, fn, bridge, bridge.defined_at(fn)))
    return state.settings, tuple(state.files)
