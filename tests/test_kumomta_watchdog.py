"""dispatcher_progress_watchdog_timeout: a connection with no progress is aborted.

KumoMTA: crates/kumod/src/ready_queue.rs (``check_dispatcher_progress``:
abort the dispatcher whose last_activity is older than the threshold;
``impl Drop for Dispatcher``: its message back to the scheduled queue with
IncrementAttempts::No and a Delayed record ``451 4.4.1 dispatcher watchdog
aborted task; ... time_in_phase=...``), crates/kumod/src/metrics_helper.rs
(``dispatcher_watchdog_aborted_total``), crates/kumo-api-types/src/
egress_path.rs (the key, an optional duration).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from engine.effects import Close, Effect, Verb
from engine.engine import Engine
from engine.reply import Reply
from tests.support.dns_server import DnsServer
from tests.support.engine_harness import PATH, World, of, policy, records, submit
from tests.support.live_harness import Live, path_policy, zone_for
from tests.support.smtp_scripted import Script, ScriptedServer, Step


class SilentDot(World):
    """A peer that takes the message body and never answers the final dot."""

    def _reply(self, cmd: Any) -> Reply:
        if cmd.verb is Verb.BODY:
            raise LookupError("no reply")
        return super()._reply(cmd)

    def _answer(self, e: Effect) -> None:
        with contextlib.suppress(LookupError):
            super()._answer(e)


def test_a_connection_without_progress_is_aborted_and_its_message_delayed() -> None:
    eng = Engine(policy(dispatcher_progress_watchdog_timeout="20s"), seed=1)
    w = SilentDot(eng)
    w.feed(submit(1))
    assert ("watchdog", 1) in w.timers and w.timers[("watchdog", 1)] == 20.0
    fx = w.run(until=20.0)
    assert [c.conn for c in of(fx, Close)] == [1]
    [rec] = records(fx, "Delayed")
    assert rec["response"]["code"] == 451
    assert rec["response"]["enhanced_code"] == {"class": 4, "subject": 4, "detail": 1}
    assert rec["response"]["content"].startswith("dispatcher watchdog aborted task; phase=")
    assert rec["response"]["content"].endswith("time_in_phase=20s")
    assert rec["num_attempts"] == 0 and rec["site"] == PATH
    assert eng.counters["dispatcher_watchdog_aborted_total"] == 1
    assert 1 not in eng.conns and eng.queued_count == 1  # not lost: back for another try


def test_progress_pushes_the_watchdog_back() -> None:
    # a reply at 15 s: the check at 20 s re-arms for 35 s instead of aborting; an
    # idle connection is no progress, so at 35 s it goes, as KumoMTA's Idle phase does
    eng = Engine(policy(dispatcher_progress_watchdog_timeout="20s", idle_timeout="50s"),
                 seed=1)
    w = World(eng)
    w.feed(submit(1))
    w.now = 15.0
    w.feed(submit(2, at=15.0))  # the idle connection takes it
    fx = w.run(until=34.0)
    assert of(fx, Close) == [] and w.timers[("watchdog", 1)] == 35.0
    fx = w.run(until=35.0)
    assert [c.conn for c in of(fx, Close)] == [1] and records(fx, "Delayed") == []
    assert eng.counters["dispatcher_watchdog_aborted_total"] == 1


def test_without_the_key_no_watchdog_is_armed() -> None:
    w = SilentDot(Engine(policy(), seed=1))
    w.feed(submit(1))
    assert not [t for t in w.timers if t[0] == "watchdog"]


@pytest.mark.timeout(30)
def test_live_delivery_aborts_a_stalled_connection() -> None:
    script = Script({"DOT": [Step(None, then="hang"), Step("250 2.0.0 OK queued")]})

    async def go() -> list[dict[str, Any]]:
        with DnsServer(zone_for()) as dns:
            async with ScriptedServer(script) as server, Live(
                    path_policy(server.port, dispatcher_progress_watchdog_timeout="1s",
                                data_dot_timeout="30s"), dns.port) as live:
                live.submit()
                await live.wait_for(lambda: bool(live.of_type("Delayed")), timeout=10,
                                    what="the watchdog's Delayed record")
                return list(live.records)

    recs = asyncio.run(go())
    [delayed] = [r for r in recs if r["type"] == "Delayed"]
    assert "dispatcher watchdog aborted task" in delayed["response"]["content"]
    assert delayed["num_attempts"] == 0


def test_the_simulator_aborts_a_host_slower_than_the_watchdog() -> None:
    # the engine's watchdog runs in the simulator as in live delivery: a host
    # that takes 30 s over the body trips a 10 s watchdog
    import sim
    sc = sim.Scenario.from_dict({
        "name": "slow", "horizon": "2m",
        "traffic": [{"domain": "example.com", "messages": 1, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx1.example.com", "preference": 10}]}},
        "hosts": {"mx1.example.com": {"data_latency": "30s"}},
        "egress_path": {"dispatcher_progress_watchdog_timeout": "10s"},
    })
    recs = sim.run(sc, records="all").records
    delayed = [r for r in recs if r["type"] == "Delayed"]
    assert delayed and all("dispatcher watchdog aborted task" in r["response"]["content"]
                           for r in delayed)
    assert not [r for r in recs if r["type"] == "Delivery"]
