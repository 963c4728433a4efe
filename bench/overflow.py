"""Cost of one re-delay from a full ready queue, against the backlog behind it.

A path whose ready queue is full, with B messages waiting behind it, runs the
same step every simulated second: what is due comes out, `free` of them take
the ready queue's free slots, the rest are re-delayed by 0-60 s.  This times
that step for growing B, two ways:

* ``wheel``: `engine.overflow.OverflowWheel` (``fill(pop_due(t), ...)``), one
  draw and one list append per re-delayed message;
* ``heap``: one message at a time into a heap of exact due times (push and
  pop per message, each O(log B)), the shape of a sorted scheduled queue
  holding re-delays one by one (without the engine's record and timer per
  message, so it is a lower bound on what that costs).

The figure is CPU nanoseconds per re-delay (this process: steadier than wall
time on a shared machine); flat across B is the point.  Run:

    python -m bench.overflow                 # B = 10 k, 100 k, 1 M, 2 M
    python -m bench.overflow --quick         # B = 10 k, 50 k (smoke test)
"""

from __future__ import annotations

import argparse
import heapq
import random
import time

from engine.overflow import OverflowWheel

FREE_PER_SECOND = 100  # what a busy path of 32 connections delivers per second
SECONDS = 120  # two full turns of the 60 s spread


def wheel_step_cost(backlog: int, seconds: int = SECONDS) -> tuple[float, int]:
    """(ns per re-delay, re-delays) for `seconds` steps over a backlog of `backlog`."""
    rng = random.Random(1)
    wheel = OverflowWheel()
    wheel.add(range(backlog), 0.0, rng)
    wheel.redelays = 0
    started = time.process_time()
    for t in range(1, seconds + 1):
        now = float(t)
        wheel.fill(wheel.pop_due(now), FREE_PER_SECOND, now, rng)
    elapsed = time.process_time() - started
    return 1e9 * elapsed / max(wheel.redelays, 1), wheel.redelays


def heap_step_cost(backlog: int, seconds: int = SECONDS) -> tuple[float, int]:
    """The same steps, one message at a time through a heap of exact due times."""
    rng = random.Random(1)
    uniform = rng.uniform
    heap = [(uniform(0.0, 60.0), i, i) for i in range(backlog)]
    heapq.heapify(heap)
    seq = backlog
    redelays = 0
    push, pop = heapq.heappush, heapq.heappop
    started = time.process_time()
    for t in range(1, seconds + 1):
        now = float(t)
        free = FREE_PER_SECOND
        while heap and heap[0][0] <= now:
            _, _, item = pop(heap)
            if free:
                free -= 1
                continue
            seq += 1
            push(heap, (now + uniform(0.0, 60.0), seq, item))
            redelays += 1
    elapsed = time.process_time() - started
    return 1e9 * elapsed / max(redelays, 1), redelays


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two small backlogs")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    sizes = (10_000, 50_000) if args.quick else (10_000, 100_000, 1_000_000, 2_000_000)
    repeat = 1 if args.quick else args.repeat
    print(f"{'backlog':>10} {'re-delays':>11} {'wheel ns/re-delay':>18} {'heap ns/re-delay':>17}"
          f"  (median of {repeat}; {FREE_PER_SECOND} admitted per second, {SECONDS} s)")
    first: tuple[float, float] | None = None
    for b in sizes:
        wheel = sorted(wheel_step_cost(b) for _ in range(repeat))[repeat // 2]
        heap = sorted(heap_step_cost(b) for _ in range(repeat))[repeat // 2]
        first = first or (wheel[0], heap[0])
        print(f"{b:>10,} {wheel[1]:>11,} {wheel[0]:>18,.0f} {heap[0]:>17,.0f}"
              f"  (x{wheel[0] / first[0]:.2f}, x{heap[0] / first[1]:.2f} of the smallest)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
