"""python-slimta 5 as a relay, the Python MTA peer of the end-to-end benchmark.

Run by ``bench/.slimta-venv/bin/python`` (scripts/bench-setup.sh makes that
venv), never by the project's venv: gevent monkey-patches the standard
library, which must not leak into egress's process or its dependencies.  It is
started and stopped by `bench.peers.SlimtaRelay`; it only listens on and
relays to loopback addresses.

Shape, as the issue asks: SmtpEdge -> Queue (in-memory DictStorage, or shelve
with ``--storage shelve``) -> StaticSmtpRelay with pool_size 32 and an
idle_timeout so connections are reused.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import shelve  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from slimta.edge.smtp import SmtpEdge  # noqa: E402
from slimta.queue import Queue  # noqa: E402
from slimta.queue.dict import DictStorage  # noqa: E402
from slimta.relay.smtp.static import StaticSmtpRelay  # noqa: E402


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host.startswith("127."):
        sys.exit(f"slimta_relay: {text!r} is not a loopback HOST:PORT")
    return host, int(port)


def main() -> None:
    """Parse the command line and serve until SIGTERM."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True, help="HOST:PORT to accept mail on")
    p.add_argument("--relay", required=True, help="HOST:PORT to relay everything to")
    p.add_argument("--storage", choices=("memory", "shelve"), default="memory")
    p.add_argument("--dir", default=".", help="where the shelve files go")
    p.add_argument("--pool-size", type=int, default=32)
    p.add_argument("--idle-timeout", type=float, default=10.0)
    args = p.parse_args()

    store: Any
    if args.storage == "shelve":
        d = Path(args.dir)
        # Open for the life of the process: the relay runs until SIGTERM.
        envelopes = shelve.open(str(d / "envelopes"))  # noqa: SIM115
        meta = shelve.open(str(d / "meta"))  # noqa: SIM115
        store = DictStorage(envelopes, meta)
    else:
        store = DictStorage()
    host, port = _addr(args.relay)
    relay = StaticSmtpRelay(host, port, pool_size=args.pool_size,
                            idle_timeout=args.idle_timeout, ehlo_as="slimta.bench.test")
    queue = Queue(store, relay)
    queue.start()
    edge = SmtpEdge(_addr(args.listen), queue, hostname="slimta.bench.test")
    edge.start()
    gevent.signal_handler(signal.SIGTERM, lambda: sys.exit(0))
    gevent.wait()


if __name__ == "__main__":
    main()
