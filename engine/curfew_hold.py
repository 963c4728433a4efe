"""What a curfew does: hold matching messages in their scheduled queue until it ends.

`flow.promote` asks `hold` for every message due while the shaping files
name curfews (`engine.curfew`).  A message a curfew holds gets a Delayed
record worded as KumoMTA words a suspended scheduled queue
(``451 4.4.4 KumoMTA internal: scheduled queue is suspended: ...``, here
naming the curfew, its hours and zone, and when it ends) and goes back to the
scheduled queue due at the curfew's end: the scheduled queue's one promote
timer releases every held message then, with no retries in between.  The
attempt is not counted (the message was never offered to a host).

A curfew also starts while messages it covers sit in ready queues.  So when a
matching message is promoted outside the curfew, the timer
``("curfew", "<n>")`` is armed at the curfew's next start; when it fires, the
ready queues give their matching messages (not those a connection holds)
back to the scheduled queue the same way.  The timer is armed only while such
mail flows, so an idle engine holds no curfew timer.

Wall time is the engine's epoch plus the event time, both Unix seconds in
live delivery, the scenario's start plus simulated time in the simulator.  A
driver fires a timer at a float sum that may differ from the instant the
engine computed by a few ulps, so the curfew is read one millisecond after
the event (`_SLACK`): a release at exactly the end is never held again, and
a start timer always finds the curfew begun.
"""

from __future__ import annotations

from typing import Any

from engine import records
from engine.core import Core
from engine.curfew import Curfew
from engine.effects import Log
from engine.events import TimerFired
from engine.message import Message, QueueInfo
from engine.reply import Reply
from engine.retry import iso

__all__ = ["CurfewState", "active", "hold", "reap", "started"]

_SLACK = 0.001  # seconds


class CurfewState:
    """Which curfews hold which scheduled queue, and each one's status cached
    until it changes (both derived from the shaping files and time only)."""

    __slots__ = ("armed", "by_queue", "curfews", "status")

    def __init__(self, curfews: list[Curfew]) -> None:
        self.curfews = curfews
        self.by_queue: dict[str, tuple[int, ...]] = {}
        # index -> (valid from, held, until): Curfew.status at a time in [from, until)
        self.status: dict[int, tuple[float, bool, float]] = {}
        self.armed: dict[int, float] = {}  # index -> the start its timer is armed for

    def matching(self, q: QueueInfo) -> tuple[int, ...]:
        found = self.by_queue.get(q.name)
        if found is None:
            found = self.by_queue[q.name] = tuple(
                i for i, c in enumerate(self.curfews) if c.matches(q.domain, q.tenant, q.campaign))
        return found

    def at(self, i: int, t: float) -> tuple[bool, float]:
        cached = self.status.get(i)
        if cached is not None and cached[0] <= t < cached[2]:
            return cached[1], cached[2]
        held, until = self.curfews[i].status(t)
        self.status[i] = (t, held, until)
        return held, until


def active(eng: Core) -> bool:
    """True when the shaping files name any curfew."""
    return bool(getattr(eng.shaping, "curfews", None))


def _state(eng: Core) -> CurfewState:
    curfews = eng.shaping.curfews
    st: CurfewState | None = eng.curfew_state
    if st is None or st.curfews is not curfews:  # first use, or the files were reloaded
        st = eng.curfew_state = CurfewState(curfews)
    return st


def hold(eng: Core, msg: Message, now: float) -> bool:
    """At promotion: hold `msg` if a curfew covering its queue is in force (True),
    else arm the start timer of each curfew that covers it."""
    st = _state(eng)
    found = st.matching(msg.queue)
    if not found:
        return False
    t = eng.epoch + now + _SLACK
    holder = None
    release = 0.0
    for i in found:
        held, until = st.at(i, t)
        if held:
            if until > release:
                holder, release = i, until
        elif until != float("inf") and st.armed.get(i) != until:
            st.armed[i] = until
            eng.set_timer(("curfew", str(i)), until - eng.epoch)
    if holder is None:
        return False
    _hold(eng, msg, st.curfews[holder], release, now)
    return True


def _hold(eng: Core, msg: Message, curfew: Curfew, release: float, now: float) -> None:
    due = min(release - eng.epoch, msg.created + msg.queue.config.max_age)
    reply = Reply.make(451, "4.4.4", (
        f"KumoMTA internal: scheduled queue is suspended: curfew {curfew.name} "
        f"({curfew.hours} {curfew.tz.key}) until {iso(eng.epoch, due)}"))
    eng.out.append(Log(record=records.make_record(records.DELAYED, msg, now, eng.epoch, reply)))
    eng.sched.add(msg, due)


def started(eng: Core, ev: TimerFired) -> None:
    """``("curfew", "<n>")``: curfew n begins; the ready queues give back the
    messages it covers (those a connection holds go on)."""
    del eng.timers[ev.timer]
    now = ev.at
    st = _state(eng)
    i = int(ev.timer[1])
    armed_for = st.armed.pop(i, None)
    if i >= len(st.curfews):
        return  # the files were reloaded with fewer curfews
    t = max(eng.epoch + now, armed_for or 0.0) + _SLACK
    held, release = st.at(i, t)
    if not held:
        return
    curfew = st.curfews[i]
    for rq in eng.paths.values():
        if not rq.messages:
            continue
        keep: list[Any] = []
        taken: list[Message] = []
        for m in rq.messages:
            (taken if i in st.matching(m.queue) else keep).append(m)
        if taken:
            rq.messages.clear()
            rq.messages.extend(keep)
            for m in taken:
                _hold(eng, m, curfew, release, now)


def reap(eng: Core) -> None:
    """Forget which curfews cover the scheduled queues that are gone
    (`engine.lifecycle.reap_idle`)."""
    st: CurfewState | None = eng.curfew_state
    if st is not None and st.by_queue:
        queues = eng.queues
        st.by_queue = {name: found for name, found in st.by_queue.items() if name in queues}
