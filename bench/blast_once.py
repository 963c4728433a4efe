"""One blast, once: its CPU per message, for side-by-side figures of two trees.

`bench.sim` answers "how long does the blast take"; this answers "did this
change make a simulated message cheaper", which on a machine shared with
other work needs a figure the neighbours do not move.  Two ways:

* CPU seconds per message of one run (``time.process_time``), run A B A B
  from two checkouts and compared as ratios::

      cd TREE && PYTHONPATH=. python -m bench.blast_once 100000

* instructions per message, which no neighbour changes: the same runner
  under valgrind's cachegrind, at two sizes, the difference divided by the
  difference in messages (so the start-up, imports and the scenario's
  set-up, cancels out)::

      valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
          python -m bench.blast_once 2000      # then 8000; (I8000 - I2000) / 6000

  Instructions are not time (a cache miss costs more than an add), so a
  change found this way is confirmed in CPU seconds, alternated.

The blast is `bench.sim.blast_scenario`: four providers, realistic
latencies, 2 % tempfails, default max_ready, every message at t=0; records
counted, not kept, as ``egress simulate`` without ``--out`` runs it.
"""

from __future__ import annotations

import argparse
import resource
import time


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.blast_once",
                                 description="one blast; its CPU per message")
    ap.add_argument("messages", type=int, help="messages in the blast, e.g. 100000")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.messages < 1:
        ap.error("messages must be at least 1")

    from bench.sim import blast_scenario
    from sim.result import run
    from sim.scenario import Scenario

    scenario = Scenario.from_dict(blast_scenario(args.messages, seed=args.seed))
    cpu, wall = time.process_time(), time.perf_counter()
    result = run(scenario, keep_records=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"blast {args.messages:,}: {cpu / args.messages * 1e6:.1f} CPU us per message, "
          f"{wall:.1f} s wall, delivered {result.summary['delivered']:,}, "
          f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
