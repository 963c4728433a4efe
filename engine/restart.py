"""`Restarted`: what the engine does when its driver comes back after a stop or crash.

A journal replayed into a fresh engine rebuilds the state of the previous
process exactly, including what that process had in the air: open sessions,
messages held by connections, DNS lookups awaiting an answer, armed timers.
None of that exists any more (the sockets, the lookups and the timer handles
died with the process), so the driver feeds one `Restarted` event after the
replay, and this module reconciles the state with the new, empty world:

- every connection is forgotten without a record, and a transaction it had
  started is not counted as an attempt (it never got an outcome, and
  attempts are counted on requeue): its held
  message (in flight or not) goes back to the head of its ready queue (or,
  when an admin bounce waits for it, through the retry path that carries
  the bounce out), so it is retried at once;
- lookups that were pending are asked again (`Resolve` or `ResolveHosts`,
  `FetchMtaSts`);
  TLSA waits belonged to the dropped connections and are forgotten (the new
  connections ask again);
- every armed timer is re-emitted as `SetTimer`, since the new driver has
  none of them; a timer already past is due at once;
- a `Drain` of the previous process is lifted;
- every path's cached config is marked stale, so the (possibly edited)
  policy is asked again at next use, and every ready queue with messages
  is pumped, so connections reopen.

The event is journaled like any other, so a replay of the journal reaches
the same state.  A message that was being delivered at the crash may have
reached its recipient already: delivery is at least once, never lost.
"""

from __future__ import annotations

from engine import dispatch, shared_limits
from engine.core import Core
from engine.domains import lookup
from engine.effects import FetchMtaSts, SetTimer
from engine.events import Restarted
from engine.lifecycle import retry_later, return_to_ready

__all__ = ["restarted"]

_CONN_TIMERS = ("conn", "idle", "msgrate", "connrate")


def restarted(eng: Core, ev: Restarted) -> None:
    """Drop every session, re-issue pending lookups, re-arm timers, pump."""
    now = ev.at
    eng.draining = False  # a Drain of the previous process ends with it
    for conn, ctx in list(eng.conns.items()):
        dispatch.mark_closing(eng, ctx)
        dispatch.release(eng, ctx)
        ctx.rq.conns.pop(conn, None)
        del eng.conns[conn]
        for kind in _CONN_TIMERS:
            eng.timers.pop((kind, conn), None)
        ctx.idle = False
        msg, ctx.msg = ctx.msg, None
        if msg is None:
            continue
        if eng.bounce_on_return and msg.id in eng.bounce_on_return:
            retry_later(eng, msg, now)
        else:
            return_to_ready(eng, ctx.rq, msg)
    shared_limits.reset(eng)  # the old process's asks are never answered
    eng.tlsa_waiting.clear()
    for key, ds in eng.domains.items():
        if ds.resolving:
            eng.out.append(lookup(key, ds))
    for dom in eng.sts_pending:
        eng.out.append(FetchMtaSts(domain=dom))
    for timer, at in eng.timers.items():
        eng.out.append(SetTimer(timer=timer, at=at))
    for rq in list(eng.paths.values()):
        # The policy may have changed with the process: ask it again at next use.
        rq.cfg_at = float("-inf")
        if rq.messages:
            dispatch.pump(eng, rq, now)
