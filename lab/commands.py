"""The bodies of `egress lab` and `egress compare` (engine/cli.py stays thin).

``egress lab SCENARIO`` starts the lab and keeps it up (for `--duration`, or
until Ctrl-C), printing where its DNS server and SMTP servers are and how to
point a resolver at them; at the end it prints each host's counters.
``egress lab SCENARIO --run`` delivers the scenario's traffic into the lab
with the live engine and prints the same summary ``egress simulate`` prints
(its table code is reused), writing the same files under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.durations import positive_duration
from engine.errors import EgressError


def _scenario(args: argparse.Namespace) -> Any:
    from sim.scenario import Scenario

    sets = list(args.set or [])
    if args.seed is not None:
        sets.append(f"seed={args.seed}")
    return Scenario.from_toml(args.scenario, sets)


def lab(args: argparse.Namespace) -> int:
    """``egress lab SCENARIO [--run] [--duration D] [--out DIR] ...``."""
    scenario = _scenario(args)
    duration = positive_duration(args.duration, "--duration")
    # A pipe or a log gets 120 columns, not 80: the tables are wide.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    if args.run:
        return asyncio.run(_run(scenario, args, duration, console))
    return asyncio.run(_serve(scenario, args, duration, console))


async def _start(scenario: Any, args: argparse.Namespace) -> Any:
    from lab.world import Lab

    lab = Lab(scenario, port=args.port or 0, dns_port=args.dns_port or 0)
    try:
        await lab.start()
    except OSError as exc:
        lab.close()
        raise EgressError(f"cannot start the lab: {_which_address(exc, args)}") from None
    return lab


def _which_address(exc: OSError, args: argparse.Namespace) -> str:
    """Name the flag and address that would not open: the DNS server's UDP
    port (the lab binds it first, and the OS error does not say which), else
    the SMTP port on the hosts' addresses."""
    import socket

    reason = (exc.strerror or str(exc)).lower()
    if args.dns_port:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", args.dns_port))
        except OSError:
            return f"--dns-port {args.dns_port}: 127.0.0.1:{args.dns_port} (UDP): {reason}"
        finally:
            probe.close()
    if args.port:
        return f"--port {args.port}: the SMTP port on the hosts' 127.0.0.x addresses: {exc}"
    return str(exc)


async def _serve(scenario: Any, args: argparse.Namespace, duration: float | None,
                 console: Console) -> int:
    lab = await _start(scenario, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        _print_lab(console, lab)
        if duration is None:
            console.print("[dim]serving until Ctrl-C[/dim]")
            await stop.wait()
        else:
            console.print(f"[dim]serving for {duration:g} s (Ctrl-C stops sooner)[/dim]")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
    finally:
        await lab.stop()
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        print_counters(console, lab.counters())
        lab.close()
    return 0


def _print_lab(console: Console, lab: Any) -> None:
    d = lab.describe()
    host, port = d["dns"].rsplit(":", 1)
    console.print(f"[bold]lab for {lab.scenario.name}[/bold]")
    console.print(f"DNS server  {d['dns']}  (UDP; MX and A records of every domain)")
    console.print(f"SMTP port   {d['smtp_port']} on every host address")
    console.print(f"TLS CA      {d['cafile']}")
    table = Table(show_header=True)
    table.add_column("host")
    table.add_column("lab address(es)")
    for name, addrs in d["hosts"].items():
        table.add_row(name, ", ".join(addrs))
    console.print(table)
    console.print("point a resolver at it:")
    console.print(f"  dig @{host} -p {port} MX <domain>")
    console.print(f"  LiveResolver(nameservers=[{host!r}], port={port})")
    console.print("  and a policy with prohibited_hosts = [] and smtp_port = "
                  f"{d['smtp_port']} (loopback is prohibited by default)")


def print_counters(console: Console, counters: dict[str, dict[str, int]]) -> None:
    """One row per host: what its server saw."""
    columns = (("connections", "conns"), ("peak_connections", "peak"), ("accepted", "accepted"),
               ("deferred", "4xx"), ("rejected", "5xx"), ("refused", "refused"),
               ("busy", "421"), ("blackholed", "silent"), ("tls_failures", "tls fail"))
    table = Table(title="lab servers")
    table.add_column("host", no_wrap=True)
    for _, label in columns:
        table.add_column(label, justify="right", no_wrap=True)
    for host, c in counters.items():
        table.add_row(host, *(f"{c[k]:,}" for k, _ in columns))
    console.print(table)


async def _run(scenario: Any, args: argparse.Namespace, duration: float | None,
               console: Console) -> int:
    from lab.run import run_in_lab
    from sim.commands import print_summary

    if args.separate_process:
        from lab.process import LabProcess

        lab: Any = LabProcess(scenario)
        try:
            await lab.start()
        except OSError as exc:
            raise EgressError(f"cannot start the lab: {exc}") from None
    else:
        lab = await _start(scenario, args)
    try:
        console.print(f"[dim]lab up: DNS {lab.dns.host}:{lab.dns.port}, SMTP port "
                      f"{lab.port}; delivering {scenario.name}[/dim]")
        result = await run_in_lab(scenario, lab=lab, horizon=duration,
                                  keep_records=args.out is not None)
    finally:
        await lab.stop()
        lab.close()
    print_summary(console, result)
    print_counters(console, result.summary["lab"]["hosts"])
    if args.out:
        written = result.write(args.out, plot=not args.no_plot)
        console.print("wrote " + ", ".join(str(p) for p in written))
    return 0


def compare(args: argparse.Namespace) -> int:
    """``egress compare SIM_DIR LAB_DIR [--plot FILE] [--force] [--json]``."""
    import json

    from lab.compare import CompareError, compare_dirs

    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        for d in (args.sim_dir, args.lab_dir):
            if plot.resolve().is_relative_to(Path(d).resolve()):
                raise CompareError(f"--plot {args.plot}: inside the input directory {d}; "
                                   "give a path outside SIM_DIR and LAB_DIR")
    result = compare_dirs(args.sim_dir, args.lab_dir, force=args.force)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_comparison(result)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        result.plot(plot)
        if not args.json:
            print(f"wrote {plot}")
    return 0


def print_comparison(result: Any) -> None:
    """The comparison's rows as a table that fits the terminal (long figure
    names and paths fold onto more lines rather than running off the edge)."""
    from lab.compare import cell

    table = Table(title=f"{result.sim.summary.get('scenario', '')}: "
                  f"{result.sim.path} (sim) vs {result.lab.path} (lab)")
    table.add_column("figure", overflow="fold")
    for name in ("sim", "lab", "lab vs sim"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in result.rows:
        diff = "n/a" if r.rel_diff is None else f"{r.rel_diff:+.1%}"
        table.add_row(r.name, cell(r, r.sim), cell(r, r.lab), diff)
    Console(highlight=False).print(table)
