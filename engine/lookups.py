"""Asking the policy before anything changes: staged lookups, committed whole.

The policy's hooks are the user's code and may raise (`PolicyError`).  An
event must then leave the engine exactly as it was, so no handler asks the
policy half-way through its changes.  Instead:

- every event first refreshes the path configs that are due
  (`refresh_due`): all new configs are asked for, and only when every hook
  call has returned are they installed;
- a handler that promotes messages (`MessageSubmitted`, `Resolved`, the
  promote timer) first calls `Staged.need_path` for every (queue, site) it
  may touch: the queue's config, its egress pool, each source of the pool and
  each ``source->site`` path config are asked for the ones not yet known, into
  a `Staged` object; `Staged.commit` installs them after the last hook call.

A raising hook affects only what it configures (issue 13.1):

- `queue_config` raising refuses the submission (`PolicyError`, the engine
  unchanged): without a queue config there is no queue to accept it into;
- `egress_pool`, `egress_source` or `egress_path_config` raising while a
  (pool, site) is staged marks that pair failed for the event
  (``eng.hook_failed``): its messages get a TransientFailure record naming
  the hook and the error and follow their retry schedule (`hook_failed`), so
  the hook is asked again at the next attempt; every other path flows;
- a path config re-asked when due (`refresh_due`, `path_config`) that
  raises keeps the path's current config until the next refresh.

Each failure is counted (``total_hook_failures``).

So a raising hook leaves nothing half-done.  The price is that a multi-source
pool's paths are asked for together (a path may be asked before a message
first uses it); the answers are cached exactly as a lazy lookup would cache
them (``eng.path_cfgs`` until the path is created).

The world's answers (a domain's MTA-STS policy, a host's TLSA records) are
asked here too: once per name, the asker waiting for the answer event.
"""

from __future__ import annotations

import math
from typing import Any

from engine import metrics
from engine.config import EgressPathConfig
from engine.core import Core
from engine.effects import FetchMtaSts, ResolveTlsa
from engine.errors import PolicyError
from engine.events import MessageSubmitted, MtaStsPolicy, TlsaRecord
from engine.message import QueueInfo, queue_name
from engine.pools import WeightedRoundRobin
from engine.ready import ReadyQueue, config_due
from engine.shaping_paths import shaped

DEFAULT_POOL = "unspecified"

__all__ = ["DEFAULT_POOL", "Staged", "ask_path_config", "hook_error", "path_config",
           "paths_known", "pick_source", "refresh_due", "sts_policy", "tlsa_for",
           "undo_refresh"]


class Staged:
    """Policy answers gathered for one event, not yet visible to the engine."""

    __slots__ = ("cfgs", "eng", "failed", "pools", "queues", "sources")

    def __init__(self, eng: Core) -> None:
        self.eng = eng
        self.queues: dict[str, QueueInfo] = {}
        self.pools: dict[str, WeightedRoundRobin] = {}
        self.sources: dict[str, Any] = {}
        self.cfgs: dict[tuple[str, str], tuple[str, Any, float]] = {}
        self.failed: dict[tuple[str, str], str] = {}  # (pool, site) -> the hook's error

    def queue(self, ev: MessageSubmitted) -> QueueInfo:
        """The scheduled queue of `ev`, asking the policy for a new one."""
        eng = self.eng
        domain = ev.domain
        name = queue_name(domain, ev.tenant, ev.campaign)
        q = eng.queues.get(name) or self.queues.get(name)
        if q is None:
            cfg = eng.policy.queue_config(domain, ev.tenant, ev.campaign, ev.routing_domain)
            name = eng.intern(name)
            q = QueueInfo(name, eng.intern(domain), eng.intern(ev.tenant),
                          eng.intern(ev.campaign), eng.intern(ev.routing_domain.lower()), cfg,
                          eng.intern(cfg.egress_pool or DEFAULT_POOL))
            self.queues[name] = q
        return q

    def pool(self, name: str) -> WeightedRoundRobin:
        """The round robin of pool `name` (asked of the policy when new)."""
        rr = self.eng.pools.get(name) or self.pools.get(name)
        if rr is None:
            rr = self.pools[name] = WeightedRoundRobin(self.eng.policy.egress_pool(name).entries)
        return rr

    def need_path(self, q: QueueInfo, site: str, now: float,
                  hosts: list[str] | None = None) -> None:
        """Everything promoting a message of `q` to `site` may ask of the policy.

        A hook raising here marks (pool, site) failed for this event instead of
        refusing it; what was staged before the failure is kept (each answer
        stands on its own)."""
        if (q.pool, site) in self.failed:
            return
        eng = self.eng
        try:
            for source in self.pool(q.pool).names:
                if source not in eng.sources and source not in self.sources:
                    self.sources[source] = eng.policy.egress_source(source)
                key = (source, site)
                path = eng.path_names.get(key)
                if (path is None or path not in eng.paths) and key not in eng.path_cfgs \
                        and key not in self.cfgs:
                    cfg = ask_path_config(eng, q.domain, source, site, hosts)
                    self.cfgs[key] = (q.domain, cfg, now)
        except PolicyError as exc:
            self.failed[(q.pool, site)] = str(exc)

    def commit(self) -> None:
        """Install every staged answer (after the last hook call succeeded)."""
        eng = self.eng
        if self.queues:
            eng.queues.update(self.queues)
        if self.pools:
            eng.pools.update(self.pools)
        if self.sources:
            eng.sources.update(self.sources)
        if self.cfgs:
            eng.path_cfgs.update(self.cfgs)
        if self.failed:
            eng.hook_failed.update(self.failed)
            eng.metrics.totals[metrics.HOOK_FAILED] += len(self.failed)


def hook_error(eng: Core, pool: str, site: str) -> str | None:
    """The error of a hook that failed for (pool, site) during this event, if any."""
    failed = eng.hook_failed
    return failed.get((pool, site)) if failed else None


def ask_path_config(eng: Core, domain: str, source: str, site: str,
                    hosts: list[str] | None = None) -> EgressPathConfig:
    """The policy's path config, with the shaping files' values and overrides on top;
    `hosts` as for `shaped` (the MX hosts of an answer not yet installed)."""
    cfg = eng.policy.egress_path_config(domain, source, site)
    return cfg if eng.shaping is None else shaped(eng, cfg, domain, source, site, hosts)


def paths_known(eng: Core, pool: str, site: str) -> bool:
    """True when promoting to `site` from `pool` needs nothing of the policy."""
    rr = eng.pools.get(pool)
    if rr is None:
        return False
    paths = eng.paths
    path_names = eng.path_names
    for source in rr.names:  # noqa: SIM110 - a loop: no generator on the hot path
        if path_names.get((source, site)) not in paths:
            return False
    return True


def refresh_due(eng: Core, now: float) -> list[tuple[Any, ...]]:
    """Re-ask the configs of the paths that are due (`engine.ready.config_due`:
    the path's own refresh_interval, or never by time with the Epoch strategy);
    install them all only after every hook call returned.  Returns what
    `undo_refresh` needs should the event itself then be refused."""
    fresh = []
    for rq in eng.paths.values():
        if now >= config_due(rq.cfg, rq.cfg_at):
            try:
                cfg = ask_path_config(eng, rq.domain, rq.source_name, rq.site)
            except PolicyError:
                cfg = rq.cfg  # keep what the path has; asked again at the next refresh
                eng.metrics.totals[metrics.HOOK_FAILED] += 1
            fresh.append((rq, cfg))
    undo: list[tuple[Any, ...]] = [(eng.refresh_at, eng.metrics.totals[metrics.HOOK_FAILED])]
    for rq, cfg in fresh:
        old = rq.cfg
        undo.append((rq, old, rq.cfg_at, rq.conn_throttle, rq.msg_throttle, rq.msg_throttles))
        rq.cfg = cfg
        rq.cfg_at = now
        if cfg != old:
            eng.refresh_throttles(rq, old)
    eng.refresh_at = min((config_due(rq.cfg, rq.cfg_at) for rq in eng.paths.values()),
                         default=math.inf)
    return undo


def undo_refresh(eng: Core, undo: list[tuple[Any, ...]]) -> None:
    """Put back what `refresh_due` changed (the event was refused after it)."""
    eng.refresh_at = undo[0][0]
    eng.metrics.totals[metrics.HOOK_FAILED] = undo[0][1]
    for rq, cfg, cfg_at, conn_throttle, msg_throttle, msg_throttles in undo[1:]:
        rq.cfg, rq.cfg_at = cfg, cfg_at
        rq.conn_throttle, rq.msg_throttle = conn_throttle, msg_throttle
        rq.msg_throttles = msg_throttles


def pick_source(eng: Core, pool: str) -> str:
    """The next egress source of `pool` (smooth weighted round robin)."""
    rr = eng.pools.get(pool)
    if rr is None:  # not staged (a caller outside the promotion handlers)
        rr = WeightedRoundRobin(eng.policy.egress_pool(pool).entries)
        eng.pools[pool] = rr
    return rr.pick()


def path_config(eng: Core, rq: ReadyQueue, now: float) -> EgressPathConfig:
    """The path's config, re-asked of the policy when due (`config_due`; a
    raising hook keeps the current one until the next refresh)."""
    if now >= config_due(rq.cfg, rq.cfg_at):
        old = rq.cfg
        try:
            rq.cfg = ask_path_config(eng, rq.domain, rq.source_name, rq.site)
        except PolicyError:
            eng.metrics.totals[metrics.HOOK_FAILED] += 1
        rq.cfg_at = now
        if rq.cfg != old:
            eng.refresh_throttles(rq, old)
    return rq.cfg  # type: ignore[no-any-return]


def sts_policy(eng: Core, domain: str, now: float) -> tuple[bool, MtaStsPolicy | None]:
    """(known, policy) for `domain`; asks for it (once) when unknown or stale."""
    cached = eng.sts.get(domain)
    if cached is not None and cached[1] > now:
        return True, cached[0]
    if domain not in eng.sts_pending:
        eng.sts_pending[domain] = True
        eng.out.append(FetchMtaSts(domain=domain))
    return False, None


def tlsa_for(eng: Core, host: str, port: int, conn: int
             ) -> tuple[bool, tuple[TlsaRecord, ...], bool]:
    """(known, records, secure) for ``_port._tcp.host``; asks once when unknown
    and registers `conn` to be resumed by the answer."""
    key = (host, port)
    cached = eng.tlsa.get(key)
    if cached is not None:
        return True, cached[0], cached[1]
    waiting = eng.tlsa_waiting.get(key)
    if waiting is None:
        eng.tlsa_waiting[key] = [conn]
        eng.out.append(ResolveTlsa(host=host, port=port))
    else:
        waiting.append(conn)
    return False, (), False
