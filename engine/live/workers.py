"""`egress deliver --workers N`: N delivery processes on one machine, one command.

One process is one core (the live relay is bound by its event loop), so a
machine with more cores runs several.  Each worker is a whole `egress deliver`
with its own spool and journal (``SPOOL/worker-I``) and its own log directory
and metrics port (``LOG_DIR/worker-I``, ``--metrics-port + I``); all of them
listen on the one SMTP port with SO_REUSEPORT, so the kernel spreads incoming
connections over them, and all share their limits through Redis (``--redis``
is required: without it each worker would enforce every limit by itself, N
times the configured rate at the provider).

The supervisor only starts and stops: SIGTERM or SIGINT is passed to every
worker, and if one worker dies the others are stopped too (a half-running
set would silently carry 1/N less than configured), and the exit status says so.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

__all__ = ["run_workers", "worker_args"]


def worker_args(argv: Sequence[str], index: int, *, spool: str, log_dir: str | None,
                metrics_port: int | None) -> list[str]:
    """The command line of worker `index`: the supervisor's own, with its own spool,
    log directory and metrics port, ``--workers 1`` and the shared port flag."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", "--spool", "--log-dir", "--metrics-port"):
            skip = "=" not in arg and i + 1 < len(argv)
            continue
        out.append(arg)
    out += ["--workers", "1", "--reuse-port", "--spool", str(Path(spool) / f"worker-{index}")]
    if log_dir is not None:
        out += ["--log-dir", str(Path(log_dir) / f"worker-{index}")]
    if metrics_port is not None:
        out += ["--metrics-port", str(metrics_port + index)]
    return out


def run_workers(argv: Sequence[str], workers: int, *, spool: str, log_dir: str | None,
                metrics_port: int | None) -> int:
    """Start `workers` copies of ``egress deliver``; stop them together; 0 if all
    stopped cleanly after a signal."""
    procs = [subprocess.Popen([sys.executable, "-m", "engine.cli", "deliver", *worker_args(
        argv, i, spool=spool, log_dir=log_dir, metrics_port=metrics_port)])
        for i in range(workers)]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"egress deliver: {workers} workers, pids {' '.join(str(p.pid) for p in procs)}",
          flush=True)
    failed = False
    while any(p.poll() is None for p in procs):
        if not stopping and any(p.poll() is not None for p in procs):
            dead = [i for i, p in enumerate(procs) if p.poll() is not None]
            print(f"egress deliver: worker {dead[0]} exited ({procs[dead[0]].returncode}); "
                  "stopping the others", file=sys.stderr, flush=True)
            failed = True
            stop(signal.SIGTERM, None)
        time.sleep(0.1)
    codes = [p.returncode for p in procs]
    return 1 if failed or any(codes) else 0
