"""Simulation speed: wall time of big runs, against bare SimPy in the same process.

Two cases:

* ``million``: ``scenarios/million.toml`` (1 M messages, five providers).
* ``blast``: a campaign injected all at once (t=0) at KumoMTA's default
  ``max_ready`` of 1024: four providers, realistic latencies, 2 % tempfail
  per recipient, 32 connections per path.  Sizes 100 k, 200 k, 400 k, 800 k
  and 2 M (``--sizes``).  This is the ordinary way a campaign arrives, and
  the case where every promotion into a full ready queue is re-delayed by
  0-60 s (``ReadyQueueWasFull``); the per-message column shows whether that
  cost grows with the backlog.

Each row carries two ratios, both against SimPy measured in this process
right after the run, both in CPU seconds of this process (on a machine
shared with other work, wall time measures the neighbours; the wall time
is printed too):

* ``msgs/s : timeouts/s``: simulated messages per second against bare
  SimPy timeouts per second (a fixed 500 k-timeout run; 50 k with
  ``--quick``), written ``1/N``.  The issue's target is 1/15 or better.
* ``x bare``: run time against bare SimPy processing the same number of
  SimPy events the run scheduled.

Run:

    python -m bench.sim                                  # million, then the blast at every size
    python -m bench.sim --case blast --sizes 100k,200k   # the blast only, two sizes
    python -m bench.sim --case million --repeat 3
    python -m bench.sim --scenario scenarios/quickstart.toml --repeat 1
    python -m bench.sim --quick                          # smoke test: a 5 k blast, once
    python -m bench.sim --case blast --sizes 2M --out /tmp/b  # records written, as a user's run

Without ``--out`` the records are counted, not written (what the simulator
costs); with it they are streamed to ``OUT/records.jsonl`` as ``egress
simulate --out`` streams them (the default ``--records outcomes``: a
Reception and a Delivery per message, about 1.6 KB), so the row is what a
user's run costs, disk writes included.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

SIZES = (100_000, 200_000, 400_000, 800_000, 2_000_000)
QUICK_SIZE = 5_000
BARE_TIMEOUTS = 500_000


def bare_simpy(n_events: int) -> float:
    """Seconds for SimPy to schedule and process `n_events` timeouts with a callback."""
    return _bare_simpy(n_events)[0]


def _bare_simpy(n_events: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `bare_simpy`."""
    import simpy

    env = simpy.Environment()
    counter = [0]

    def tick(_: Any) -> None:
        counter[0] += 1
        if counter[0] < n_events:
            env.timeout(0.001).callbacks.append(tick)

    # 64 concurrent chains, like many connections in flight at once.
    chains = max(1, min(64, n_events))
    for _ in range(chains):
        env.timeout(0.001).callbacks.append(tick)
    started, cpu_started = time.perf_counter(), time.process_time()
    env.run()
    return time.perf_counter() - started, time.process_time() - cpu_started


def blast_scenario(messages: int, seed: int = 1) -> dict[str, Any]:
    """The blast: `messages` injected at t=0 over four providers, as a user writes it
    (no max_ready setting: KumoMTA's default 1024 applies)."""
    return {
        "name": f"blast-{messages}",
        "description": f"{messages:,} messages at once, four providers, default max_ready",
        "seed": seed,
        "horizon": "3d",
        "sample_interval": "30s",
        "traffic": [{
            "name": "campaign",
            "domains": {"gmail.com": 40, "yahoo.com": 25, "outlook.com": 20, "icloud.com": 15},
            "messages": messages,
            "at": "0s",
            "tenant": "bench",
            "campaign": "blast",
            "sender": "bulk@sender.example",
            "size": {"median": "20KB", "p99": "250KB"},
        }],
        "domains": {
            "gmail.com": {"mx": [{"host": "gmail-smtp-in.l.google.com", "preference": 5},
                                 {"host": "alt1.gmail-smtp-in.l.google.com", "preference": 10}]},
            "yahoo.com": {"mx": [{"host": "mta5.am0.yahoodns.net", "preference": 1},
                                 {"host": "mta6.am0.yahoodns.net", "preference": 1}]},
            "outlook.com": {"mx": [{"host": "outlook-com.olc.protection.outlook.com",
                                    "preference": 5}]},
            "icloud.com": {"mx": [{"host": "mx01.mail.icloud.com", "preference": 10},
                                  {"host": "mx02.mail.icloud.com", "preference": 10}]},
        },
        "host_defaults": {
            "connect_latency": {"median": "30ms", "p99": "300ms"},
            "command_latency": {"median": "20ms", "p99": "250ms"},
            "data_latency": {"median": "150ms", "p99": "1.5s"},
            "tls_latency": {"median": "40ms", "p99": "400ms"},
            "tempfail_rcpt": 0.02,
        },
        "egress_path": {"connection_limit": 32, "max_deliveries_per_connection": 1024},
        "queue": {"retry_interval": "10min", "max_age": "1d"},
    }


def run_scenario(scenario: Any, out: str | None = None) -> dict[str, Any]:
    """Simulate `scenario` once, records counted but not kept (with `out`: streamed to
    OUT/records.jsonl, as `egress simulate --out` does); wall, CPU and event counts."""
    import contextlib
    from pathlib import Path

    import sim.result as res

    holder: dict[str, Any] = {}
    original = res.SimDriver

    def spy(*args: Any, **kwargs: Any) -> Any:
        # the driver the run makes, kept for its counts (a factory rather than
        # a patched method: the compiled build's class takes no new attributes)
        holder["driver"] = driver = original(*args, **kwargs)
        return driver

    started = time.perf_counter()
    cpu_started = time.process_time()
    res.SimDriver = spy  # type: ignore[misc,assignment]
    sink = res.RecordFile(Path(out) / "records.jsonl") if out is not None else None
    try:
        with sink if sink is not None else contextlib.nullcontext():
            result = res.run(scenario, keep_records=False, record_sink=sink)
    finally:
        res.SimDriver = original  # type: ignore[misc]
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    driver = holder["driver"]
    return {
        "wall": wall,
        "cpu": cpu,
        "summary": result.summary,
        "simpy_events": next(driver.env._eid),  # every event SimPy scheduled in the run
        "engine_events": driver.events_fed,
        "written": sink.written if sink is not None else 0,
    }


def measure(label: str, build: Any, repeat: int, bare_n: int,
            out: str | None = None) -> dict[str, Any]:
    """`repeat` runs of `build()` (a fresh Scenario each), each followed by its bare
    SimPy figures; returns the medians and the first run's summary."""
    rows = []
    for _ in range(repeat):
        r = run_scenario(build(), out)
        r["bare_same"] = _bare_simpy(r["simpy_events"])[1]
        r["bare_rate"] = bare_n / max(_bare_simpy(bare_n)[1], 1e-9)
        rows.append(r)
    s = rows[0]["summary"]
    msgs = s["submitted"]
    walls = [r["wall"] for r in rows]
    wall = statistics.median(walls)
    cpu = statistics.median(r["cpu"] for r in rows)
    rate = msgs / cpu if cpu > 0 else float("inf")
    bare_rate = statistics.median(r["bare_rate"] for r in rows)
    return {
        "label": label,
        "messages": msgs,
        "delivered": s["delivered"],
        "drain": s["drain_time"],
        "delayed": s["delayed"],
        "wall": wall,
        "wall_min": min(walls),
        "wall_max": max(walls),
        "cpu": cpu,
        "engine_events": rows[0]["engine_events"],
        "simpy_events": rows[0]["simpy_events"],
        "us_per_msg": 1e6 * cpu / msgs if msgs else 0.0,
        "rate": rate,
        "bare_rate": bare_rate,
        "one_in": bare_rate / rate if rate else float("inf"),
        "x_bare": statistics.median(r["cpu"] / max(r["bare_same"], 1e-9) for r in rows),
        "written": rows[0]["written"],
    }


def print_row(row: dict[str, Any]) -> None:
    drain = f"{row['drain']:,.0f} s" if row["drain"] is not None else "not drained"
    print(f"{row['label']:<16} {row['messages']:>10,} msgs  delivered {row['delivered']:,}  "
          f"drain {drain}  delayed {row['delayed']:,}")
    print(f"{'':<16} wall {row['wall']:.2f} s (min {row['wall_min']:.2f}, max "
          f"{row['wall_max']:.2f})  cpu {row['cpu']:.2f} s  {row['us_per_msg']:.1f} cpu us/msg  "
          f"engine events {row['engine_events']:,}  simpy events {row['simpy_events']:,}")
    print(f"{'':<16} sim msgs/cpu-s {row['rate']:,.0f}  bare SimPy timeouts/cpu-s "
          f"{row['bare_rate']:,.0f}  msgs/s : timeouts/s 1/{row['one_in']:.1f}  "
          f"x bare (same SimPy events) {row['x_bare']:.1f}", flush=True)
    if row["written"]:
        print(f"{'':<16} records written {row['written'] / 1e9:.2f} GB "
              f"({row['written'] / max(row['messages'], 1):,.0f} bytes per message)", flush=True)


def parse_size(text: str) -> int:
    """``100k``, ``2M``, ``5000``: a message count."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    digits = t[:-1] if scale != 1 else t
    try:
        value = int(float(digits) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a message count: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a message count must be at least 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    from sim.scenario import Scenario

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--case", choices=("all", "million", "blast"), default="all")
    p.add_argument("--scenario", help="time this scenario file instead of the cases")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE for --scenario/million")
    p.add_argument("--sizes", default=",".join(f"{n // 1000}k" for n in SIZES),
                   help="blast sizes, comma-separated (100k,200k,...)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--quick", action="store_true", help=f"a {QUICK_SIZE:,}-message blast, once")
    p.add_argument("--out", metavar="DIR",
                   help="stream the records to DIR/records.jsonl, as `egress simulate --out` "
                   "does (default: counted, not written)")
    args = p.parse_args(argv)
    import sim.driver  # noqa: F401 - loaded now, so the build line counts it
    from bench.core import build

    print(f"build: {build()}", flush=True)
    bare_n = BARE_TIMEOUTS // 10 if args.quick else BARE_TIMEOUTS
    if args.scenario:
        path = args.scenario
        print_row(measure(path, lambda: Scenario.from_toml(path, args.set), args.repeat, bare_n,
                         args.out))
        return 0
    if args.quick:
        print_row(measure(f"blast {QUICK_SIZE // 1000}k",
                          lambda: Scenario.from_dict(blast_scenario(QUICK_SIZE)), 1, bare_n,
                          args.out))
        return 0
    if args.case in ("all", "million"):
        print_row(measure("million.toml",
                          lambda: Scenario.from_toml("scenarios/million.toml", args.set),
                          args.repeat, bare_n, args.out))
    if args.case in ("all", "blast"):
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        rows = []
        for n in sizes:
            row = measure(f"blast {_short(n)}",
                          lambda n=n: Scenario.from_dict(blast_scenario(n)), args.repeat, bare_n,
                          args.out)
            print_row(row)
            rows.append(row)
        if len(rows) > 1:
            base = rows[0]["us_per_msg"]
            print("per-message cost against the smallest blast: " + ", ".join(
                f"{r['label'].split()[1]} {r['us_per_msg'] / base:.2f}x" for r in rows))
    return 0


def _short(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


if __name__ == "__main__":
    raise SystemExit(main())
