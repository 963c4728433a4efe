"""`egress deliver`: its operating options as `Service` keywords, and its runner.

The command line (engine/cli.py) only declares the flags; this module checks
their values and builds what `Service` takes: the admin HTTP API's
addresses, trusted networks and bearer token; the SMTP listener's STARTTLS
context and AUTH users (bcrypt hashes, `engine.live.authfile`); the log
files' rotation, retention and compression.  A bad value is a `ConfigError`
naming the flag.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.durations import positive_duration
from engine.errors import ConfigError

if TYPE_CHECKING:
    import ssl

__all__ = ["add_arguments", "parse_hostport", "run_deliver", "service_options"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The operating flags of `egress deliver`."""
    p.add_argument("--http-listen", action="append", default=[], metavar="HOST:PORT",
                   help="serve /metrics and the admin API here (repeatable)")
    p.add_argument("--http-trusted", action="append", metavar="CIDR",
                   help="clients that may use the admin API without a token (repeatable; "
                   "replaces the default 127.0.0.1 and ::1)")
    p.add_argument("--http-token", metavar="FILE|env:NAME",
                   help="bearer token for the other clients: a file holding it, or env:NAME")
    p.add_argument("--tls-cert", metavar="FILE", help="offer STARTTLS with this certificate")
    p.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert")
    p.add_argument("--auth-file", metavar="FILE",
                   help="AUTH users, USER:BCRYPT_HASH per line; an authenticated user may "
                   "relay (AUTH only after STARTTLS, except from loopback)")
    p.add_argument("--log-max-size", metavar="BYTES", default="64MiB",
                   help="start a new log segment past this size (default 64MiB)")
    p.add_argument("--log-max-age", metavar="DURATION", default="1h",
                   help="start a new log segment after this long (default 1h)")
    p.add_argument("--log-retention", metavar="DURATION",
                   help="delete log segments older than this (default: keep all)")
    p.add_argument("--log-compress", choices=("zstd", "none"), default="zstd",
                   help="compress closed log segments (default zstd, as KumoMTA)")


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def _size(value: str, flag: str) -> int:
    text = value.strip().lower()
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits):].strip()
    if not digits.strip().isdigit() or unit not in _UNITS or int(digits) <= 0:
        raise ConfigError(f"{flag}: {value!r} is not a size such as 64MiB, 500MB or 1000000")
    return int(digits) * _UNITS[unit]


def _token(value: str | None) -> Any:
    if value is None:
        return None
    if value.startswith("env:"):
        return {"env": value[4:]}
    return value  # a file path keysource


def _tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together: give both")
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert/--tls-key: cannot load {cert!r} with {key!r}: "
                          f"{exc}") from None
    return ctx


def service_options(args: argparse.Namespace) -> dict[str, Any]:
    """`Service` keywords from the parsed flags (`add_arguments`)."""
    from engine.live.authfile import AuthFile

    auth = None
    if args.auth_file is not None:
        try:
            auth = AuthFile(args.auth_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return {
        "http_listen": [parse_hostport(v, "--http-listen") for v in args.http_listen],
        "http_trusted": args.http_trusted,
        "http_token": _token(args.http_token),
        "tls_context": _tls(args.tls_cert, args.tls_key),
        "ingest_auth": auth,
        "log_max_bytes": _size(args.log_max_size, "--log-max-size"),
        "log_max_age": positive_duration(args.log_max_age, "--log-max-age"),
        "log_options": {"compress": args.log_compress,
                        "retention": positive_duration(args.log_retention, "--log-retention")},
    }


# -- `egress deliver` ------------------------------------------------------------


def parse_hostport(value: str, option: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` -> (host, port); a `ConfigError`
    naming `option` and the value when it is not one of those."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = default_host, value
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option}: {value!r} is not valid; expected HOST:PORT with a port "
                          "between 0 and 65535, e.g. 127.0.0.1:2525")
    return host, int(port)


def run_deliver(
    policy_path: str, spool: str, *, listen: str | None = None,
    resolver: str | None = None, shaping_files: Sequence[str] | None = None,
    loop: str = "auto", **kwargs: Any,
) -> int:
    """`egress deliver`: run a `Service` until SIGTERM or SIGINT; 0 after a clean stop.

    The policy file and the shaping files are kept in the spool
    (`engine.live.spool_files`) so that a restart, `egress check --spool` and
    `egress replay` fold the journal with what was in force (the last ones
    started or reloaded with).  `shaping_files` are the ``--shaping`` files
    (empty: none, ``--no-shaping``); None takes the ones the spool keeps, and
    says so in one line.  Without `listen`, a Lua policy's
    ``kumo.start_esmtp_listener`` address is used, else 127.0.0.1:2525.
    """
    import asyncio
    import signal

    from engine.live.dns import LiveResolver
    from engine.live.loops import resolve_loop, run
    from engine.live.reload import read_shaping
    from engine.live.service import Service, StartError
    from engine.live.spool_files import SHAPING_DIR, keep_policy, keep_shaping, shaping_in_spool
    from engine.lua_kumo import listen_address
    from engine.policy import Policy
    from engine.shaping_load import combine

    policy = Policy.from_file(policy_path)
    if shaping_files is None:  # the spool's, as the last start or reload left them
        shaping, kept = shaping_in_spool(spool)
        shaping_files = [k.file for k in kept or ()]
        if kept:
            print(f"egress deliver: shaping files from the spool (no --shaping given): "
                  f"{', '.join(shaping_files)} (copies in {Path(spool) / SHAPING_DIR})",
                  flush=True)
    else:
        shaping = read_shaping(shaping_files)
        kept = None
    # the --shaping files (an engine.shaping.Shaping or None) merged over what a
    # Lua policy's shaping helper loaded
    policy.shaping = combine(policy.shaping, shaping)
    listen = listen or listen_address(policy.settings) or "127.0.0.1:2525"
    where = parse_hostport(listen, "--listen")
    live_resolver = None
    if resolver is not None:
        host, port = parse_hostport(resolver, "--resolver")
        live_resolver = LiveResolver([host], port=port)
    try:
        keep_policy(Path(spool), policy_path, policy.files)
        if kept is None:  # given on the command line: they replace the spool's
            keep_shaping(Path(spool), shaping.contents if shaping is not None else ())
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise StartError(f"spool {spool!r}: cannot write: {why}") from None

    loop_name = resolve_loop(loop)

    async def main() -> None:
        svc = Service(policy, spool, listen=where, resolver=live_resolver,
                      policy_path=policy_path, shaping_files=shaping_files, **kwargs)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, svc.request_stop)
        # SIGHUP re-reads the policy (a refused one is logged and the old one stays)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(svc)))
        await svc.start()
        http = ", ".join(f"http://{h}:{p}" for h, p in (svc.http.addresses if svc.http else []))
        tls = " (STARTTLS)" if svc.tls_context is not None else ""
        print(f"egress deliver: smtp {where[0]}:{svc.listen_port}{tls}, "
              f"http {http or 'none'}, spool {spool}, logs {svc.log_dir or 'none'}, "
              f"{svc.recovered} messages recovered ({svc.replayed} events replayed), "
              f"loop {loop_name}", flush=True)
        await svc.run()
        print("egress deliver: stopped cleanly", flush=True)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    run(main(), loop_name)  # asyncio's loop or uvloop (engine.live.loops)
    return 0


async def _reload(svc: Any) -> None:
    with contextlib.suppress(ValueError):  # refused: Service.reload logged the one line
        await svc.reload()
