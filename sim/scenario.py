"""A scenario: the traffic, the remote world and the policy of one simulation.

`Scenario.from_toml(path)` reads the format of DESIGN.md ("Scenario files")
into a frozen tree of plain values; `from_dict` does the same for a dict (a
sweep builds its variants that way, through `sim.overrides`).  Everything is
validated up front, so a mistake in a scenario is reported before a
simulation starts, never half-way through one: each refusal is a
`ScenarioError` naming the file, the table path and the field, and what was
expected.

The egress-path and queue tables are validated by the engine's own
constructors (`make_egress_path`, `make_queue_config`), so the simulator
accepts exactly the keys a policy may use and cannot drift from them.
`Scenario.policy()` then builds an `engine.Policy` from those tables, or
loads the scenario's `policy = "policy.py"` file unchanged.

The reading itself lives in `sim.scenario_schema` (typed getters with error
paths, and `ScenarioError`), `sim.scenario_world` (domains and hosts),
`sim.traffic` (streams) and `sim.overrides`; this module holds the top level
and the result type, and is the only one of them that imports the others.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sim.overrides import apply_overrides
from sim.scenario_schema import ScenarioError, Table, join_path
from sim.scenario_world import (
    ClientSpec,
    DomainSpec,
    HostSpec,
    build_client,
    build_domain,
    check_host_fields,
    implicit_domain,
    made_up_addresses,
)
from sim.traffic import TrafficStream, build_traffic

if TYPE_CHECKING:
    from engine.config import EgressPathConfig
    from engine.policy import Policy
    from engine.queue_config import QueueConfig

__all__ = ["DEFAULT_HORIZON", "DEFAULT_START_EPOCH", "Scenario", "ScenarioError"]

DEFAULT_START_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
DEFAULT_HORIZON = 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One validated scenario.  Times are float seconds of simulated time
    (0 = the start), except `start_epoch`, the Unix time that 0 maps to in
    log records."""

    name: str
    description: str
    seed: int
    horizon: float
    start_epoch: float
    sample_interval: float
    traffic: tuple[TrafficStream, ...]
    domains: Mapping[str, DomainSpec]
    hosts: Mapping[str, HostSpec]
    egress_path: EgressPathConfig | None
    egress_path_domains: Mapping[str, EgressPathConfig]
    queue: QueueConfig | None
    policy_file: Path | None
    source: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    base_dir: Path | None = field(default=None, repr=False, compare=False)
    client: ClientSpec | None = None  # the [client] table; None = no client overhead
    nodes: int = 1  # MTA nodes sharing every limit through one store (sim.nodes)
    # shaping = [...]: the files (resolved paths) and what they load to (engine.shaping)
    shaping_files: tuple[Path, ...] = ()
    shaping: Any = field(default=None, repr=False, compare=False)

    # -- reading ---------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Iterable[str] = ()) -> Scenario:
        """Read and validate a scenario file, after applying ``KEY=VALUE`` overrides."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ScenarioError(f"{path}: cannot read the scenario: {e.strerror or e}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError(f"{path}: not valid TOML: {e}") from None
        overrides = list(overrides)
        if overrides:
            data = apply_overrides(data, overrides)
        data.setdefault("name", path.stem)
        return cls.from_dict(data, source=str(path), base_dir=path.parent)

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], source: str = "<dict>", base_dir: str | Path | None = None
    ) -> Scenario:
        """Validate a scenario given as a dict (the shape `tomllib` returns).

        `base_dir` is where a relative ``policy = "..."`` path is looked up
        (the scenario file's directory; the working directory when None).
        """
        if not isinstance(d, Mapping):
            raise ScenarioError(f"{source}: expected a table at the top level, got {d!r}")
        raw = copy.deepcopy(dict(d))
        top = Table(raw, "", source)
        base = Path(base_dir) if base_dir is not None else None
        name = top.string("name", "scenario")
        description = top.string("description", "")
        seed = top.integer("seed", 1)
        horizon = top.duration("horizon", DEFAULT_HORIZON)
        if horizon <= 0:
            raise top.expected("horizon", "a duration above 0", raw["horizon"])
        start_epoch = top.number("start_epoch", float(DEFAULT_START_EPOCH))
        sample_interval = top.duration("sample_interval", max(1.0, horizon / 1000.0))
        if sample_interval <= 0:
            raise top.expected("sample_interval", "a duration above 0", raw["sample_interval"])

        nodes = top.integer("nodes", 1)
        if nodes < 1:
            raise top.expected("nodes", "an integer >= 1", raw["nodes"])
        client = build_client(top)
        traffic = build_traffic(top)
        domains, hosts = _world(top, traffic)
        policy_file, egress, egress_domains, queue = _policy_tables(top, base, domains)
        _check_smart_hosts(top, queue, hosts)
        shaping_files, shaping = _shaping(top, base)
        top.finish()
        return cls(
            name=name,
            description=description,
            seed=seed,
            horizon=horizon,
            start_epoch=start_epoch,
            sample_interval=sample_interval,
            traffic=traffic,
            domains=MappingProxyType(domains),
            hosts=MappingProxyType(hosts),
            egress_path=egress,
            egress_path_domains=MappingProxyType(egress_domains),
            queue=queue,
            policy_file=policy_file,
            source=source,
            raw=MappingProxyType(raw),
            base_dir=base,
            client=client,
            nodes=nodes,
            shaping_files=shaping_files,
            shaping=shaping,
        )

    def with_overrides(self, overrides: Iterable[str]) -> Scenario:
        """A new scenario: this one's tables with ``KEY=VALUE`` overrides applied."""
        data = apply_overrides(copy.deepcopy(dict(self.raw)), list(overrides))
        return Scenario.from_dict(data, source=self.source, base_dir=self.base_dir)

    # -- using -----------------------------------------------------------------

    @property
    def message_count(self) -> int | None:
        """Messages the traffic submits, when fixed (None with Poisson streams)."""
        total = 0
        for s in self.traffic:
            if s.messages is None:
                return None
            total += s.messages
        return total

    def policy(self) -> Policy:
        """The `engine.Policy` to simulate: the policy file's, or one built from
        the `[egress_path]` (with per-domain overrides) and `[queue]` tables."""
        from engine.policy import Policy

        if self.policy_file is not None:
            return Policy.from_file(self.policy_file)
        from engine.config import make_egress_path
        from engine.queue_config import make_queue_config

        base = self.egress_path if self.egress_path is not None else make_egress_path()
        per_domain = dict(self.egress_path_domains)
        queue = self.queue if self.queue is not None else make_queue_config()
        policy = Policy()

        @policy.on("get_egress_path_config")
        def egress_path_config(domain: str, source_name: str, site_name: str) -> Any:
            return per_domain.get(domain.lower(), base)

        @policy.on("get_queue_config")
        def queue_config(domain: str, tenant: str, campaign: str, routing_domain: str) -> Any:
            return queue

        return policy


# -- the world: domains and hosts ---------------------------------------------------


def _world(top: Table, traffic: tuple[TrafficStream, ...]) -> tuple[dict, dict]:
    defaults_t = top.table("host_defaults", None)
    defaults: dict[str, Any] | None = None
    if defaults_t is not None:
        check_host_fields(defaults_t, allow_address=False)
        defaults = dict(defaults_t.data)

    hosts: dict[str, HostSpec] = {}
    for name, t in top.subtables("hosts"):
        merged = Table({**(defaults or {}), **t.data}, t.path, t.source)
        hosts[name.lower().rstrip(".")] = replace(
            check_host_fields(merged, allow_address=True), name=name.lower().rstrip(".")
        )

    def need_host(host: str, where: Table, key: str | None, why: str) -> None:
        if host in hosts:
            return
        if defaults is None:
            raise where.error(
                key, f"{why} host {host!r}, which is not declared in [hosts] "
                "(declare it, or add a [host_defaults] table for undeclared hosts)"
            )
        spec = check_host_fields(Table(dict(defaults), "host_defaults", top.source),
                                 allow_address=False)
        hosts[host] = replace(spec, name=host)

    domains: dict[str, DomainSpec] = {}
    for name, t in top.subtables("domains"):
        spec = build_domain(name, t)
        if spec.name in domains:
            raise t.error(None, f"domain {spec.name!r} is declared twice")
        domains[spec.name] = spec
        if spec.implicit:
            need_host(spec.name, t, None, "has no mx, so its mail goes to the")
        for i, mx in enumerate(spec.mx):
            need_host(mx.host, t, "mx", f"[{i}] names the")

    for i, stream in enumerate(traffic):
        for dom, _ in stream.domains:
            if dom in domains:
                continue
            if defaults is None:
                raise ScenarioError(
                    f"{top.source}: traffic[{i}].domain: domain {dom!r} is not declared in "
                    "[domains] (declare it, or add a [host_defaults] table so undeclared "
                    "domains are delivered to a host of that name)"
                )
            domains[dom] = implicit_domain(dom)
            need_host(dom, top, None, f"traffic[{i}] sends to")

    taken = {a for h in hosts.values() for a in h.addresses}
    fresh = made_up_addresses(taken)
    for name, host_spec in hosts.items():
        if not host_spec.addresses:
            hosts[name] = replace(host_spec, addresses=(next(fresh),))
    return domains, hosts


# -- the policy: tables or a file ---------------------------------------------------


def _shaping(top: Table, base: Path | None) -> tuple[tuple[Path, ...], Any]:
    """``shaping = ["shaping.toml", ...]``: KumoMTA shaping files, relative to the
    scenario's directory, read and merged in order (engine.shaping)."""
    names = top.raw("shaping", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise top.expected("shaping", "an array of shaping file paths", names)
    if not names:
        return (), None
    from engine.errors import ConfigError
    from engine.shaping_load import load_shaping

    paths = []
    files = []
    for name in names:
        path = Path(name)
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            files.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as e:
            raise top.error("shaping", f"cannot read the shaping file {str(path)!r}: "
                            f"{e.strerror or e}") from None
        paths.append(path)
    try:
        return tuple(paths), load_shaping(files)
    except ConfigError as e:
        raise top.error("shaping", str(e)) from None



def _policy_tables(
    top: Table, base: Path | None, domains: Mapping[str, DomainSpec]
) -> tuple[Path | None, Any, dict[str, Any], Any]:
    policy_name = top.string("policy", None)
    ep = top.table("egress_path", None)
    qt = top.table("queue", None)
    if policy_name is not None:
        for key, t in (("egress_path", ep), ("queue", qt)):
            if t is not None:
                raise top.error(key, f"cannot be given together with policy = {policy_name!r}: "
                                "the policy file decides the egress paths and queues")
        path = Path(policy_name)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise top.error("policy", f"expected the path of a policy file, but {str(path)!r} "
                            "does not exist")
        return path, None, {}, None

    from engine.config import make_egress_path
    from engine.queue_config import make_queue_config

    keys: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    if ep is not None:
        keys = {k: v for k, v in ep.data.items() if k != "domains"}
        for name, t in ep.subtables("domains"):
            overrides[name.lower().rstrip(".")] = (t, {**keys, **t.data})
    egress = _construct(top, "egress_path", make_egress_path, keys) if ep is not None else None
    per_domain = {}
    for dom, (t, merged) in overrides.items():
        if dom not in domains:
            raise t.error(None, f"overrides the egress path of domain {dom!r}, which is "
                          "not in [domains] and receives no traffic")
        per_domain[dom] = _construct(top, t.path, make_egress_path, merged)
    queue = None
    if qt is not None:
        queue = _construct(top, "queue", make_queue_config, dict(qt.data))
    return None, egress, per_domain, queue


def _check_smart_hosts(top: Table, queue: Any, hosts: Mapping[str, HostSpec]) -> None:
    """Each smart host of ``[queue] protocol`` must be a declared host: by name,
    or by one of its addresses for ``"[IP]"`` and ``{name, addr}`` entries."""
    smart = getattr(queue, "mx_list", None) or ()
    addresses = {a for h in hosts.values() for a in h.addresses}
    for i, host in enumerate(smart):
        if host.name in hosts or host.addr in addresses:
            continue
        shown = host.to_plain()
        raise ScenarioError(
            f"{top.source}: queue.protocol.smtp.mx_list[{i}]: {shown!r} is not a host of "
            "[hosts] (name a declared host, or give the address of one)")


def _construct(top: Table, path: str, fn: Any, keys: dict[str, Any]) -> Any:
    """Call an engine constructor, turning its ConfigError into a ScenarioError."""
    try:
        return fn(**keys)
    except (ValueError, TypeError) as e:
        message = str(e)
        # The engine's messages start with the key ("connection_limit: 0 is not
        # valid; ..."): fold it into the path so it reads like every other error.
        head, sep, rest = message.partition(": ")
        if sep and head in keys:
            raise ScenarioError(f"{top.source}: {join_path(path, head)}: {rest}") from None
        raise ScenarioError(f"{top.source}: {path}: {message}") from None
