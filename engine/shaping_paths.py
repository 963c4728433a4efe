"""A path's config under shaping: the policy's answer, the shaping files' values,
then the automation overrides in force.

`engine.lookups` asks the policy and passes the answer through `shaped`; the
automation (`engine.shaping_rules`) keeps its overrides in `Overrides` and,
when a rule fires or lapses, re-derives the config of the paths it touches
with `reshape` at once, not at the next config refresh.  The config without
overrides is remembered per path (`Overrides.base`) so a lapse restores it
without asking the policy again (a hook may raise, and a lapse must not).
"""

from __future__ import annotations

from typing import Any

from engine.config import EgressPathConfig
from engine.core import Core
from engine.ready import ReadyQueue

__all__ = ["ANY_SOURCE", "Overrides", "reshape", "shaped", "site_of"]

ANY_SOURCE = "*"  # SetDomainConfig: every source's path to the site


class Overrides:
    """Automation's config overrides per (source, site), in firing order."""

    __slots__ = ("base", "by_path")

    def __init__(self) -> None:
        # (source or ANY_SOURCE, site) -> {firing key: {name: value}}
        self.by_path: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        # (source, site) -> the config without overrides, as last derived
        self.base: dict[tuple[str, str], EgressPathConfig] = {}

    def values(self, source: str, site: str) -> dict[str, Any]:
        """The overrides in force on ``source->site``: SetDomainConfig's first, then
        SetConfig's, each in firing order (a later firing wins)."""
        out: dict[str, Any] = {}
        for key in ((ANY_SOURCE, site), (source, site)):
            for vals in self.by_path.get(key, {}).values():
                out.update(vals)
        return out


def site_of(eng: Core, domain: str) -> str | None:
    """The site name of `domain`'s MX, when the engine has resolved it."""
    ds = eng.domains.get(domain)
    return None if ds is None else ds.site


def shaped(eng: Core, cfg: EgressPathConfig, domain: str, source: str,
           site: str, hosts: list[str] | None = None) -> EgressPathConfig:
    """`cfg` with the shaping values of ``source->site`` and the overrides in force.
    `hosts`: the domain's MX hosts when the engine has not installed them yet
    (an MX answer being handled), else those it holds."""
    if hosts is None:
        ds = eng.domains.get(domain)
        hosts = [r.host for r in ds.mx] if ds is not None else None
    cfg = eng.shaping.overlay(cfg, domain, source, site, hosts, lambda d: site_of(eng, d))
    auto = eng.automation
    if auto is None:
        return cfg
    ov: Overrides = auto.overrides
    ov.base[(source, site)] = cfg
    found = ov.values(source, site)
    return cfg.replace(**found) if found else cfg


def reshape(eng: Core, rq: ReadyQueue, ov: Overrides) -> None:
    """Re-derive `rq`'s config from its base and the overrides now in force."""
    base = ov.base.get((rq.source_name, rq.site))
    if base is None:  # first override on this path: its config so far is the base
        base = ov.base[(rq.source_name, rq.site)] = rq.cfg
    found = ov.values(rq.source_name, rq.site)
    old = rq.cfg
    rq.cfg = base.replace(**found) if found else base
    if rq.cfg != old:
        eng.refresh_throttles(rq, old)
