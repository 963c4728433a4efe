"""Reading shaping files into `engine.shaping` values, as KumoMTA loads them.

`load_shaping` takes one or more files (already read by the caller: the core
does no I/O), merges them as KumoMTA's ``kumo.shaping.load`` does (a later
file's block is merged into an earlier one's, or replaces it with
``replace_base = true``) and validates every value with `make_egress_path`'s
own checks, so a bad value fails at load with the file, the table and the
field named (``f.toml: ["comcast.net"]: make_egress_path: unknown key ...``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from engine.config import make_egress_path
from engine.curfew import load_curfews
from engine.durations import parse_duration
from engine.errors import ConfigError
from engine.shaping import (
    ACTIONS,
    ADJUST_ACTIONS,
    ADJUSTABLE,
    BACKOFF,
    CONFIG_ACTIONS,
    IGNORED_KEYS,
    MATCHERS,
    PLAIN_ACTIONS,
    PROVIDER_SELECTION,
    Action,
    Adjust,
    Backoff,
    Entry,
    Provider,
    Rule,
    Shaping,
    merge,
)
from engine.throttle import parse_throttle
from engine.warmup import load_warmup

__all__ = ["combine", "load_shaping"]

_RULE_KEYS = ("regex", "action", "trigger", "duration", "match_internal")
_ENTRY_KEYS = ("mx_rollup", "replace_base", "automation", "sources")
_PROVIDER_KEYS = ("match", "replace_base", "automation", "sources",
                  "provider_connection_limit", "provider_max_message_rate",
                  "provider_source_selection_rate")
_LIMIT = re.compile(r"^(?:local:)?\s*([0-9][0-9_,]*)$")

class _Where:
    """Names the file and table in every error."""

    __slots__ = ("file", "table")

    def __init__(self, file: str, table: str) -> None:
        self.file, self.table = file, table

    def fail(self, why: str) -> ConfigError:
        return ConfigError(f"{self.file}: [{self.table}]: {why}")


def _limit(value: Any, key: str, where: _Where) -> Any:
    """KumoMTA's LimitSpec ("local:5", "5") as egress's int connection limit."""
    if isinstance(value, str):
        m = _LIMIT.match(value.strip())
        if m is None:
            raise where.fail(f"{key}: {value!r} is not a connection limit such as 10 or 'local:10'")
        return int(m.group(1).replace("_", "").replace(",", ""))
    return value


def _params(raw: Mapping[str, Any], where: _Where, ignored: list[str]) -> dict[str, Any]:
    """The make_egress_path keys of a block, validated; KumoMTA-only keys set aside."""
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in IGNORED_KEYS:
            ignored.append(f"{where.file}: [{where.table}] {key}")
            continue
        if key == "connection_limit" or key == "additional_connection_limits":
            value = (_limit(value, key, where) if key == "connection_limit" else
                     {k: _limit(v, key, where) for k, v in value.items()}
                     if isinstance(value, Mapping) else value)
        params[key] = value
    try:
        cfg = make_egress_path(**params)
    except ConfigError as exc:
        raise where.fail(str(exc)) from None
    # keep the normalised values (durations in seconds, Throttles, ...)
    return {k: getattr(cfg, k) for k in params}


def _selection_rate(value: Any, where: _Where) -> Any:
    """provider_source_selection_rate: a throttle, as source_selection_rate's."""
    return _params({"source_selection_rate": value}, where, [])["source_selection_rate"]


def _regexes(raw: Any, where: _Where) -> tuple[re.Pattern[str], ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(r, str) for r in items):
        raise where.fail(f"regex: {raw!r} is not a string or a list of strings")
    try:
        return tuple(re.compile(r) for r in items)
    except re.error as exc:
        raise where.fail(f"regex: {exc.pattern!r}: {exc}") from None


def _action(raw: Any, where: _Where) -> Action:
    if isinstance(raw, str):
        if raw in PLAIN_ACTIONS:
            return Action(raw)
        hint = f" (it takes {{{raw}={{name=..., value=...}}}})" if raw in CONFIG_ACTIONS else ""
        raise where.fail(f"action: {raw!r} is not one of {', '.join(ACTIONS)}{hint}")
    if isinstance(raw, Mapping) and len(raw) == 1:
        (kind, arg), = raw.items()
        if kind in CONFIG_ACTIONS and isinstance(arg, Mapping) and set(arg) == {"name", "value"}:
            name = arg["name"]
            cfg_where = _Where(where.file, f"{where.table} action {kind}")
            value = _params({name: arg["value"]}, cfg_where, [])[name] if isinstance(name, str) \
                else None
            if not isinstance(name, str):
                raise where.fail(f"action: {kind} name {name!r} is not a string")
            return Action(kind, name, value)
        if kind in ADJUST_ACTIONS and isinstance(arg, Mapping):
            return _adjust(kind, arg, _Where(where.file, f"{where.table} action {kind}"))
        if kind == BACKOFF and isinstance(arg, Mapping):
            return _backoff(arg, _Where(where.file, f"{where.table} action {kind}"))
    raise where.fail(f"action: {raw!r} is not one of {', '.join(ACTIONS)} "
                     f"or {{SetConfig={{name=..., value=...}}}}")


_ADJUST_KEYS = ("name", "decrease_percent", "decrease_amount", "floor_percent", "floor_amount",
                "ramp_step_percent", "ramp_step_amount", "ramp_up_interval")


def _one_of(arg: Mapping[str, Any], stem: str, where: _Where,
            required: bool) -> tuple[float, bool] | None:
    """`stem`_percent or `stem`_amount (exactly one, or none when not `required`)."""
    given = [k for k in (f"{stem}_percent", f"{stem}_amount") if k in arg]
    if len(given) > 1 or (required and not given):
        raise where.fail(f"give one of {stem}_percent or {stem}_amount")
    if not given:
        return None
    key = given[0]
    value = arg[key]
    percent = key.endswith("_percent")
    top = 100 if percent else float("inf")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= top:
        what = "a percent above 0, at most 100" if percent else "a number above 0"
        raise where.fail(f"{key}: {value!r} is not {what}")
    if not percent and not float(value).is_integer():
        raise where.fail(f"{key}: {value!r} is not a whole number")
    return float(value), percent


def _adjust(kind: str, arg: Mapping[str, Any], where: _Where) -> Action:
    """``{AdjustConfig = {name, decrease_*, floor_*, ramp_step_*, ramp_up_interval}}``."""
    for key in arg:
        if key not in _ADJUST_KEYS:
            raise where.fail(f"unknown field {key!r}; valid fields are {', '.join(_ADJUST_KEYS)}")
    name = arg.get("name")
    if name not in ADJUSTABLE:
        raise where.fail(f"name: {name!r} is not one of {', '.join(ADJUSTABLE)}")
    if "ramp_up_interval" not in arg:
        raise where.fail("missing field 'ramp_up_interval'")
    try:
        interval = parse_duration(arg["ramp_up_interval"], key="ramp_up_interval")
    except ConfigError as exc:
        raise where.fail(str(exc)) from None
    if interval <= 0:
        raise where.fail(f"ramp_up_interval: {arg['ramp_up_interval']!r} is not above 0")
    decrease = _one_of(arg, "decrease", where, True)
    step = _one_of(arg, "ramp_step", where, True)
    floor = _one_of(arg, "floor", where, False) or (1.0, False)
    assert decrease is not None and step is not None
    if decrease[1] and decrease[0] >= 100:
        raise where.fail("decrease_percent: 100 would stop the path (use Suspend)")
    return Action(kind, name, Adjust(decrease=decrease[0], decrease_percent=decrease[1],
                                     step=step[0], step_percent=step[1], interval=interval,
                                     floor=floor[0], floor_percent=floor[1]))


def _backoff(arg: Mapping[str, Any], where: _Where) -> Action:
    """``{Backoff = {config = {make_egress_path keys}, deliveries = N}}``."""
    for key in arg:
        if key not in ("config", "deliveries"):
            raise where.fail(f"unknown field {key!r}; valid fields are config, deliveries")
    config = arg.get("config")
    if not isinstance(config, Mapping) or not config:
        raise where.fail(f"config: {config!r} is not a table of make_egress_path keys")
    deliveries = arg.get("deliveries")
    if deliveries is not None and (isinstance(deliveries, bool) or not isinstance(deliveries, int)
                                   or deliveries < 1):
        raise where.fail(f"deliveries: {deliveries!r} is not a whole number above 0")
    return Action(BACKOFF, None, Backoff(_params(config, where, []), deliveries))


def _rule(raw: Any, rule_id: str, where: _Where) -> Rule:
    if not isinstance(raw, Mapping):
        raise where.fail(f"automation: {raw!r} is not a table")
    for key in raw:
        if key not in _RULE_KEYS:
            raise where.fail(f"automation: unknown field {key!r}; valid fields are "
                             f"{', '.join(_RULE_KEYS)}")
    for key in ("regex", "action", "duration"):
        if key not in raw:
            raise where.fail(f"automation: missing field {key!r}")
    actions = raw["action"] if isinstance(raw["action"], list) else [raw["action"]]
    if not actions:
        raise where.fail("action: an empty list")
    trigger = raw.get("trigger", "Immediate")
    threshold = None
    if trigger != "Immediate":
        if not (isinstance(trigger, Mapping) and set(trigger) == {"Threshold"}):
            raise where.fail(
                f"trigger: {trigger!r} is not \"Immediate\" or {{Threshold=\"N/period\"}}")
        try:
            threshold = parse_throttle(trigger["Threshold"], key="trigger Threshold")
        except ConfigError as exc:
            raise where.fail(str(exc)) from None
    try:
        duration = parse_duration(raw["duration"], key="duration")
    except ConfigError as exc:
        raise where.fail(str(exc)) from None
    internal = raw.get("match_internal", False)
    if not isinstance(internal, bool):
        raise where.fail(f"match_internal: {internal!r} is not true or false")
    return Rule(rule_id, _regexes(raw["regex"], where), tuple(_action(a, where) for a in actions),
                duration, threshold, internal)


def _sources(raw: Any, where: _Where, ignored: list[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, Mapping):
        raise where.fail(f"sources: {raw!r} is not a table of source tables")
    out = {}
    for name, tbl in raw.items():
        sw = _Where(where.file, f"{where.table}.sources.\"{name}\"")
        if not isinstance(tbl, Mapping):
            raise sw.fail(f"{tbl!r} is not a table")
        out[name] = _params(tbl, sw, ignored)
    return out


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: _Where) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise where.fail(f"{key}: {value!r} is not true or false")
    return value


def _rules(raw: Mapping[str, Any], scope: str, where: _Where, start: int) -> list[Rule]:
    items = raw.get("automation", [])
    if not isinstance(items, list):
        raise where.fail("automation: not an array of tables ([[\"domain\".automation]])")
    return [_rule(r, f"{scope}#{start + i}", where) for i, r in enumerate(items)]


def _load_entry(sh: Shaping, name: str, raw: Any, file: str) -> None:
    where = _Where(file, f'"{name}"')
    if not isinstance(raw, Mapping):
        raise where.fail(f"{raw!r} is not a table")
    old = sh.entries.get(name)
    replace = _flag(raw, "replace_base", False, where)
    entry = Entry(name) if old is None or replace else old
    entry.mx_rollup = _flag(raw, "mx_rollup", True, where)
    plain = {k: v for k, v in raw.items() if k not in _ENTRY_KEYS}
    merge(entry.params, _params(plain, where, sh.ignored))
    for src, tbl in _sources(raw.get("sources", {}), where, sh.ignored).items():
        merge(entry.sources.setdefault(src, {}), tbl)
    entry.automation.extend(_rules(raw, name, where, len(entry.automation)))
    sh.entries[name] = entry


def _load_provider(sh: Shaping, name: str, raw: Any, file: str) -> None:
    where = _Where(file, f'provider."{name}"')
    if not isinstance(raw, Mapping):
        raise where.fail(f"{raw!r} is not a table")
    old = sh.providers.get(name)
    prov = Provider(name) if old is None or _flag(raw, "replace_base", False, where) else old
    matches = raw.get("match", [])
    if not isinstance(matches, list):
        raise where.fail(f"match: {matches!r} is not a list such as [{{MXSuffix=\".example\"}}]")
    for m in matches:
        if not (isinstance(m, Mapping) and len(m) == 1 and next(iter(m)) in MATCHERS
                and isinstance(next(iter(m.values())), str)):
            raise where.fail(f"match: {m!r} is not one of {{MXSuffix=...}}, {{DomainSuffix=...}}, "
                             "{HostName=...}")
        prov.matches.append(next(iter(m.items())))
    if "provider_connection_limit" in raw:
        value = _limit(raw["provider_connection_limit"], "provider_connection_limit", where)
        prov.connection_limit = _params({"connection_limit": value}, where, [])["connection_limit"]
    if "provider_max_message_rate" in raw:
        prov.max_message_rate = _params({"max_message_rate": raw["provider_max_message_rate"]},
                                        where, [])["max_message_rate"]
    if PROVIDER_SELECTION in raw:
        prov.selection_rate = _selection_rate(raw[PROVIDER_SELECTION], where)
    plain = {k: v for k, v in raw.items() if k not in _PROVIDER_KEYS}
    merge(prov.params, _params(plain, where, sh.ignored))
    srcs = raw.get("sources", {})
    if isinstance(srcs, Mapping):  # take the provider-only key out of each source table
        plain_srcs: dict[str, Any] = {}
        for src, tbl in srcs.items():
            if isinstance(tbl, Mapping) and PROVIDER_SELECTION in tbl:
                sw = _Where(file, f'{where.table}.sources."{src}"')
                prov.source_selection_rates[src] = _selection_rate(tbl[PROVIDER_SELECTION], sw)
                tbl = {k: v for k, v in tbl.items() if k != PROVIDER_SELECTION}
            plain_srcs[src] = tbl
        srcs = plain_srcs
    for src, tbl in _sources(srcs, where, sh.ignored).items():
        merge(prov.sources.setdefault(src, {}), tbl)
    prov.automation.extend(_rules(raw, f"provider:{name}", where, len(prov.automation)))
    sh.providers[name] = prov


def load_shaping(files: Sequence[tuple[str, str | Mapping[str, Any]]]) -> Shaping:
    """Merge shaping files, given as (name, TOML text or parsed table), in order."""
    sh = Shaping(files=tuple(name for name, _ in files), contents=tuple(files))
    for file, content in files:
        if isinstance(content, str):
            try:
                data: Mapping[str, Any] = tomllib.loads(content)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        else:
            data = content
        for name, raw in data.items():
            if name == "provider":
                if not isinstance(raw, Mapping):
                    raise ConfigError(f"{file}: [provider]: not a table of providers")
                for pname, praw in raw.items():
                    _load_provider(sh, pname, praw, file)
            elif name == "warmup":  # egress's own tables (docs/SHAPING.md)
                sh.warmup.update(load_warmup(raw, file))
            elif name == "curfew":
                sh.curfews.extend(load_curfews(raw, file, len(sh.curfews)))
            else:
                _load_entry(sh, name, raw, file)
    return sh


def combine(first: Shaping | None, second: Shaping | None) -> Shaping | None:
    """Two loads as one: `second`'s files merged over `first`'s (a Lua policy's
    shaping helper, then ``--shaping`` or a scenario's ``shaping``)."""
    if first is None or second is None or first is second:
        return second if first is None else first
    both = load_shaping(first.contents + second.contents)
    both.in_hook = first.in_hook or second.in_hook
    hooked = first if first.in_hook else second if second.in_hook else None
    both.hooked = None if hooked is None else hooked.hooked or hooked
    both.automate = first.automate or second.automate
    return both
