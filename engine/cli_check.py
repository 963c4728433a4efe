"""``egress check``: a policy's effective egress path config for some domains.

Kept apart from `engine.cli` (which stays a thin table of subcommands) because
this command renders as much as it computes: the queue config, the pool, each
source's path config with what differs from the defaults, the shaping files'
values, rules, warm-up plans and curfews, and, with ``--spool``, what is in
force in a running service.  Heavy modules are imported inside the functions,
as in `engine.cli`: ``egress --help`` must not pay for them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import EgressPathConfig
    from engine.policy import Policy

__all__ = ["add_check", "add_shaping", "cmd_check"]


_CHECK_NOTE = (
    "site_name is the domain itself: egress check does not resolve MX records. In delivery, "
    "domains whose MX hosts are the same share one site and so one egress path."
)


def add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="load a policy and print the effective egress path config for some domains",
        description="Load POLICY.py and print, for each domain, the queue config, the egress "
        "pool and the effective egress path configuration (secrets masked; values that differ "
        "from the defaults are marked). " + _CHECK_NOTE,
    )
    p.add_argument("policy", metavar="POLICY.py",
                   help="a Python file defining `policy = Policy()`, or a KumoMTA init.lua")
    p.add_argument(
        "--domain", action="append", dest="domains", metavar="D",
        help="a destination domain (repeatable; default: example.com)",
    )
    p.add_argument("--source", metavar="NAME", help="only this egress source (default: the pool's)")
    p.add_argument("--tenant", default="", help="tenant passed to get_queue_config")
    p.add_argument("--campaign", default="", help="campaign passed to get_queue_config")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--only-set", action="store_true", help="show only the keys that differ from the defaults"
    )
    add_shaping(p)
    p.add_argument("--spool", metavar="DIR",
                   help="a service's spool: show each path's config in force there (the "
                   "journal read, not changed), the shaping rules in force and why, and the "
                   "shaping files the spool keeps (used unless --shaping is given)")
    p.set_defaults(func=cmd_check)


def add_shaping(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shaping", action="append", default=[], metavar="FILE",
                   help="a KumoMTA shaping.toml, merged over the policy's egress paths with "
                   "its automation rules (repeatable; later files merge over earlier ones)")


def _load_shaping(files: list[str]) -> Any:
    """The `--shaping` files read and merged (engine.shaping), or None."""
    from engine.live.reload import read_shaping

    return read_shaping(files)


def _check_domain(policy: Policy, domain: str, args: argparse.Namespace,
                  shaping: Any = None, eng: Any = None) -> dict[str, Any]:
    from engine.live.tls_check import verify_tls_config

    queue = policy.queue_config(domain, args.tenant, args.campaign, "")
    pool = policy.egress_pool(queue.pool)
    names = [args.source] if args.source else [name for name, _ in pool.entries]
    paths = []
    for name in names:
        source = policy.egress_source(name)
        cfg = policy.egress_path_config(domain, source.name, domain)
        shaped = {}
        if shaping is not None:  # no MX is resolved here: MXSuffix providers cannot match
            shaped = {"values": sorted(shaping.values(domain, source.name, domain)),
                      "files": list(shaping.files),
                      "rules": [_rule_line(r) for r in shaping.rules(domain, domain)],
                      **_gate_lines(shaping, domain, source.name, args)}
            cfg = shaping.overlay(cfg, domain, source.name, domain)
        site = domain
        live: dict[str, Any] = {}
        if eng is not None:  # --spool: the site the service resolved, the config in force
            cfg, site, live = _in_spool(eng, domain, source.name, cfg)
        verify_tls_config(cfg)
        paths.append({
            **({"shaping": shaped} if shaping is not None else {}),
            **live,
            "source": source.name,
            "site_name": site,
            "egress_source": source.to_dict(),
            "egress_path": cfg.to_dict(),
            "non_default": sorted(cfg.non_default()),
            "_cfg": cfg,
        })
    return {
        "domain": domain,
        "queue_config": queue.to_dict(),
        "egress_pool": pool.to_dict(),
        "paths": paths,
    }


def _in_spool(eng: Any, domain: str, source: str, cfg: Any) -> tuple[Any, str, dict[str, Any]]:
    from engine.ready import ready_queue_name
    from engine.shaping_rules import in_force

    ds = eng.domains.get(domain)
    site = ds.site if ds is not None and ds.site else domain
    rq = eng.paths.get(ready_queue_name(source, site))
    return (rq.cfg if rq is not None else cfg, site,
            {"in_force": in_force(eng, source=source, site=site)})
def _gate_lines(shaping: Any, domain: str, source: str,
                args: argparse.Namespace) -> dict[str, list[str]]:
    """The shaping files' warm-up plan for `source` and the curfews covering the
    domain's queue, one line each (docs/SHAPING.md)."""
    out: dict[str, list[str]] = {}
    plan = shaping.warmup.get(source)
    if plan is not None:
        steps = ", ".join(f"{p} " + " ".join(f"{d}={c if c is not None else 'unlimited'}"
                                             for d, c in sched.steps)
                          for p, sched in plan.schedules.items())
        out["warmup"] = [f"warm-up of {source}: day 1 = {plan.start} ({plan.tz.key}); {steps}"
                         + (f"; own schedules for {', '.join(plan.providers)}"
                            if plan.providers else "")]
    held = [c for c in shaping.curfews
            if c.matches(domain, args.tenant or "", args.campaign or "")]
    if held:
        out["curfews"] = [f"curfew {c.name}: held {c.hours} {c.tz.key}" for c in held]
    return out


def cmd_check(args: argparse.Namespace) -> int:
    """``egress check POLICY.py [--domain D ...] [--source NAME] [--json]``."""
    from engine.policy import Policy
    from engine.shaping_load import combine

    policy = Policy.from_file(args.policy)
    extra = _load_shaping(args.shaping)
    eng = None
    spool_shaping: dict[str, Any] = {}
    if args.spool:  # the shaping files the spool keeps, unless --shaping is given
        from engine.live.spool_files import shaping_in_spool

        kept_shaping, kept = shaping_in_spool(args.spool)
        spool_shaping = {"files": [k.file for k in kept or ()],
                         "copies": [str(k.copy) for k in kept or ()],
                         "used": bool(kept) and not args.shaping}
        extra = extra if args.shaping else kept_shaping
    shaping = combine(policy.shaping, extra)
    if args.spool:
        from engine.live.journal_read import engine_from_spool

        policy.shaping = shaping
        eng = engine_from_spool(args.spool, policy)
    results = [_check_domain(policy, d, args, shaping, eng)
               for d in (args.domains or ["example.com"])]
    if args.json:
        for r in results:
            for path in r["paths"]:
                path.pop("_cfg")
        spooled = {"spool_shaping": spool_shaping} if args.spool else {}
        json.dump({"policy": args.policy, "note": _CHECK_NOTE, **spooled, "domains": results},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    notes = []
    if args.spool:
        files = ", ".join(spool_shaping["files"]) or "none"
        used = " (not used: --shaping given)" if args.shaping and spool_shaping["files"] else ""
        notes.append(f"shaping files kept in the spool{used}: {files}")
    _print_check(args.policy, results, args.only_set, notes)
    return 0


def _rule_line(rule: Any) -> str:
    """One automation rule as `egress check` shows it."""
    trigger = "Immediate" if rule.threshold is None else f"Threshold {rule.threshold.limit}" \
        f"/{rule.threshold.period:g}s"
    acts = ", ".join(a.kind if a.name is None else f"{a.kind} {a.name}" for a in rule.actions)
    return f"{rule.rule_id}: {trigger} -> {acts} for {rule.duration:g}s"


_DURATION_KEYS = frozenset({"retry_interval", "max_retry_interval", "max_age"})


def _show(key: str, value: Any) -> str:
    from engine.durations import format_duration

    if value is None:
        return "none"
    if (key.endswith("_timeout") or key in _DURATION_KEYS) and isinstance(value, float):
        return format_duration(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(empty)"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "(empty)"
    return str(value)


def _print_check(policy_path: str, results: list[dict[str, Any]], only_set: bool,
                 notes: Sequence[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    console.print(f"[bold]policy[/bold] {policy_path}")
    for note in notes:
        console.print(note, soft_wrap=True, markup=False)
    console.print(f"[dim]{_CHECK_NOTE}[/dim]")
    for r in results:
        q = r["queue_config"]
        pool = r["egress_pool"]
        entries = ", ".join(f"{e['name']} (weight {e['weight']})" for e in pool["entries"])
        console.print()
        console.print(f"[bold]domain {r['domain']}[/bold]")
        console.print("  queue: " + ", ".join(f"{k}={_show(k, v)}" for k, v in q.items()))
        console.print(f"  egress pool {pool['name']!r}: {entries}")
        # Sources whose path config is the same share one table.
        groups: dict[EgressPathConfig, list[dict[str, Any]]] = {}
        for path in r["paths"]:
            groups.setdefault(path["_cfg"], []).append(path)
        for cfg, paths in groups.items():
            sources = ", ".join(p["source"] for p in paths)
            console.print(f"  egress source {sources}:")
            for p in paths:
                extra = ", ".join(
                    f"{k}={v}" for k, v in p["egress_source"].items() if k != "name" and v
                )
                if extra:
                    console.print(f"    {p['source']}: {extra}")
            title = f"egress path {{{sources}}}->{r['domain']}" if len(paths) > 1 else (
                f"egress path {sources}->{r['domain']}"
            )
            console.print(f"  [bold]{title}[/bold]")
            table = Table()
            table.add_column("key", no_wrap=True)
            table.add_column("value")
            table.add_column("", no_wrap=True)
            changed = set(paths[0]["non_default"])
            shaped = paths[0].get("shaping")
            by_shaping = set(shaped["values"]) if shaped else set()
            for key, value in paths[0]["egress_path"].items():
                if only_set and key not in changed:
                    continue
                mark = "set" if key in changed else "default"
                mark = "shaping" if key in by_shaping else mark
                style = "bold yellow" if key in changed else None
                table.add_row(key, _show(key, value), mark, style=style)
            console.print(table)
            console.print(f"  {len(changed)} of {len(cfg.KEYS)} keys differ from the defaults")
            if shaped:
                console.print(f"  shaping ({', '.join(shaped['files'])}): "
                              f"{len(by_shaping)} keys set; automation rules watching this path:")
                for line in shaped["rules"] or ["(none)"]:
                    console.print(f"    {line}")
                for line in shaped.get("warmup", []) + shaped.get("curfews", []):
                    console.print(f"  {line}")
            if "in_force" in paths[0]:
                from engine.shaping_rules import describe

                console.print("  shaping in force (--spool):")
                for entry in paths[0]["in_force"]:
                    console.print(f"    {describe(entry)}")
                if not paths[0]["in_force"]:
                    console.print("    (none)")
