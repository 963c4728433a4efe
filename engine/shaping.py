"""KumoMTA's shaping.toml, loaded into values: entries, providers and rules.

A shaping file names egress path settings per scope (``["default"]``, a
domain ``["example.com"]``, a provider ``[provider."name"]`` with ``match``
rules) and per egress source inside a scope (``sources."name"``), plus
automation rules (``[["comcast.net".automation]]``).  `load_shaping` reads
one or more files (already read by the caller: the core does no I/O), merges
them as KumoMTA's ``kumo.shaping.load`` does (a later file's block is merged
into an earlier one's, or replaces it with ``replace_base = true``) and
validates every value with `make_egress_path`'s own checks, so a bad value
fails at load with the file, the table and the field named.

`Shaping.values` resolves the settings of one path in KumoMTA's order:
default, provider, provider+source, site, domain, site+source, domain+source.
KumoMTA keys domains with ``mx_rollup = true`` (the default) by the site name
of their MX, resolved when the file loads; egress cannot resolve at load (the
core is pure), so such an entry applies to the site its domain's MX names
once the engine knows it (`site_of`), and to the domain itself always.

The automation rules are `Rule` values; what they do is decided in
`engine.shaping_rules`.  A few keys KumoMTA accepts have no counterpart in
egress (`IGNORED_KEYS`); they load, are listed in `Shaping.ignored`, and do
nothing.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.config import EgressPathConfig, make_egress_path
from engine.durations import parse_duration
from engine.errors import ConfigError
from engine.throttle import Throttle, parse_throttle

__all__ = ["ACTIONS", "IGNORED_KEYS", "MATCHERS", "Action", "Entry", "Provider", "Rule",
           "Shaping", "load_shaping"]

#: Action names taking no argument, and those taking ``{name, value}``.
PLAIN_ACTIONS = ("Suspend", "SuspendTenant", "SuspendCampaign", "Bounce", "BounceTenant",
                 "BounceCampaign")
CONFIG_ACTIONS = ("SetConfig", "SetDomainConfig")
ACTIONS = PLAIN_ACTIONS + CONFIG_ACTIONS
MATCHERS = ("MXSuffix", "DomainSuffix", "HostName")
#: KumoMTA egress path keys egress has no use for (it keeps no TLS-failure
#: memory across paths and has no per-path shutdown timeout): loaded, not applied.
IGNORED_KEYS = ("remember_broken_tls", "system_shutdown_timeout",
                "provider_source_selection_rate")
_RULE_KEYS = ("regex", "action", "trigger", "duration", "match_internal")
_ENTRY_KEYS = ("mx_rollup", "replace_base", "automation", "sources")
_PROVIDER_KEYS = ("match", "replace_base", "automation", "sources",
                  "provider_connection_limit", "provider_max_message_rate")
_MERGEABLE = ("additional_connection_limits", "additional_message_rate_throttles")
_LIMIT = re.compile(r"^(?:local:)?\s*([0-9][0-9_,]*)$")


@dataclass(frozen=True, slots=True)
class Action:
    """One automation action; `name` and `value` only for SetConfig/SetDomainConfig."""

    kind: str
    name: str | None = None
    value: Any = None


@dataclass(frozen=True, slots=True)
class Rule:
    """An automation rule.  `threshold` None is KumoMTA's ``Immediate``."""

    rule_id: str  # "<scope>#<n>": stable across runs, used in records and timers
    regex: tuple[re.Pattern[str], ...]
    actions: tuple[Action, ...]
    duration: float
    threshold: Throttle | None = None
    match_internal: bool = False

    def matches(self, response: str, internal: bool = False) -> bool:
        """True when any regex finds `response` (one line), as KumoMTA's Rule.matches."""
        if internal and not self.match_internal:
            return False
        return any(r.search(response) for r in self.regex)


@dataclass(slots=True)
class Entry:
    """A ``["default"]`` or domain block, merged over every file that names it."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    mx_rollup: bool = True
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    automation: list[Rule] = field(default_factory=list)


@dataclass(slots=True)
class Provider:
    """A ``[provider."name"]`` block: `match` rules, params and their source parts."""

    name: str
    matches: list[tuple[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    connection_limit: int | None = None
    max_message_rate: Any = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    automation: list[Rule] = field(default_factory=list)

    def domain_matches(self, domain: str, mx_hosts: Sequence[str] | None) -> bool:
        """KumoMTA's ProviderEntry.domain_matches: a DomainSuffix on the domain, or
        every MX host matching some MXSuffix/HostName (the MX must be known)."""
        need_mx = False
        for kind, text in self.matches:
            if kind == "DomainSuffix":
                if domain.endswith(text):
                    return True
            else:
                need_mx = True
        if not need_mx or not mx_hosts:
            return False
        for host in mx_hosts:
            host = host.removesuffix(".")
            if not any((kind == "MXSuffix" and host.endswith(text))
                       or (kind == "HostName" and host == text) for kind, text in self.matches):
                return False
        return True

    def implied(self, source: str) -> dict[str, Any]:
        """What the provider adds to every path it matches (KumoMTA's
        apply_provider_params_to): its name and its shared limits."""
        out: dict[str, Any] = {"provider_name": self.name}
        if self.connection_limit is not None:
            out["additional_connection_limits"] = {
                f"shaping-provider-{self.name}-{source}-limit": self.connection_limit}
        if self.max_message_rate is not None:
            out["additional_message_rate_throttles"] = {
                f"shaping-provider-{self.name}-{source}-rate": self.max_message_rate}
        return out


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    """KumoMTA's toml_table_merge_from: later wins, the shared-limit tables merge."""
    for k, v in other.items():
        old = into.get(k)
        if k in _MERGEABLE and isinstance(old, Mapping) and isinstance(v, Mapping):
            into[k] = {**old, **v}
        else:
            into[k] = v


@dataclass(slots=True)
class Shaping:
    """Every file's blocks merged; `values` resolves one path, `rules` its rules."""

    files: tuple[str, ...] = ()
    entries: dict[str, Entry] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def _providers_for(self, domain: str, mx_hosts: Sequence[str] | None) -> list[Provider]:
        return [p for p in self.providers.values() if p.domain_matches(domain, mx_hosts)]

    def _site_entries(self, domain: str, site: str,
                      site_of: Callable[[str], str | None] | None) -> list[Entry]:
        return [e for name, e in self.entries.items()
                if name != "default" and e.mx_rollup
                and (name == domain or (site_of is not None and site_of(name) == site))]

    def values(self, domain: str, source: str, site: str,
               mx_hosts: Sequence[str] | None = None,
               site_of: Callable[[str], str | None] | None = None) -> dict[str, Any]:
        """The merged settings of the ``source->site`` path for `domain`, as
        make_egress_path keys (validated at load)."""
        out: dict[str, Any] = {}
        default = self.entries.get("default")
        if default is not None:
            _merge(out, default.params)
        provs = self._providers_for(domain, mx_hosts)
        for p in provs:
            _merge(out, p.params)
            _merge(out, p.implied(source))
        for p in provs:
            if source in p.sources:
                _merge(out, p.sources[source])
                _merge(out, p.implied(source))
        sites = self._site_entries(domain, site, site_of)
        for e in sites:
            _merge(out, e.params)
        exact = self.entries.get(domain)
        if exact is not None and not exact.mx_rollup:
            _merge(out, exact.params)
        for e in sites:
            _merge(out, e.sources.get(source, {}))
        if exact is not None and not exact.mx_rollup:
            _merge(out, exact.sources.get(source, {}))
        return out

    def rules(self, domain: str, site: str, mx_hosts: Sequence[str] | None = None,
              site_of: Callable[[str], str | None] | None = None) -> list[Rule]:
        """The rules that watch responses on a path, in KumoMTA's order (default,
        provider, site, domain)."""
        out: list[Rule] = []
        default = self.entries.get("default")
        if default is not None:
            out.extend(default.automation)
        for p in self._providers_for(domain, mx_hosts):
            out.extend(p.automation)
        for e in self._site_entries(domain, site, site_of):
            out.extend(e.automation)
        exact = self.entries.get(domain)
        if exact is not None and not exact.mx_rollup:
            out.extend(exact.automation)
        return out

    def overlay(self, cfg: EgressPathConfig, domain: str, source: str, site: str,
                mx_hosts: Sequence[str] | None = None,
                site_of: Callable[[str], str | None] | None = None) -> EgressPathConfig:
        """`cfg` (the policy's answer) with this shaping's values on top."""
        found = self.values(domain, source, site, mx_hosts, site_of)
        if not found:
            return cfg
        merged = {k: ({**getattr(cfg, k), **v} if k in _MERGEABLE else v)
                  for k, v in found.items()}
        return cfg.replace(**merged)


# -- loading --------------------------------------------------------------------


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
    raise where.fail(f"action: {raw!r} is not one of {', '.join(ACTIONS)} "
                     f"or {{SetConfig={{name=..., value=...}}}}")


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
    _merge(entry.params, _params(plain, where, sh.ignored))
    for src, tbl in _sources(raw.get("sources", {}), where, sh.ignored).items():
        _merge(entry.sources.setdefault(src, {}), tbl)
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
    plain = {k: v for k, v in raw.items() if k not in _PROVIDER_KEYS}
    _merge(prov.params, _params(plain, where, sh.ignored))
    for src, tbl in _sources(raw.get("sources", {}), where, sh.ignored).items():
        _merge(prov.sources.setdefault(src, {}), tbl)
    prov.automation.extend(_rules(raw, f"provider:{name}", where, len(prov.automation)))
    sh.providers[name] = prov


def load_shaping(files: Sequence[tuple[str, str | Mapping[str, Any]]]) -> Shaping:
    """Merge shaping files, given as (name, TOML text or parsed table), in order."""
    sh = Shaping(files=tuple(name for name, _ in files))
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
            else:
                _load_entry(sh, name, raw, file)
    return sh
