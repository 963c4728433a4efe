"""KumoMTA's ``policy-extras.shaping`` helper, egress's own implementation.

A KumoMTA policy wires its shaping files in with::

    local shaping = require 'policy-extras.shaping'
    local shaper = shaping:setup_with_automation {
      publish = { 'http://127.0.0.1:8008' }, subscribe = { 'http://127.0.0.1:8008' },
      extra_files = { 'shaping.toml' },
    }
    kumo.on('get_egress_path_config', shaper.get_egress_path_config)

or, without automation, ``kumo.on('get_egress_path_config',
shaping:setup { 'shaping.toml' })``.  The same lines work in egress: the files
load with `engine.shaping_load` into the policy's ``shaping`` (which an engine
made with the policy applies), and ``get_egress_path_config`` answers each
path with the merged values, as KumoMTA's helper does.

What differs, because egress runs the automation inside its engine rather
than in a tsa-daemon fed by published log records:

* ``publish`` and ``subscribe`` name the daemon; egress never contacts them.
  Either one present turns the files' automation rules on (the engine sees
  every response itself); ``setup`` (both empty) loads the rules inert, as
  KumoMTA's ``setup`` configures no automation.
* ``setup_publish`` does nothing; the helper registers no ``get_queue_config``
  or ``should_enqueue_log_record`` handler (there are no TSA queues to route).
* The default file ``/opt/kumomta/share/policy-extras/shaping.toml`` is the
  copy of KumoMTA's that egress ships (engine/data/kumomta_shaping.toml);
  ``no_default_files = true`` leaves it out, as in KumoMTA.
* The hook sees the path by its names only: values that need the MX hosts
  (a provider matched by ``MXSuffix``, a domain rolled up by its site) are
  added by the engine once it knows them, where the hook's answer still holds
  what the helper gave it (`engine.shaping.Shaping.overlay`).
* egress has no ``refresh_strategy = 'Epoch'``, which KumoMTA's helper sets:
  the engine re-derives shaped paths itself when a rule fires or lapses.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import make_egress_path
from engine.errors import ConfigError
from engine.lua_kumo import KumoState, json_parse
from engine.shaping_load import load_shaping

__all__ = ["DEFAULT_FILE", "LUA_MODULE", "OPTIONS", "ShapingHelper"]

DEFAULT_FILE = "/opt/kumomta/share/policy-extras/shaping.toml"
_BUNDLED = Path(__file__).resolve().parent / "data" / "kumomta_shaping.toml"

#: ``setup_with_automation``'s options as KumoMTA's helper reads them; those
#: past the first four tune the tsa-daemon link and are accepted unused.
OPTIONS = (
    "extra_files", "no_default_files", "publish", "subscribe",
    "cache_ttl", "pre_filter", "skip_log_record_types", "additional_skip_log_record_types",
    "tsa_queue_config", "back_pressure", "load_validation_options", "validation_options",
    "retry_shaping_data_fetch_on_populate_timeout", "shaping_data_populate_timeout",
    "allow_stale_shaping_data",
)

#: The module ``require 'policy-extras.shaping'`` returns; `P` is a `ShapingHelper`.
LUA_MODULE = r"""
local P = ...
local mod = {}

-- errors at level 3: the policy line that called setup or setup_with_automation
local function configure(options)
  if mod.CONFIGURED then
    error('shaping module has already been configured', 3)
  end
  if type(options) ~= 'table' then
    error('shaping:setup_with_automation: expected a table of options, got a ' .. type(options), 3)
  end
  P.setup(options)
  local function get_egress_path_config(domain, egress_source, site_name, skip_make)
    return P.path_config(domain, egress_source, site_name, skip_make)
  end
  mod.CONFIGURED = {
    get_egress_path_config = get_egress_path_config,
    setup_publish = function() end,
  }
  return mod.CONFIGURED
end

function mod:setup(extra_files)
  local configured = configure({ extra_files = extra_files, publish = {}, subscribe = {} })
  return configured.get_egress_path_config
end

function mod:setup_with_automation(options)
  local configured = configure(options)
  return configured
end

return mod
"""


class ShapingHelper:
    """The Python half of the helper for one Lua state.

    `owner` is the `Policy` being loaded: the files loaded become its
    ``shaping`` (callers may merge more files over it later, and the hook
    reads whatever it holds then).  `py` converts a Lua value to Python,
    `to_lua` the other way, `where` names the calling Lua line."""

    def __init__(self, state: KumoState, owner: Any, py: Callable[[Any], Any],
                 to_lua: Callable[[Any], Any], where: Callable[[], str]) -> None:
        self._state = state
        self._owner = owner
        self._py = py
        self._to_lua = to_lua
        self._where = where

    def setup(self, options: Any) -> None:
        try:
            self._setup(self._py(options))
        except ConfigError as exc:
            raise ConfigError(f"{self._where()}: {exc}") from None

    def _setup(self, options: Any) -> None:
        if options == []:
            options = {}
        if not isinstance(options, dict):
            raise ConfigError("shaping:setup_with_automation: expected a table of options")
        for key in options:
            if key not in OPTIONS:
                near = difflib.get_close_matches(str(key), OPTIONS, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(f"shaping:setup_with_automation: unknown option {key!r}{hint}")
        extra = options.get("extra_files") or []
        if isinstance(extra, str):  # KumoMTA's own usage note passes one name
            extra = [extra]
        if not isinstance(extra, list) or not all(isinstance(f, str) for f in extra):
            raise ConfigError(f"shaping: extra_files: {extra!r} is not a list of file names")
        names = ([] if options.get("no_default_files") else [DEFAULT_FILE]) + extra
        links = {k: _urls(options.get(k), k) for k in ("publish", "subscribe")}
        self._state.record("policy-extras.shaping", {"files": names, **links})
        shaping = load_shaping([(name, self._content(name)) for name in names])
        shaping.in_hook = True
        shaping.automate = bool(links["publish"] or links["subscribe"])
        self._owner.shaping = shaping

    def _content(self, name: str) -> Any:
        if name == DEFAULT_FILE:
            text = _BUNDLED.read_text(encoding="utf-8")
        else:
            text = self._state.load_text("shaping", name)
        return json_parse(text) if name.endswith(".json") else text

    def path_config(self, domain: str, source: str, site: str, skip_make: Any = None) -> Any:
        """The helper's ``get_egress_path_config``: the files' values for the
        path, made into a config (or, with `skip_make`, the table of them)."""
        shaping = self._owner.shaping
        values = shaping.hook_values(domain, source, site) if shaping is not None else {}
        return self._to_lua(values) if skip_make else make_egress_path(**values)


def _urls(value: Any, key: str) -> list[str]:
    if value is None or value == {}:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise ConfigError(f"shaping: {key}: {value!r} is not a list of URLs")
    return list(value)
