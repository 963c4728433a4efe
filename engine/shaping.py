"""KumoMTA's shaping.toml, loaded into values: entries, providers and rules.

A shaping file names egress path settings per scope (``["default"]``, a
domain ``["example.com"]``, a provider ``[provider."name"]`` with ``match``
rules) and per egress source inside a scope (``sources."name"``), plus
automation rules (``[["comcast.net".automation]]``).  `engine.shaping_load`
reads the files into these values (one module holds the values, the other
the parsing and its error messages).

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

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.config import EgressPathConfig
from engine.curfew import Curfew
from engine.durations import format_duration
from engine.throttle import Throttle
from engine.warmup import Warmup

__all__ = ["ACTIONS", "ADJUSTABLE", "ADJUST_ACTIONS", "BACKOFF", "CONFIG_ACTIONS", "IGNORED_KEYS",
           "MATCHERS", "MERGEABLE", "PLAIN_ACTIONS", "Action", "Adjust", "Backoff", "Entry",
           "Provider", "Rule", "Shaping", "merge"]

#: Action names taking no argument, and those taking ``{name, value}``.
PLAIN_ACTIONS = ("Suspend", "SuspendTenant", "SuspendCampaign", "Bounce", "BounceTenant",
                 "BounceCampaign")
CONFIG_ACTIONS = ("SetConfig", "SetDomainConfig")
#: Beyond KumoMTA's shipped actions: relative decrease with stepwise ramp-up (the
#: spelling of KumoMTA PR #594) and PowerMTA's backoff mode (docs/SHAPING.md).
ADJUST_ACTIONS = ("AdjustConfig", "AdjustDomainConfig")
BACKOFF = "Backoff"
ACTIONS = PLAIN_ACTIONS + CONFIG_ACTIONS + ADJUST_ACTIONS + (BACKOFF,)
#: The keys an AdjustConfig may lower: counts, and throttles (their limit moves,
#: their period stays).
ADJUSTABLE = ("connection_limit", "max_deliveries_per_connection", "max_message_rate",
              "max_connection_rate", "source_selection_rate")
MATCHERS = ("MXSuffix", "DomainSuffix", "HostName")
#: KumoMTA egress path keys egress has no use for (it has no per-path shutdown
#: timeout): loaded, not applied.
IGNORED_KEYS = ("system_shutdown_timeout",)
MERGEABLE = ("additional_connection_limits", "additional_message_rate_throttles",
             "additional_source_selection_rates")
#: KumoMTA's provider-only key: a source's selection rate shared by every site of
#: the provider (crates/kumo-api-types/src/shaping.rs, apply_provider_params_to).
PROVIDER_SELECTION = "provider_source_selection_rate"


@dataclass(frozen=True, slots=True)
class Action:
    """One automation action; `name` for SetConfig/SetDomainConfig/Adjust*, `value`
    the value set, an `Adjust` or a `Backoff`."""

    kind: str
    name: str | None = None
    value: Any = None


@dataclass(frozen=True, slots=True)
class Adjust:
    """AdjustConfig's numbers.  The decrease and the ramp step are a percent of the
    current value or an amount; the floor a percent of the base (the value without
    the adjustment) or an amount.  A value never goes below 1 (0 would stop the
    path, which is Suspend's job)."""

    decrease: float
    decrease_percent: bool
    step: float
    step_percent: bool
    interval: float
    floor: float = 1
    floor_percent: bool = False

    def floor_of(self, base: int) -> int:
        f = math.ceil(base * self.floor / 100) if self.floor_percent else int(self.floor)
        return max(1, min(f, base))

    def lowered(self, value: int, base: int) -> int:
        """`value` after one decrease (at least one less, never below the floor)."""
        cut = int(value * self.decrease / 100) if self.decrease_percent else int(self.decrease)
        return max(self.floor_of(base), value - max(1, cut))

    def raised(self, value: int, base: int) -> int:
        """`value` after one ramp step (at least one more, never above the base)."""
        up = int(value * self.step / 100) if self.step_percent else int(self.step)
        return min(base, value + max(1, up))

    def show(self) -> dict[str, Any]:
        """As written in the file (KumoMTA PR #594's field names)."""
        def num(x: float) -> float | int:
            return int(x) if float(x).is_integer() else x
        return {("decrease_percent" if self.decrease_percent else "decrease_amount"):
                num(self.decrease),
                ("floor_percent" if self.floor_percent else "floor_amount"): num(self.floor),
                ("ramp_step_percent" if self.step_percent else "ramp_step_amount"):
                num(self.step),
                "ramp_up_interval": format_duration(self.interval)}


@dataclass(frozen=True, slots=True)
class Backoff:
    """PowerMTA's backoff mode: `config` (make_egress_path keys, normalised) in force
    until `deliveries` succeed on the path (None: only the rule's duration ends it)."""

    config: Mapping[str, Any]
    deliveries: int | None = None


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
    # provider_source_selection_rate: the block's own, and per source (None: unset)
    selection_rate: Throttle | None = None
    source_selection_rates: dict[str, Throttle] = field(default_factory=dict)
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
        rate = self.source_selection_rates.get(source, self.selection_rate)
        if rate is not None:
            out["additional_source_selection_rates"] = {
                f"shaping-provider-{self.name}-{source}-selection-rate": rate}
        return out


def merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    """KumoMTA's toml_table_merge_from: later wins, the shared-limit tables merge."""
    for k, v in other.items():
        old = into.get(k)
        if k in MERGEABLE and isinstance(old, Mapping) and isinstance(v, Mapping):
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
    #: The (name, content) pairs it was loaded from, so that files from two
    #: places (a Lua policy's shaping helper, ``--shaping``) merge as one load.
    contents: tuple[tuple[str, Any], ...] = ()
    #: True when the policy's own hook applies the values (KumoMTA's
    #: ``policy-extras.shaping`` helper): `overlay` then adds only what the
    #: hook could not see, and never undoes a value the hook's code changed.
    in_hook: bool = False
    #: False for KumoMTA's ``shaping:setup(files)``, which configures no
    #: automation: the files' rules load but never watch a response.
    automate: bool = True
    #: When files from elsewhere were merged over the helper's, the helper's
    #: own load: what its hook saw (`hook_values`).
    hooked: Shaping | None = None
    # egress's own tables (docs/SHAPING.md): warm-up plans by source, and curfews
    warmup: dict[str, Warmup] = field(default_factory=dict)
    curfews: list[Curfew] = field(default_factory=list)

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
            merge(out, default.params)
        provs = self._providers_for(domain, mx_hosts)
        for p in provs:
            merge(out, p.params)
            merge(out, p.implied(source))
        for p in provs:
            if source in p.sources:
                merge(out, p.sources[source])
                merge(out, p.implied(source))
        sites = self._site_entries(domain, site, site_of)
        for e in sites:
            merge(out, e.params)
        exact = self.entries.get(domain)
        if exact is not None and not exact.mx_rollup:
            merge(out, exact.params)
        for e in sites:
            merge(out, e.sources.get(source, {}))
        if exact is not None and not exact.mx_rollup:
            merge(out, exact.sources.get(source, {}))
        return out

    def rules(self, domain: str, site: str, mx_hosts: Sequence[str] | None = None,
              site_of: Callable[[str], str | None] | None = None) -> list[Rule]:
        """The rules that watch responses on a path, in KumoMTA's order (default,
        provider, site, domain)."""
        out: list[Rule] = []
        if not self.automate:
            return out
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
        """`cfg` (the policy's answer) with this shaping's values on top.

        When the hook applied the values itself (`in_hook`), it saw the path
        without the engine's MX knowledge (`hook_values`): a value that knowledge
        adds (an MX-matched provider, a rolled-up site) is laid on only where
        `cfg` still holds what the hook produced, so a key the hook's code set
        on purpose wins, as a KumoMTA hook's answer does."""
        found = self.values(domain, source, site, mx_hosts, site_of)
        if found and self.in_hook:
            seen = self.hook_values(domain, source, site)
            found = {k: v for k, v in found.items()
                     if seen.get(k, _UNSEEN) != v
                     and (k in MERGEABLE or getattr(cfg, k) == seen.get(k, _default_value(k)))}
        if not found:
            return cfg
        merged = {k: ({**getattr(cfg, k), **v} if k in MERGEABLE else v)
                  for k, v in found.items()}
        return cfg.replace(**merged)

    def hook_values(self, domain: str, source: str, site: str) -> dict[str, Any]:
        """What KumoMTA's shaping helper hands its hook for ``source->site``:
        the values resolved from the names alone (no MX hosts, no other
        domain's site)."""
        return (self.hooked or self).values(domain, source, site)


_UNSEEN = object()
_DEFAULTS = EgressPathConfig()


def _default_value(key: str) -> Any:
    return getattr(_DEFAULTS, key)
