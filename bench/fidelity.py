"""Fidelity, at size: five scenarios run with ``egress simulate`` and ``egress lab --run``.

tests/test_lab_fidelity.py proves agreement on one small scenario in CI;
this is the larger version, each lab run 1-3 minutes of wall time (``--quick``:
an eighth of the traffic, for a smoke run).  Each scenario isolates one limit
a capacity planner relies on the simulator for:

- ``latency``: 4 connections, nothing but server latency limits the rate;
- ``throttle``: ``max_message_rate`` limits it;
- ``connections``: the host accepts 4 connections and answers 421 beyond
  them, while the egress path would open 8;
- ``tempfail``: deferred recipients and bodies, and a 20 s outage in which
  MAIL gets 451, with retries;
- ``pushback``: a receiver that pushes back and a shaping rule that answers
  it.  The host takes 25 MAILs a second from one source address (a bucket
  of 7,500, so the path's ~146 a second exhaust it after about a minute; the
  host's rate is small against the path's so that an error in throughput is
  not amplified much in when the bucket runs dry) and answers the rest
  ``421 4.7.0 [TS01] ...``; a KumoMTA automation rule with a Threshold of 400
  such replies a minute sets ``max_message_rate`` to 20/s.
  Beside drain time and deferrals, the table gives when the rule fired
  (seconds from the first reception to the first ``Shaping`` record).  The
  host's reputation is left out: its deferrals are random draws, which the
  two realisations make from different streams.

Each is run three ways, in separate processes, through the commands a user
types: the lab (``egress lab S --run --out``) first, then the simulator twice
(``egress simulate S --out``): as the scenario says (no client overhead), and
with the client's costs the lab just measured (``summary.lab.timing``):
``[client] round_trip_overhead`` set to its turnaround (``client_turnaround``)
and ``[client] connect_overhead`` to its cost per connection
(``client_connect``).  The table gives drain time, peak
connections, transient failures, deliveries and the largest gap between the
cumulative delivered curves, each sim figure with the lab's relative
difference to it.

``--pacing`` adds the before/after of the lab's deadline pacing
(`lab.timing.Pacer`) on the latency scenario: the lab run in-process with
plain ``asyncio.sleep`` and with pacing, against the simulator.

    python -m bench.fidelity                 # full size, about 10 minutes
    python -m bench.fidelity --quick         # a smoke run, about 2 minutes
    python -m bench.fidelity --pacing        # also the before/after of pacing
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAB_TIMEOUT = 600.0  # seconds for one lab run at full size

HOST = {"connect_latency": "5ms", "command_latency": "5ms",
        "data_latency": {"median": "20ms", "p99": "60ms"}, "tls_latency": "5ms"}
QUEUE = {"retry_interval": "5s", "max_age": "1h"}


def _scenario(name: str, traffic: dict[str, Any], host: dict[str, Any],
              egress: dict[str, Any], *, description: str,
              queue: dict[str, Any] | None = None, shaping: str | None = None
              ) -> dict[str, Any]:
    domain = "fid.test"
    extra: dict[str, Any] = {SHAPING_KEY: shaping} if shaping is not None else {}
    return {**extra,
        "name": f"fidelity_{name}",
        "description": description,
        "seed": 5,
        "horizon": "20min",
        "sample_interval": "1s",
        "traffic": [{"name": name, "domain": domain, "sender": "bench@lab.example",
                     "size": {"median": "3KB", "p99": "30KB"}, **traffic}],
        "domains": {domain: {"mx": [{"host": f"mx.{domain}", "preference": 10}]}},
        "hosts": {f"mx.{domain}": {**HOST, **host}},
        # max_ready above every campaign: the ready queue is not what is measured.
        "egress_path": {"max_ready": 100_000, **egress},
        "queue": queue or QUEUE,
    }


SHAPING_KEY = "_shaping_text"  # the shaping file's text, written beside the scenario
PUSHBACK_RULE = """\
[["default".automation]]
regex = '\\[TS01\\] Messages from'
action = {{ SetConfig = {{ name = "max_message_rate", value = "20/s" }} }}
trigger = {{ Threshold = "{threshold}/min" }}
duration = "10min"
"""


def scenarios(scale: float) -> dict[str, dict[str, Any]]:
    """The five scenarios, with `scale` times the full traffic (and, for
    pushback, the host's bucket and the rule's threshold)."""
    def bulk(full: int) -> dict[str, Any]:
        return {"messages": max(40, round(full * scale)), "at": "0s"}

    return {
        # ~27.3 ms per message (a 5 ms batch, then the body: lognormal, median
        # 20 ms, mean 22.3 ms) on 4 connections: ~146 msg/s, 12,000 in ~82 s.
        "latency": _scenario("latency", bulk(12_000), {}, {"connection_limit": 4},
                             description="4 connections, latency-limited"),
        "throttle": _scenario("throttle", bulk(4_000), {},
                              {"connection_limit": 4, "max_message_rate": "50/s"},
                              description="max_message_rate 50/s on 4 connections"),
        # Every connection beyond the 4th meets a 421 and defers the message it
        # was opened for (retried after 2 s): the drain is set by that churn.
        "connections": _scenario("connections", bulk(1_000), {"max_connections": 4},
                                 {"connection_limit": 8},
                                 queue={**QUEUE, "retry_interval": "2s"},
                                 description="the host takes 4 connections, 421 beyond"),
        # Poisson arrivals for 60 s at two thirds of what 4 connections carry,
        # so the outage (MAIL 451 from 20 s to 40 s) builds a backlog that
        # drains after it.
        "tempfail": _scenario("tempfail", {"rate": 100 * scale, "duration": "60s"}, {
            "tempfail_rcpt": 0.05, "tempfail_data": 0.02,
            "outages": [{"start": "20s", "end": "40s", "mode": "tempfail"}]},
            {"connection_limit": 4},
            description="5 % RCPT and 2 % body deferrals, MAIL 451 from 20 s to 40 s"),
        # 25/s with a bucket of 7,500 (scaled, at 25/s): a minute at ~146/s empties
        # it; 400 over-rate 421s in a minute fire the rule, which holds 20/s.
        "pushback": _scenario(
            "pushback", bulk(10_000),
            {"pushback": {"message_rate": f"{round(7500 * scale)}/{300 * scale:g}s",
                          "rate_reply": "421 4.7.0 [TS01] Messages from {source} "
                                        "temporarily deferred"}},
            {"connection_limit": 4},
            shaping=PUSHBACK_RULE.format(threshold=max(20, round(400 * scale))),
            description="the host takes 25/s per source, a rule on its 421 sets 20/s"),
    }


# -- TOML out (tomllib only reads) ------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")


def to_toml(d: dict[str, Any]) -> str:
    """A scenario dict as TOML: top-level tables as sections, the rest inline."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"


# -- running ------------------------------------------------------------------------------


def egress(*args: str, timeout: float = LAB_TIMEOUT) -> float:
    """Run ``egress ARGS`` (this interpreter); wall seconds.  Fails loudly."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"egress {' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.monotonic() - started


def run_scenario(name: str, scenario: dict[str, Any], work: Path) -> dict[str, Any]:
    """Lab, then the simulator without and with the measured client overhead."""
    from lab.compare import compare_dirs

    path = work / f"{name}.toml"
    scenario = dict(scenario)
    shaping = scenario.pop(SHAPING_KEY, None)
    if shaping is not None:
        (work / f"{name}-shaping.toml").write_text(shaping)
        scenario["shaping"] = [f"{name}-shaping.toml"]
    path.write_text(to_toml(scenario))
    lab_dir, sim_dir, cal_dir = work / f"{name}-lab", work / f"{name}-sim", work / f"{name}-cal"
    wall = egress("lab", str(path), "--run", "--out", str(lab_dir), "--no-plot")
    timing = json.loads((lab_dir / "summary.json").read_text())["lab"]["timing"]
    overhead_ms = timing["client_turnaround"]["mean_ms"]
    connect_ms = timing["client_connect"]["mean_ms"]
    egress("simulate", str(path), "--out", str(sim_dir), "--no-plot", "--quiet")
    egress("simulate", str(path), "--out", str(cal_dir), "--no-plot", "--quiet",
           "--set", f'client.round_trip_overhead="{overhead_ms:.3f}ms"',
           "--set", f'client.connect_overhead="{connect_ms:.3f}ms"')
    return {"name": name, "lab_wall": wall, "timing": timing, "overhead_ms": overhead_ms,
            "connect_ms": connect_ms,
            # the calibrated run differs from the lab's scenario in its [client] only
            "plain": compare_dirs(sim_dir, lab_dir),
            "calibrated": compare_dirs(cal_dir, lab_dir, force=True),
            "fires": ({k: rule_fired(d) for k, d in
                       (("sim", sim_dir), ("cal", cal_dir), ("lab", lab_dir))}
                      if shaping is not None else None)}


def rule_fired(directory: Path) -> float | None:
    """Seconds from the run's first Reception to its first Shaping record (a
    rule firing), from its records.jsonl; None when no rule fired."""
    first = fired = None
    with open(directory / "records.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["type"] == "Reception" and first is None:
                first = r["timestamp"]
            elif r["type"] == "Shaping" and r.get("event") == "fired":
                fired = r["timestamp"]
                break
    return None if first is None or fired is None else float(fired - first)


ROWS = (("drain time", "drain time (s)"),
        ("peak connections (all paths)", "peak connections"),
        ("transient failures", "transient failures"),
        ("delivered", "delivered"),
        ("cumulative curve: max |lab - sim| / delivered", "cumulative curve max gap"))


def _fmt(v: float | None, figure: str) -> str:
    if v is None:
        return "-"
    if "gap" in figure:
        return f"{v:.1%}"
    return f"{v:,.2f}" if not float(v).is_integer() else f"{int(v):,}"


def _rel(r: Any) -> str:
    return "-" if r.rel_diff is None else f"{r.rel_diff:+.1%}"


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table: per scenario and figure, sim (0 overhead), sim
    (measured overhead) and lab, with the lab's difference to each."""
    head = ("| scenario | figure | sim | sim + overhead | lab | lab vs sim "
            "| lab vs sim + overhead |\n|---|---|---:|---:|---:|---:|---:|")
    lines = [head]
    for res in results:
        for key, label in ROWS:
            a, b = res["plain"].row(key), res["calibrated"].row(key)
            if "gap" in label:  # a distance: its value is the difference
                lines.append(f"| {res['name']} | {label} | | | | {_fmt(a.lab, label)} "
                             f"| {_fmt(b.lab, label)} |")
                continue
            lines.append(f"| {res['name']} | {label} | {_fmt(a.sim, label)} "
                         f"| {_fmt(b.sim, label)} | {_fmt(a.lab, label)} | {_rel(a)} | {_rel(b)} |")
        fires = res.get("fires")
        if fires is not None:
            from lab.compare import Row

            label = "rule fires (s)"
            a, b = Row(label, fires["sim"], fires["lab"]), Row(label, fires["cal"], fires["lab"])
            lines.append(f"| {res['name']} | {label} | {_fmt(a.sim, label)} "
                         f"| {_fmt(b.sim, label)} | {_fmt(a.lab, label)} | {_rel(a)} | {_rel(b)} |")
    return "\n".join(lines)


def pacing(scenario: dict[str, Any]) -> str:
    """The latency scenario's lab with plain sleeps and with pacing, against the sim."""
    import sim
    from lab.run import run_in_lab
    from sim.scenario import Scenario

    s = Scenario.from_dict(scenario)
    expected = sim.run(s).summary["drain_time"]
    lines = ["| lab servers | drain time (s) | vs sim | timer lateness (ms) "
             "| latency error (ms) | client turnaround (ms) |", "|---|---:|---:|---:|---:|---:|",
             f"| (simulator) | {expected:.2f} | | | | |"]
    for compensate in (False, True):
        r = asyncio.run(run_in_lab(s, compensate=compensate, keep_records=False))
        t = r.summary["lab"]["timing"]
        drain = r.summary["drain_time"]
        lines.append(f"| {'paced' if compensate else 'asyncio.sleep'} | {drain:.2f} "
                     f"| {(drain - expected) / expected:+.1%} "
                     f"| {t['server']['wake_lag_ms']:.2f} | {t['server']['error_ms']:+.3f} "
                     f"| {t['client_turnaround']['mean_ms']:.2f} |")
    return "\n".join(lines)


def machine() -> str:
    """nproc, Python, the load, the date: what the figures were measured on."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"load average {load}, {datetime.date.today().isoformat()}")


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.fidelity [--quick] [--only NAME] [--pacing] [--keep DIR]``."""
    p = argparse.ArgumentParser(prog="python -m bench.fidelity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="an eighth of the traffic")
    p.add_argument("--only", action="append", choices=sorted(scenarios(1.0)),
                   help="run only this scenario (repeatable)")
    p.add_argument("--pacing", action="store_true",
                   help="also: the latency scenario's lab with and without pacing")
    p.add_argument("--keep", help="write the runs here (default: a temporary directory)")
    args = p.parse_args(argv)
    all_scenarios = scenarios(0.125 if args.quick else 1.0)
    names = args.only or list(all_scenarios)
    print(f"# fidelity {'--quick ' if args.quick else ''}on {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="egress-fidelity-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = []
        for name in names:
            res = run_scenario(name, all_scenarios[name], work)
            turn = res["timing"]["client_turnaround"]
            conn = res["timing"]["client_connect"]
            print(f"{name}: lab {res['lab_wall']:.0f} s wall; server latency error "
                  f"{res['timing']['server']['error_ms']:+.3f} ms mean; client turnaround "
                  f"mean {turn['mean_ms']:.3f} ms, median {turn['median_ms']:.3f} ms "
                  f"({turn['count']:,}); client connect mean {conn['mean_ms']:.3f} ms, "
                  f"median {conn['median_ms']:.3f} ms ({conn['count']:,})", flush=True)
            results.append(res)
        print()
        print(table(results))
    if args.pacing:
        print()
        print(pacing(all_scenarios["latency"]))
    print(f"\n# done on {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
