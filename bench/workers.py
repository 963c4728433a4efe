"""End to end with 1 and 2 worker processes, limits shared through Redis (issue 18).

smtp-source (32 sessions, 2 KB) -> ``egress deliver --redis URL --workers W`` ->
smtp-sink, journal on, every limit shared: connection_limit 32 is a lease per
connection in Redis, and a (non-binding) max_message_rate makes every message
one GCRA check in Redis, pipelined with its lease extension.  W = 1 and W = 2
alternate round by round in the same run; the figure is messages from the
first injection to the sink's last, per second.  A redis-server of its own
runs on a free loopback port (Debian's package), without persistence.

Also measured: the Redis cost per message seen from one asyncio process (a
lease extension plus a throttle check, pipelined as the driver sends them),
one message at a time and 32 at a time.

    python -m bench.workers               # 20 000 messages, 3 rounds
    python -m bench.workers --quick       # 2 000 messages, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import peers
from bench.e2e import DOMAIN, SESSIONS, SIZE

_POLICY = """\
# Written by bench.workers: every path goes to the benchmark's smtp-sink.
from engine import Policy, make_egress_path

policy = Policy()
_cfg = make_egress_path(
    connection_limit=32, smtp_port={port}, prohibited_hosts=[], enable_tls="Disabled",
    enable_mta_sts=False, ehlo_domain="egress.bench.test", max_ready={max_ready},
    max_message_rate="1,000,000/s",
)


@policy.on("get_egress_path_config")
def _path(domain, source_name, site_name):
    return _cfg
"""


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise peers.PeerUnavailable("redis-server is not installed (Debian package)")
    port = peers.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as d:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                 "", "--appendonly", "no", "--dir", d],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            peers.wait_listening("127.0.0.1", port, 20.0, proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            peers.stop_process(proc)


def measure(workers: int, messages: int, sink_host: str, dns: peers.DnsServer, redis: str,
            timeout: float) -> float | None:
    with peers.SmtpSink(sink_host) as sink, tempfile.TemporaryDirectory(
            prefix="bench-workers-") as tmp:
        policy = Path(tmp) / "policy.py"
        policy.write_text(_POLICY.format(port=sink.port, max_ready=messages + 1024))
        port = peers.free_port()
        cmd = [sys.executable, "-m", "engine.cli", "deliver", "--policy", str(policy),
               "--spool", str(Path(tmp) / "spool"), "--listen", f"127.0.0.1:{port}",
               "--resolver", f"127.0.0.1:{dns.port}", "--redis", redis,
               "--workers", str(workers)]
        log = open(Path(tmp) / "egress.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, cwd=peers.ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            peers.wait_listening("127.0.0.1", port, 60.0, proc)
            time.sleep(1.5)  # every worker listening
            started = peers.run_smtp_source("127.0.0.1", port, timeout=timeout,
                                            sessions=SESSIONS, messages=messages, size=SIZE,
                                            to=f"user@{DOMAIN}")
            reached = sink.wait_for(messages, timeout)
            return None if reached is None else messages / (reached - started)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


async def redis_cost(url: str, messages: int, batch: int) -> float:
    """Microseconds of Redis work per message (extend + check), `batch` messages per
    pipeline, seen from one asyncio process."""
    from engine.effects import CheckThrottle, ExtendLease
    from engine.live.shared_redis import RedisLimits

    done = asyncio.Event()
    answered = 0

    def handle(ev: object) -> bool:
        nonlocal answered
        answered += 1
        if answered >= messages:
            done.set()
        return True

    limits = RedisLimits(url, handle)
    await limits.check()
    started = time.perf_counter()
    for i in range(0, messages, batch):
        target = min(i + batch, messages)
        for j in range(i, target):
            limits._enqueue(ExtendLease(key="bench:conn", lease=f"l{j % 32}", ttl=60.0))
            limits._enqueue(CheckThrottle(request=j, key="bench:rate", limit=1_000_000,
                                          period=1.0, burst=1_000_000))
        while answered < target:
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    await limits.close()
    return elapsed / messages * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    messages, rounds = (2_000, 1) if args.quick else (args.messages, args.rounds)
    rates: dict[int, list[float]] = {1: [], 2: []}
    with redis_server() as redis, peers.DnsServer({DOMAIN: "127.0.0.2"}) as dns:
        for one in (1, 32):
            cost = asyncio.run(redis_cost(redis, 20_000, one))
            print(f"redis cost per message (extend + check), {one} per pipeline: "
                  f"{cost:.1f} us", flush=True)
        for r in range(rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            for i, workers in enumerate(order):
                host = f"127.0.1.{2 + i}"
                dns.domains[DOMAIN] = host
                rate = measure(workers, messages, host, dns, redis, 300.0)
                print(f"  round {r + 1} workers={workers} "
                      f"{'-' if rate is None else f'{rate:,.0f} msg/s'}", flush=True)
                if rate is not None:
                    rates[workers].append(rate)
    if rates[1] and rates[2]:
        m1, m2 = statistics.median(rates[1]), statistics.median(rates[2])
        print(f"median: 1 worker {m1:,.0f} msg/s, 2 workers {m2:,.0f} msg/s, "
              f"ratio {m2 / m1:.2f}x ({messages:,} messages, {rounds} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
