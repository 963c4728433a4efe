"""`Engine.handle_replies`: a write's replies in one call are the replies one
`handle` at a time.

The simulator hands the engine each write's replies in one call (RSET, MAIL,
RCPT and DATA of a pipelined batch), where it used to feed one Response
each.  The batch must change nothing a run shows: the same records, the
same summary, with replies that close the connection mid-batch (a 421 to
MAIL, a 5xx, a timeout) and with ones that do not.  And at the engine's
own level: the same effects as the one-at-a-time calls, but for the
session timer's earlier armings, which the batch leaves out; nothing read
past a reply that closes the connection; the same state after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sim.result as result
from engine.effects import Effect, Send, SetTimer, Verb, closes
from engine.engine import Engine
from engine.events import Response
from engine.reply import Reply
from sim.driver import SimDriver
from sim.driver_conns import _Replies
from sim.scenario import Scenario
from tests.support.engine_harness import World, policy, submit

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


class _OneByOne(SimDriver):
    """The simulator as it was: each reply of a write its own `handle`, and
    none once the connection is gone."""

    def _replies(self, ev: _Replies) -> None:
        conn_id, now = ev.conn, self.env.now
        for reply in ev.replies:
            if conn_id not in self._conns:
                return
            self._feed(Response(at=now, conn=conn_id, reply=reply))


def _run(scenario: Scenario, driver: type[SimDriver], monkeypatch: Any) -> Any:
    monkeypatch.setattr(result, "SimDriver", driver)
    return result.run(scenario, keep_records=True, exact=True)


def _summary(run: Any) -> dict[str, Any]:
    return {k: v for k, v in run.summary.items() if "wall" not in k and "elapsed" not in k}


@pytest.mark.parametrize("name, overrides", [
    # 421 to over-rate MAILs: the connection closes mid-batch, on the MAIL reply
    ("shaping_pushback", ["traffic[0].messages=1500"]),
    # refused connections, blackholes, timeouts
    ("connection_failures", []),
    # a full ready queue, re-delays (the exact path), retries
    ("max_ready_squeeze", ["traffic[0].messages=2000"]),
])
def test_a_run_with_batched_replies_is_the_run_one_reply_at_a_time(
        name: str, overrides: list[str], monkeypatch: Any) -> None:
    scenario = Scenario.from_toml(SCENARIOS / f"{name}.toml", overrides)
    batched = _run(scenario, SimDriver, monkeypatch)
    scenario = Scenario.from_toml(SCENARIOS / f"{name}.toml", overrides)
    single = _run(scenario, _OneByOne, monkeypatch)
    assert batched.records == single.records
    assert _summary(batched) == _summary(single)
    assert batched.summary["delivered"] > 0


def test_shaping_pushback_closes_connections_mid_batch(monkeypatch: Any) -> None:
    """The case the first test's first scenario is there for does happen: a
    write's replies whose engine effects close the connection before the last."""
    seen: list[tuple[int, int]] = []  # (replies in the write, replies read)
    original = Engine.handle_replies

    def spy(self: Engine, at: float, conn: int, replies: list[Reply]) -> list[Effect]:
        out = original(self, at, conn, replies)
        if closes(out, conn):
            seen.append((len(replies), len(out)))
        return out

    monkeypatch.setattr(Engine, "handle_replies", spy)
    scenario = Scenario.from_toml(SCENARIOS / "shaping_pushback.toml",
                                  ["traffic[0].messages=1500"])
    result.run(scenario, keep_records=False)
    assert any(n > 1 for n, _ in seen), "no multi-reply write closed its connection"


# -- the engine's own level ------------------------------------------------------


def _at_idle() -> tuple[Engine, World, int]:
    """An engine with one session idle after delivering a first message (the
    next write is the pipelined RSET, MAIL, RCPT, DATA), and its conn."""
    eng = Engine(policy(max_ready=10, connection_limit=1), seed=3)
    world = World(eng)
    world.feed(submit(1))  # delivered; the session goes idle
    conns = [c for c, ctx in eng.conns.items() if ctx.session is not None]
    assert len(conns) == 1
    return eng, world, conns[0]


def _pipelined_write(eng: Engine, world: World, conn: int) -> tuple[Engine, list[Verb]]:
    """Submit a second message; return the engine right after it sent the
    batch, and the batch's verbs."""
    fx = eng.handle(submit(2, at=world.now))
    sends = [e for e in fx if type(e) is Send and e.conn == conn]
    assert sends, fx
    return eng, [c.verb for c in sends[-1].commands]


OK_REPLIES = {Verb.RSET: Reply.make(250, "2.0.0", "reset"), Verb.MAIL: Reply.make(250, None, "ok"),
              Verb.RCPT: Reply.make(250, None, "ok"), Verb.DATA: Reply.make(354, None, "go")}


@pytest.mark.parametrize("fail_at, reply", [
    (None, None),  # every reply a success: the body goes out
    (1, Reply.make(421, "4.7.0", "over rate")),  # MAIL 421: the session closes there
    (2, Reply.make(550, "5.1.1", "no such user")),  # RCPT 550: refused, nothing closes
    (0, Reply.make(421, None, "closing")),  # the first reply closes
])
def test_handle_replies_is_handle_per_reply(fail_at: int | None, reply: Reply | None) -> None:
    eng_a, world_a, conn = _at_idle()
    eng_b, _, conn_b = _at_idle()
    assert conn == conn_b
    _, verbs = _pipelined_write(eng_a, world_a, conn)
    _pipelined_write(eng_b, world_a, conn)
    replies = [OK_REPLIES[v] for v in verbs]
    if fail_at is not None:
        assert reply is not None
        replies[fail_at] = reply
    at = world_a.now + 0.5

    one_by_one: list[Effect] = []
    for r in replies:
        fx = eng_a.handle(Response(at=at, conn=conn, reply=r))
        one_by_one.extend(fx)
        if closes(fx, conn):
            break
    batched = eng_b.handle_replies(at, conn, replies)

    # the same effects, but for the session timer's earlier armings
    timer = ("conn", conn)
    armings = [i for i, e in enumerate(one_by_one) if type(e) is SetTimer and e.timer == timer]
    expected = [e for i, e in enumerate(one_by_one) if i not in armings[:-1]]
    assert batched == expected
    assert len([e for e in batched if type(e) is SetTimer and e.timer == timer]) \
        == min(1, len(armings))
    # the same state after: the timers, the sessions, every record to come
    assert eng_b.armed_timers() == eng_a.armed_timers()
    assert eng_b.snapshot() == eng_a.snapshot()
    if fail_at in (0, 1):
        assert len(replies) > fail_at + 1  # replies were left unread


def test_handle_replies_refuses_what_handle_refuses() -> None:
    eng, world, conn = _at_idle()
    with pytest.raises(Exception) as batched:
        eng.handle_replies(world.now, conn + 99, [Reply.make(250, None, "ok")])
    eng2, world2, _ = _at_idle()
    with pytest.raises(Exception) as single:
        eng2.handle(Response(at=world2.now, conn=conn + 99, reply=Reply.make(250, None, "ok")))
    assert type(batched.value) is type(single.value)
    assert str(batched.value) == str(single.value)
