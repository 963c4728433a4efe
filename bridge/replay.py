"""`egress replay`: a live journal's traffic, what happened, and what another policy would do.

Three steps, each on its own so a notebook can call them:

1. `read_traffic` reads the journal's `MessageSubmitted` events: every
   message's metadata and the time it arrived.
2. `actual_outcome` recomputes what really happened by event sourcing:
   the whole journal replayed into a fresh `Engine` with the policy and the
   shaping files it was delivered with (the copies `egress deliver` keeps in
   ``SPOOL/policy.py`` and ``SPOOL/shaping/``, `spool_shaping`), collecting
   the `Log` records the engine emits: the records the live run wrote.  No
   I/O is redone: the journal holds every answer the world gave.  A journal
   that does not replay under the given policy (another policy wrote it) is
   refused with a message saying so, rather than a half-computed answer.
3. `simulated_outcome` submits the same arrivals to the simulator with
   another policy.  The simulator's traffic model has bulk streams, not a
   list of messages, so the arrivals become bulk streams binned by arrival
   time (`traffic_tables`: one stream per time bin, domain, tenant, campaign,
   sender and recipient count, carrying the bin's mean size); bins are 1 ms
   for short journals and widen so there are at most `MAX_BINS` of them per
   key.  The remote world is ``--world``'s ``[domains]``, ``[hosts]`` and
   ``[host_defaults]``, or by default a healthy, fast host for every domain.

Both outcomes are summarised with the same names as `sim.result.run`'s
summary (delivered, bounced, transient_failures, expired, still_queued,
drain_time in seconds from the first arrival), so they print side by side.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import EgressError, ProtocolError
from engine.events import MessageSubmitted

__all__ = [
    "DEFAULT_WORLD",
    "actual_outcome",
    "compare",
    "read_traffic",
    "replay_command",
    "simulated_outcome",
    "spool_shaping",
    "traffic_tables",
]

MAX_BINS = 2000
MIN_BIN = 0.001
DEFAULT_WORLD: dict[str, Any] = {
    "host_defaults": {"connect_latency": "5ms", "command_latency": "5ms",
                      "data_latency": "10ms", "starttls": True},
}
FALLBACK_SENDER = "replay@egress.example"
ROWS = ("submitted", "delivered", "bounced", "transient_failures", "expired", "still_queued",
        "drain_time")


class ReplayError(EgressError):
    """`egress replay` cannot do what was asked; the message says why."""


def journal_path(spool: str | Path) -> Path:
    """The journal file of a spool directory (or the file itself)."""
    p = Path(spool)
    path = p / "journal.sqlite" if p.is_dir() else p
    if not path.is_file():
        raise ReplayError(f"no journal at {str(path)!r}: SPOOL must be the --spool directory "
                          "of egress deliver")
    return path


def read_traffic(spool: str | Path) -> list[MessageSubmitted]:
    """Every message the journal accepted, in arrival order."""
    from engine.live.journal import iter_events

    return [ev for _, ev in iter_events(journal_path(spool)) if type(ev) is MessageSubmitted]


def actual_outcome(spool: str | Path, policy: Any, shaping: Any = None,
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Replay the whole journal into an Engine with `policy` and `shaping` (an
    `engine.shaping.Shaping` merged over the policy's, or None): (summary,
    records).  The records carry the spool's node id, as the live ones did."""
    from engine.effects import Discard, Log
    from engine.engine import Engine
    from engine.live.journal import iter_events
    from engine.live.nodeid import kept_node_id

    eng = Engine(policy, shaping=shaping)
    eng.nodeid = kept_node_id(journal_path(spool).parent)
    records: list[dict[str, Any]] = []
    first: float | None = None
    last_done = 0.0
    submitted = 0
    for seq, ev in iter_events(journal_path(spool)):
        if type(ev) is MessageSubmitted:
            submitted += 1
            if first is None:
                first = ev.at
        try:
            effects = eng.handle(ev)
        except ProtocolError as exc:
            raise ReplayError(
                f"the journal does not replay under this policy (event {seq}, "
                f"{type(ev).__name__}: {exc}); give the policy and the shaping files it was "
                "delivered with (--original, --shaping)") from None
        for e in effects:
            if type(e) is Log:
                records.append(e.record)
            elif type(e) is Discard:
                last_done = ev.at
    counts = Counter(r["type"] for r in records)
    queued = eng.queued_count
    summary = {
        "submitted": submitted,
        "delivered": counts["Delivery"],
        "bounced": counts["Bounce"] + counts["AdminBounce"],
        "transient_failures": counts["TransientFailure"],
        "expired": counts["Expiration"],
        "still_queued": queued,
        "drain_time": None if queued or first is None else last_done - first,
        "records": dict(sorted(counts.items())),
    }
    return summary, records


def _sender(address: str) -> str:
    ok = address.count("@") == 1 and not address.startswith("@") and not address.endswith("@")
    return address if ok else FALLBACK_SENDER


def traffic_tables(arrivals: Iterable[MessageSubmitted]) -> tuple[float, list[dict[str, Any]]]:
    """(first arrival time, ``[[traffic]]`` bulk tables) reproducing `arrivals`."""
    msgs = list(arrivals)
    if not msgs:
        return 0.0, []
    t0 = min(m.at for m in msgs)
    span = max(m.at for m in msgs) - t0
    width = max(MIN_BIN, span / MAX_BINS)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for m in msgs:
        slot = math.floor((m.at - t0) / width)
        key = (slot, m.domain, m.tenant, m.campaign, _sender(m.sender), len(m.recipients))
        groups.setdefault(key, []).append(m.size)
    tables = []
    for (slot, domain, tenant, campaign, sender, rcpts), sizes in sorted(groups.items()):
        tables.append({
            "domain": domain, "messages": len(sizes), "at": round(slot * width, 6),
            "tenant": tenant, "campaign": campaign, "sender": sender, "recipients": rcpts,
            "size": max(1, round(sum(sizes) / len(sizes))),
        })
    return t0, tables


def load_world(path: str | Path | None) -> dict[str, Any]:
    """The ``[domains]``, ``[hosts]`` and ``[host_defaults]`` tables of a scenario file
    (a healthy default for every undeclared domain unless it has host_defaults)."""
    if path is None:
        return json.loads(json.dumps(DEFAULT_WORLD))
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ReplayError(f"--world {str(path)!r}: cannot read it as TOML: {exc}") from None
    world = {k: data[k] for k in ("domains", "hosts", "host_defaults") if k in data}
    world.setdefault("host_defaults", dict(DEFAULT_WORLD["host_defaults"]))
    return world


def simulated_outcome(
    arrivals: Iterable[MessageSubmitted], policy_file: str | Path, *,
    world: Mapping[str, Any] | None = None, seed: int = 1, name: str = "replay",
    shaping_files: Sequence[str | Path] = (),
) -> tuple[dict[str, Any], Any]:
    """Simulate `arrivals` with the policy file (and shaping files): (summary,
    `sim.result.SimResult`)."""
    from sim.result import run
    from sim.scenario import Scenario

    t0, traffic = traffic_tables(arrivals)
    span = max((t["at"] for t in traffic), default=0.0)
    scenario = Scenario.from_dict({
        "name": name, "seed": seed, "start_epoch": t0,
        "horizon": max(86400.0, 2.0 * span),
        "policy": str(Path(policy_file).resolve()),
        "shaping": [str(Path(f).resolve()) for f in shaping_files],
        "traffic": traffic,
        **(dict(world) if world is not None else load_world(None)),
    }, source=f"<replay of {name}>")
    result = run(scenario)
    return {k: result.summary[k] for k in (*ROWS, "records")}, result


def spool_shaping(spool: str | Path, files: Sequence[str] | None = None,
                  ) -> tuple[Any, list[str], list[str]]:
    """The shaping in force when the journal was written: `files` (``--shaping``)
    if given, else the copies the spool keeps.  (the merged `Shaping` or None,
    the files' names, the files the simulator reads)."""
    if files is not None:
        from engine.live.reload import read_shaping

        return read_shaping(files), list(files), list(files)
    from engine.live.spool_files import shaping_in_spool

    shaping, kept = shaping_in_spool(journal_path(spool).parent)
    return shaping, [k.file for k in kept or ()], [str(k.copy) for k in kept or ()]


def compare(spool: str | Path, policy_file: str | Path, *, original: str | Path | None = None,
            world: str | Path | None = None, seed: int = 1,
            shaping: Sequence[str] | None = None) -> dict[str, Any]:
    """Both outcomes for `spool`: ``{"actual": ..., "simulated": ..., ...}``.  Both
    run with the shaping files in force (`spool_shaping`): the what-if changes the
    policy only."""
    from engine.policy import Policy

    journal_path(spool)  # a missing journal is named before anything else
    original_path = Path(original) if original is not None else Path(spool) / "policy.py"
    if original is None and not original_path.is_file():  # egress deliver of a Lua policy
        original_path = Path(spool) / "policy.lua"
    if not original_path.is_file():
        raise ReplayError(f"no original policy at {str(original_path)!r}: egress deliver keeps "
                          "a copy in SPOOL/policy.py; give it with --original")
    shaped, names, sim_files = spool_shaping(spool, shaping)
    actual, records = actual_outcome(spool, Policy.from_file(original_path), shaped)
    arrivals = read_traffic(spool)
    simulated, result = simulated_outcome(arrivals, policy_file, world=load_world(world),
                                          seed=seed, name=Path(spool).name,
                                          shaping_files=sim_files)
    return {"spool": str(spool), "original_policy": str(original_path),
            "policy": str(policy_file), "world": str(world) if world else "default",
            "shaping": {"files": names, "from": "spool" if shaping is None else "--shaping"},
            "actual": actual, "simulated": simulated,
            "_records": records, "_result": result}


def _show(row: str, value: Any) -> str:
    from engine.durations import show_duration

    if value is None:
        return "-"
    if row == "drain_time":
        return show_duration(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def replay_command(args: Any) -> int:
    """The body of ``egress replay`` (see engine.cli)."""
    out = compare(args.spool, args.policy, original=args.original, world=args.world,
                  seed=args.seed, shaping=args.shaping)
    records, result = out.pop("_records"), out.pop("_result")
    if args.out:
        target = Path(args.out)
        target.mkdir(parents=True, exist_ok=True)
        (target / "comparison.json").write_text(json.dumps(out, indent=2) + "\n")
        with (target / "actual_records.jsonl").open("w") as fh:
            for r in records:
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
        result.write(target / "simulated", plot=False)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    # Each side is named by its policy file's path as given (both are often
    # "policy.py"), on its own line so a long path is never cut off.
    console = Console(highlight=False)
    console.print(f"actual:    what happened, replayed with {out['original_policy']}",
                  soft_wrap=True)
    console.print(f"simulated: the same arrivals with {args.policy} "
                  f"(world: {out['world']})", soft_wrap=True)
    shaped = out["shaping"]
    console.print(f"shaping (both, from {'the spool' if shaped['from'] == 'spool' else '--shaping'}"
                  f"): {', '.join(shaped['files']) or 'none'}", soft_wrap=True)
    table = Table(title=f"egress replay of {args.spool}")
    table.add_column("")
    table.add_column("actual", justify="right")
    table.add_column("simulated", justify="right")
    for row in ROWS:
        table.add_row(row.replace("_", " "), _show(row, out["actual"][row]),
                      _show(row, out["simulated"][row]))
    console.print(table)
    return 0
