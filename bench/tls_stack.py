"""What the clear fallback costs: OpportunisticInsecure (pyOpenSSL memory-BIO
stack, so a failed handshake can hand the socket back, docs/KUMOMTA.md row
7a) against RequiredInsecure (the stdlib `ssl` stack), the same sink and the
same messages, alternated A B A B, CPU seconds of this process.

    python -m bench.tls_stack [--messages 400] [--rounds 2]

The sink (aiosmtpd with a trustme certificate, on a thread of this process)
costs the same in both arms, so the ratio understates the client-side
difference; the per-message difference is the figure to read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import threading
import time
from typing import Any

import trustme
from aiosmtpd.controller import Controller

from bench.peers import free_port
from engine.config import make_egress_path
from engine.engine import Engine
from engine.events import MessageSubmitted
from engine.live.dns import LiveResolver
from engine.live.driver import LiveDriver
from engine.policy import Policy

DOMAIN = "[127.0.0.1]"
BODY = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: x\r\n\r\n" + b"y" * 2000 + b"\r\n"


class _Count:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.n += 1
        return "250 2.0.0 OK"


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def _deliver(port: int, mode: str, messages: int) -> None:
    cfg = make_egress_path(smtp_port=port, prohibited_hosts=[], enable_tls=mode,
                           enable_mta_sts=False, connection_limit=4)
    policy = Policy()
    policy.on("get_egress_path_config")(lambda domain, source, site: cfg)
    engine = Engine(policy)
    bodies: dict[str, bytes] = {}
    driver = LiveDriver(engine, resolver=LiveResolver(["127.0.0.1"], port=9), bodies=bodies.get,
                        records=lambda r: None, journal=lambda e: None)
    for i in range(messages):
        bodies[f"m{i}"] = BODY
        driver.feed(MessageSubmitted(at=time.time(), id=f"m{i}", sender="a@b.test",
                                     recipients=(f"c@{DOMAIN}",), size=len(BODY)))
    while engine.queued_count:
        await asyncio.sleep(0.005)
    await driver.abort_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    handler = _Count()
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port, tls_context=ctx,
                     server_hostname="127.0.0.1")
    ctl.start()
    results: dict[str, list[float]] = {"OpportunisticInsecure": [], "RequiredInsecure": []}
    try:
        for _ in range(args.rounds):
            for mode in results:
                before, start = _cpu(), time.perf_counter()
                asyncio.run(_deliver(port, mode, args.messages))
                cpu, wall = _cpu() - before, time.perf_counter() - start
                results[mode].append(cpu)
                print(f"{mode:22s} {args.messages} messages: cpu {cpu:.3f}s "
                      f"({1e6 * cpu / args.messages:.0f} us/message), wall {wall:.2f}s")
    finally:
        ctl.stop()
    a, b = (min(v) for v in results.values())
    print(f"best cpu: pyOpenSSL (OpportunisticInsecure) {a:.3f}s, stdlib (RequiredInsecure) "
          f"{b:.3f}s, ratio {a / b:.2f}, +{1e6 * (a - b) / args.messages:.0f} us/message")


if __name__ == "__main__":
    main()
