"""The ``egress`` command line: one thin function per subcommand.

This is the one module that knows every part (DESIGN.md), so it stays thin
and imports heavy modules (`rich`, `sim`, `engine.live`) lazily inside the
commands that need them: ``egress --help`` must not pay for SimPy or OpenSSL.

Each subcommand is a pair of functions, ``_add_<name>(subparsers)`` that
declares its arguments and sets ``func``, and ``cmd_<name>(args) -> int`` that
runs it; `_REGISTRARS` lists the ``_add_`` functions in help order.  To add a
subcommand (simulate, sweep, deliver, replay, lab, compare), write the pair
and append to `_REGISTRARS`; `main` needs no change (``egress check``, which
renders more than it runs, has its pair in `engine.cli_check`).  A user error
(`EgressError`: a bad key, a broken policy) is printed as one line on stderr
with exit status 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from engine.cli_check import add_check, add_shaping
from engine.errors import EgressError

__all__ = ["main"]

# -- egress simulate / egress sweep (bodies in sim.commands) --------------------


def _add_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate", help="simulate a scenario on a simulated clock",
        description="Run SCENARIO's traffic through the engine against its simulated world, "
        "on a simulated clock, and print a summary (deliveries, failures, drain time, "
        "time to deliver, peak connections and ready depths). --out also writes "
        "records.jsonl, series.npz, summary.json and plot.png.",
    )
    p.add_argument("scenario", help="a scenario TOML file (see scenarios/)")
    p.add_argument("--out", help="write records.jsonl, series.npz, summary.json, plot.png here")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override a scenario value, e.g. egress_path.connection_limit=16",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw plot.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    p.add_argument(
        "--records", choices=("outcomes", "all", "none"), default="outcomes",
        help="records.jsonl holds: outcomes (Reception, Delivery, TransientFailure, Bounce, "
             "Expiration, AdminBounce; default), all (also a Delayed per re-delay) or none; "
             "every record is counted in the summary either way",
    )
    p.add_argument(
        "--exact", action="store_true",
        help="re-delay each message that meets a full ready queue by its own draw, as "
             "KumoMTA does (the default samples those re-delays lazily from the same "
             "distribution and counts them without a Delayed record each; --records all "
             "implies --exact)",
    )
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from sim.commands import simulate

    return simulate(args)


def _add_sweep(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sweep", help="simulate every combination of some values, over seeds",
        description="Simulate SCENARIO once per combination of the --vary values and per "
        "seed (in worker processes), and print one row per combination: the mean (and "
        "spread over seeds) of drain time, deliveries, failures, p95 time to deliver and "
        "peak connections.",
    )
    p.add_argument("scenario", help="a scenario TOML file")
    p.add_argument("--vary", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="a scenario key and the values to try (repeatable)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a fixed override")
    p.add_argument("--seeds", type=int, default=1, help="seeds per combination (default 1)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: one per core)")
    p.add_argument("--scheduler", help="a Dask scheduler address (needs egress[dask])")
    p.add_argument("--csv", help="also write the table as CSV here")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from sim.commands import sweep

    return sweep(args)


# -- egress deliver / egress replay (bodies in engine.live.deliver_ops, bridge.replay) --


def _add_deliver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "deliver", help="run the live MTA: accept mail by SMTP, journal it, deliver it",
        description="Accept mail on --listen (relaying only for --allow-network clients, "
        "loopback by default), commit it to the SQLite journal in --spool before the 250, "
        "and deliver it as POLICY.py says. SIGTERM or SIGINT stops gracefully; a restart "
        "recovers the queue from the journal. Note: the default prohibited_hosts refuses "
        "127.0.0.0/8 and ::1; a policy delivering to a local server must set "
        "prohibited_hosts = [].",
    )
    p.add_argument("--policy", required=True, metavar="POLICY.py",
                   help="a Python file defining `policy = Policy()`, or a KumoMTA init.lua")
    p.add_argument("--spool", required=True, metavar="DIR", help="journal and bodies go here")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="SMTP listener (default: a Lua policy's kumo.start_esmtp_listener, "
                   "else 127.0.0.1:2525)")
    p.add_argument("--resolver", metavar="HOST:PORT",
                   help="ask only this DNS server (default: the system's resolv.conf)")
    p.add_argument("--tls-cafile", metavar="FILE", help="trust these CAs for STARTTLS/MTA-STS")
    p.add_argument("--log-dir", metavar="DIR", help="write JSON-lines log records here")
    p.add_argument("--metrics-port", type=int, metavar="N", help="serve Prometheus /metrics")
    p.add_argument("--allow-network", action="append", metavar="CIDR", dest="allow_networks",
                   help="clients that may relay without AUTH (repeatable; default loopback)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, how long transactions may finish (default 10)")
    p.add_argument("--snapshot-every", type=int, default=20_000, metavar="N",
                   help="write an engine snapshot every N journaled events")
    p.add_argument("--max-connections", type=int, default=1024, metavar="N",
                   help="SMTP connections at once; more are told 421 (default 1024)")
    p.add_argument("--max-connections-per-client", type=int, default=64, metavar="N",
                   help="SMTP connections at once from one address (default 64)")
    p.add_argument("--max-buffered-data", type=int, default=256 * 1024 * 1024, metavar="BYTES",
                   help="DATA held in memory by all connections; a message over it gets "
                   "452 (default 256 MiB)")
    p.add_argument("--auth-max-failures", type=int, default=10, metavar="N",
                   help="AUTH failures per client in 15 minutes before its AUTH is refused "
                   "(default 10; each failure's reply is also delayed)")
    p.add_argument("--accept-loss", action="store_true",
                   help="start even if the journal lacks events it committed (a lost WAL)")
    from engine.live.deliver_ops import add_arguments  # the operating flags (HTTP, TLS, logs)

    add_arguments(p)
    p.add_argument("--reap-after", type=float, default=60.0, metavar="SECONDS",
                   help="drop an idle path, queue or domain (nothing queued, no connection) "
                   "within this long after it went idle (default 60)")
    p.add_argument("--redis", metavar="URL",
                   help="share every throttle and connection limit not written local: "
                   "through this Redis, e.g. redis://127.0.0.1:6379/0 (as KumoMTA's "
                   "configure_redis_throttles)")
    p.add_argument("--redis-unavailable", choices=("stop", "local"), default="stop",
                   help="when Redis does not answer: stop delivering on shared paths "
                   "(KumoMTA's behaviour, the default) or enforce 1/--nodes of each limit locally")
    p.add_argument("--nodes", type=int, metavar="N",
                   help="how many processes share the limits (the local fallback's 1/N; "
                   "default --workers)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run N delivery processes on the one --listen port (SO_REUSEPORT), "
                   "each with its spool SPOOL/worker-I; needs --redis")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="the event loop: uvloop where it is installed (auto, the default), "
                   "or asyncio's own")
    p.add_argument("--allocator", choices=("auto", "jemalloc", "pymalloc"), default="auto",
                   help="what allocates Python's objects: jemalloc where it is installed "
                   "(auto, the default: a burst's memory goes back to the system once "
                   "reaped), or CPython's pymalloc (engine.live.memory)")
    add_shaping(p)
    p.add_argument("--no-shaping", action="store_true",
                   help="no shaping files, not even those the spool keeps (without --shaping "
                   "the spool's copies of the last ones are used)")
    p.set_defaults(func=cmd_deliver)


def cmd_deliver(args: argparse.Namespace) -> int:
    """``egress deliver --policy POLICY.py --spool DIR [--listen HOST:PORT] ...``."""
    from engine.errors import ConfigError
    from engine.live.deliver_ops import run_deliver, service_options
    from engine.live.listener_limits import LimitSettings

    try:
        limits = LimitSettings(
            max_connections=args.max_connections,
            max_connections_per_client=args.max_connections_per_client,
            max_buffered_data=args.max_buffered_data, auth_max_failures=args.auth_max_failures)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("Listener ", "--").replace("_", "-")) from None
    if args.workers < 1:
        raise ConfigError(f"--workers: {args.workers} is not valid; expected an integer >= 1")
    if args.no_shaping and args.shaping:
        raise ConfigError("--no-shaping: cannot be given with --shaping")
    from engine.live.loops import resolve_loop

    resolve_loop(args.loop)  # a missing uvloop is one line, before anything starts
    if args.workers > 1:
        if args.redis is None:
            raise ConfigError("--workers: more than one worker needs --redis, or each would "
                              "enforce every limit by itself (N times the rate)")
        if args.listen.rsplit(":", 1)[-1] == "0":
            raise ConfigError("--workers: --listen needs a fixed port for the workers to share")
        from engine.live.workers import run_workers

        argv = args.argv[args.argv.index("deliver") + 1:]
        if args.nodes is None:
            argv += ["--nodes", str(args.workers)]
        return run_workers(argv, args.workers, spool=args.spool, log_dir=args.log_dir,
                           metrics_port=args.metrics_port)
    from engine.live.memory import use_allocator

    use_allocator(args.allocator)  # may re-execute this command line on jemalloc
    shared = None
    if args.redis is not None:
        import uuid

        from engine.shared_limits import SharedLimitsConfig

        if not args.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--redis: {args.redis!r} is not a Redis URL; expected "
                              "redis://HOST:PORT/DB")
        try:
            nodes = 1 if args.nodes is None else args.nodes
            shared = SharedLimitsConfig(node=uuid.uuid4().hex[:12], nodes=nodes,
                                        share="even" if args.reuse_port else "first-come",
                                        on_unavailable=args.redis_unavailable)
        except ConfigError as exc:
            raise ConfigError(f"--{exc}") from None
    return run_deliver(
        args.policy, args.spool, listen=args.listen, resolver=args.resolver,
        tls_cafile=args.tls_cafile, log_dir=args.log_dir, metrics_port=args.metrics_port,
        allowed_networks=args.allow_networks, grace=args.grace,
        snapshot_every=args.snapshot_every, limits=limits, accept_loss=args.accept_loss,
        **service_options(args),
        reap_after=args.reap_after,
        redis=args.redis, shared_limits=shared, reuse_port=args.reuse_port,
        shaping_files=[] if args.no_shaping else args.shaping or None, loop=args.loop,
    )


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay", help="replay a live journal's traffic through the simulator with another policy",
        description="Read the messages (and their arrival times) from SPOOL's journal, "
        "recompute what really happened by replaying the journal with the policy it was "
        "delivered with (SPOOL/policy.py, or --original) and the shaping files in force "
        "(kept in SPOOL, or --shaping), simulate the same arrivals with --policy, and print "
        "both outcomes side by side.",
    )
    p.add_argument("spool", metavar="SPOOL", help="the spool directory of `egress deliver`")
    p.add_argument("--policy", required=True, metavar="OTHER.py", help="the policy to simulate")
    p.add_argument("--original", metavar="POLICY.py",
                   help="the policy the journal was written with (default SPOOL/policy.py)")
    p.add_argument("--world", metavar="SCENARIO.toml",
                   help="take [domains], [hosts] and [host_defaults] from this scenario "
                   "(default: a healthy, fast host for every domain)")
    p.add_argument("--shaping", action="append", metavar="FILE",
                   help="a shaping file in force when the journal was written (repeatable; "
                   "default: the copies SPOOL keeps); both sides run with them")
    p.add_argument("--seed", type=int, default=1, help="the simulation's seed")
    p.add_argument("--out", metavar="DIR", help="write comparison.json and the simulated run")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    """``egress replay SPOOL --policy OTHER.py [--shaping FILE] [--world SCENARIO.toml]
    [--out DIR]``."""
    from bridge.replay import replay_command

    return replay_command(args)


# -- egress lab / egress compare (bodies in lab.commands) -----------------------


def _add_lab(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab", help="a scenario's world as real servers on loopback (and --run: deliver into it)",
        description="Start one SMTP server per scenario host on its own 127.0.0.x address and "
        "a DNS server on 127.0.0.1 answering the scenario's MX and A records. With --run, "
        "deliver the scenario's traffic into it with the live engine and write what "
        "egress simulate writes.",
    )
    p.add_argument("scenario", help="a scenario TOML file (see scenarios/)")
    p.add_argument("--run", action="store_true",
                   help="deliver the scenario's traffic into the lab with the live engine")
    p.add_argument("--duration", metavar="D",
                   help="how long to serve (default: until Ctrl-C; with --run: the horizon)")
    p.add_argument("--out", help="with --run: write records.jsonl, series.npz, summary.json, "
                   "plot.png here")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a scenario value, e.g. egress_path.connection_limit=16")
    p.add_argument("--port", type=int, default=0, help="SMTP port of every host (default: free)")
    p.add_argument("--dns-port", type=int, default=0, help="DNS port (default: free)")
    p.add_argument("--separate-process", action="store_true",
                   help="with --run: the lab's servers in a child process, off the engine's loop")
    p.add_argument("--no-plot", action="store_true", help="do not draw plot.png")
    p.set_defaults(func=cmd_lab)


def cmd_lab(args: argparse.Namespace) -> int:
    from lab.commands import lab

    return lab(args)


def _add_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare", help="a simulated run against a lab run of the same scenario",
        description="Put two runs of the same scenario side by side (the --out of egress "
        "simulate and of egress lab --run): drain time, deliveries, failures, peak "
        "connections and the distance between their delivery curves. Runs of different "
        "scenarios are refused unless --force; --plot draws the curves.",
    )
    p.add_argument("sim_dir", metavar="SIM_DIR", help="the --out of egress simulate")
    p.add_argument("lab_dir", metavar="LAB_DIR", help="the --out of egress lab --run")
    p.add_argument("--plot", metavar="FILE",
                   help="draw the curves here (a .png; never inside SIM_DIR or LAB_DIR)")
    p.add_argument("--force", action="store_true",
                   help="compare even if the runs are of different scenarios")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from lab.commands import compare

    return compare(args)


# -- egress journal check / salvage (bodies in engine.live.journal_check) --------


def _add_journal(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "journal", help="check a spool's journal, or salvage what is readable of it",
        description="check SPOOL: what the journal holds and what is wrong with it (exit 1 "
        "if anything is). salvage SPOOL OUT: copy every readable event, body and snapshot, "
        "and the policy, shaping and node-id files the spool keeps, into the new spool OUT, "
        "which `egress deliver --spool OUT` can then use.",
    )
    p.add_argument("action", choices=("check", "salvage"))
    p.add_argument("spool", metavar="SPOOL")
    p.add_argument("out", metavar="OUT", nargs="?", help="salvage: the new spool directory")
    p.set_defaults(func=cmd_journal)


def cmd_journal(args: argparse.Namespace) -> int:
    """``egress journal check SPOOL`` / ``egress journal salvage SPOOL OUT``."""
    from engine.errors import ConfigError
    from engine.live.journal_check import check, salvage

    if args.action == "check":
        lines, ok = check(args.spool)
        print("\n".join(lines))
        return 0 if ok else 1
    if args.out is None:
        raise ConfigError("egress journal salvage needs SPOOL and OUT (a new directory)")
    print("\n".join(salvage(args.spool, args.out)))
    return 0


_REGISTRARS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    add_check,
    _add_simulate,
    _add_sweep,
    _add_deliver,
    _add_replay,
    _add_lab,
    _add_compare,
    _add_journal,
]


def _add_ctl(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engine.live.ctl import add_parser  # `egress ctl`: the admin API's client

    add_parser(sub)


_REGISTRARS.append(_add_ctl)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="egress",
        description="egress: an outbound-mail queue engine on KumoMTA's egress-path model.",
    )
    parser.add_argument("--version", action="version", version=f"egress {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _REGISTRARS:
        register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("egress")
    except PackageNotFoundError:  # run from a checkout without installing it
        return "(not installed)"


# Modules that are not dependencies of `pip install -e .`, with what brings them.
_EXTRAS = {
    "dask": "pip install 'egress[dask]'",
    "distributed": "pip install 'egress[dask]'",
    "hvac": "pip install 'egress[vault]'",
    "aiosmtpd": "pip install aiosmtpd",
}


def _missing_module(exc: ModuleNotFoundError) -> str:
    name = (exc.name or "").partition(".")[0]
    hint = _EXTRAS.get(name, f"pip install -e . (from the egress checkout) or pip install {name}")
    return f"this needs the Python package {name!r}, which is not installed: {hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``egress`` with `argv` (default: the process's arguments); return the
    exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    func = getattr(args, "func", None)
    if func is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help(sys.stderr)
        return 2
    if extra:
        # argparse reports a subcommand's unknown flag with the top-level usage;
        # the subcommand's own usage is the one that helps.
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(func(args))
    except EgressError as exc:
        print(f"egress {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        print(f"egress {args.command}: error: {_missing_module(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`egress check ... | head`): not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's flush quiet
        return 0
    except KeyboardInterrupt:
        print(f"egress {args.command}: interrupted", file=sys.stderr)
        return 130


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    return parser


if __name__ == "__main__":
    sys.exit(main())
