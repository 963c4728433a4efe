"""sim.host_behaviour: one host's answers, the same in the simulator and the lab.

The lab is real servers on loopback (tests/support/lab_kit.py), the sim is
`sim.world.World`; both are given the same generator state, and must give
the same replies in the same order and count the same faults.  Partial
outages are checked against the binomial law, and whole replies (an
outage's, a fault's) verbatim, with their validation errors naming the field.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from engine.effects import SmtpCommand, Verb
from lab.world import Lab
from sim.connections import PathConnections
from sim.host_behaviour import BODY_OK, MAIL_OUTAGE, HostBehaviour, HostCounters, Txn
from sim.scenario import Scenario, ScenarioError
from sim.world import World
from tests.support.lab_kit import Client, greet, scenario, with_lab

MX = "mx.lab.test"
TXN = (
    SmtpCommand(verb=Verb.MAIL, arg="a@x.test"),
    SmtpCommand(verb=Verb.RCPT, arg="b@lab.test"),
    SmtpCommand(verb=Verb.RCPT, arg="c@lab.test"),
    SmtpCommand(verb=Verb.DATA),
)
FAULTY = {
    "tempfail_mail": 0.1,
    "tempfail_rcpt": {"probability": 0.2, "reply": "452 4.2.2 Mailbox full"},
    "permfail_rcpt": 0.1,
    "tempfail_data": 0.15,
    "permfail_data": {"probability": 0.1, "reply": "550 5.7.1 Spam"},
    "outages": [{"start": "0s", "end": "1h", "mode": "tempfail", "probability": 0.2,
                 "reply": "451 4.7.1 Try again later"}],
}
ROUNDS = 40


def _sim_trace(sc: Scenario, rng: random.Random) -> list[str]:
    w = World(sc, rng)
    out = [str(w.connect(MX, "a", 0.0).banner).split(" ")[0], str(w.ehlo(MX, 0.0)[1].code)]
    return out + _sim_rounds(w)


def _sim_rounds(w: World) -> list[str]:
    """ROUNDS transactions on the world's open connection, as the lab's client sends them."""
    out = []
    for _ in range(ROUNDS):
        replies = [r for _, r in w.reply_batch(MX, TXN, 0.0)]
        out.extend(str(r) for r in replies)
        if replies[-1].code == 354:
            out.append(str(w.body(MX, 20, 0.0)[1]))
    return out


def test_sim_and_lab_answer_alike_for_the_same_draws() -> None:
    sc = scenario(FAULTY)

    async def body(lab: Lab) -> tuple[list[str], dict[str, int]]:
        c = await greet(lab)
        out = ["220", "250"]
        for _ in range(ROUNDS):
            replies = await c.send("MAIL FROM:<a@x.test>", "RCPT TO:<b@lab.test>",
                                   "RCPT TO:<c@lab.test>", "DATA")
            out.extend(replies)
            if replies[-1].startswith("354"):
                out.extend(await c.send("x" * 18 + "\r\n."))
        c.close()
        return out, lab.counters()[MX]

    lab_out, counters = with_lab(sc, body)
    # The lab's generator for this host: `lab.world.Lab` seeds it so.
    sim_out = _sim_trace(sc, random.Random(f"lab:{sc.seed}:{MX}"))
    assert lab_out == sim_out
    assert "451 4.7.1 Try again later" in sim_out  # the partial outage hit some
    assert "452 4.2.2 Mailbox full" in sim_out
    codes = [line.split(" ")[0] for line in sim_out]
    assert counters["accepted"] == sim_out.count(str(BODY_OK))
    assert counters["deferred"] == sum(codes.count(c) for c in ("451", "452", "450"))
    assert counters["rejected"] == codes.count("550")


def test_counters_count_connections_the_same_way() -> None:
    spec = scenario({"max_connections": 1}).hosts[MX]
    host, counters, rng = HostBehaviour(spec), HostCounters(), random.Random(1)
    for _ in range(3):
        counters.connected(host.connect(counters.open, 0.0, rng))
    assert (counters.connections, counters.open, counters.busy, counters.peak_connections) == (
        3, 3, 2, 3)
    counters.released()
    assert counters.open == 2
    tally: list[tuple[str, int]] = []
    paths = PathConnections(lambda p, n: tally.append((p, n)))
    paths.opened(1, "a")
    paths.opened(2, "a")
    paths.ended(1)
    paths.ended(1)  # a second end of the same connection is ignored
    assert paths.counts() == {"a": 1} and tally == [("a", 1), ("a", 2)]


# -- partial outages --------------------------------------------------------------------


def _host(fields: dict[str, Any]) -> HostBehaviour:
    return HostBehaviour(scenario(fields).hosts[MX])


@pytest.mark.parametrize("p", [0.3, 0.05])
def test_partial_tempfail_outage_hits_each_mail_with_its_probability(p: float) -> None:
    host = _host({"outages": [{"start": "10s", "end": "20s", "mode": "tempfail",
                               "probability": p}]})
    rng = random.Random(3)
    n = 20_000
    hits = sum(
        host.batch(TXN[:1], Txn(), 15.0, rng)[0][1] is MAIL_OUTAGE for _ in range(n))
    # binomial: mean n p, standard deviation sqrt(n p (1 - p)); 5 sd either side
    assert abs(hits - n * p) < 5 * math.sqrt(n * p * (1 - p))
    state = rng.getstate()
    assert host.batch(TXN[:1], Txn(), 25.0, rng)[0][1].code == 250  # outside: no draw
    assert rng.getstate() == state


def test_whole_outage_draws_nothing_so_old_scenarios_keep_their_stream() -> None:
    host = _host({"outages": [{"start": "0s", "end": "20s", "mode": "tempfail"},
                              {"start": "30s", "end": "40s", "mode": "refuse"}]})
    rng = random.Random(3)
    state = rng.getstate()
    assert host.batch(TXN[:1], Txn(), 5.0, rng)[0][1] is MAIL_OUTAGE
    assert host.connect(0, 35.0, rng).kind == "refused"
    assert rng.getstate() == state


@pytest.mark.parametrize(("mode", "kind"), [("refuse", "refused"), ("blackhole", "blackhole")])
def test_partial_connection_outages_by_attempt(mode: str, kind: str) -> None:
    sc = scenario({"outages": [{"start": "0s", "end": "1h", "mode": mode,
                                "probability": 0.25}]})
    w = World(sc, random.Random(9))
    n = 8000
    kinds = [w.connect(MX, "a", 1.0).kind for _ in range(n)]
    assert abs(kinds.count(kind) - n * 0.25) < 5 * math.sqrt(n * 0.25 * 0.75)
    assert kinds.count("ok") + kinds.count(kind) == n


def test_partial_refuse_outage_in_the_lab_resets_some_connections() -> None:
    sc = scenario({"outages": [{"start": "0s", "end": "1h", "mode": "refuse",
                                "probability": 0.5}]})

    async def body(lab: Lab) -> dict[str, int]:
        for _ in range(30):
            try:
                c = await greet(lab)
                c.close()
            except (ConnectionError, AssertionError):
                pass
        return lab.counters()[MX]

    counters = with_lab(sc, body)
    assert counters["connections"] == 30
    assert 0 < counters["refused"] < 30


# -- whole replies ------------------------------------------------------------------------


def test_outage_and_fault_replies_replace_the_defaults() -> None:
    host = _host({
        "tempfail_mail": {"probability": 1.0, "reply": "421 4.7.0 Slow down"},
        "outages": [{"start": "0s", "end": "1s", "mode": "tempfail",
                     "reply": "451 4.7.500 Server busy. Please try again later"}],
    })
    rng = random.Random(1)
    assert str(host.batch(TXN[:1], Txn(), 0.5, rng)[0][1]) == (
        "451 4.7.500 Server busy. Please try again later")
    assert str(host.batch(TXN[:1], Txn(), 2.0, rng)[0][1]) == "421 4.7.0 Slow down"
    host = _host({"permfail_rcpt": {"probability": 1.0, "reply": "550 No such mailbox"}})
    replies = host.batch(TXN, Txn(), 0.0, rng)
    assert [str(r) for _, r in replies] == [
        "250 2.1.0 Sender OK", "550 No such mailbox", "550 No such mailbox",
        "554 5.5.1 No valid recipients"]


@pytest.mark.parametrize(("fields", "where", "what"), [
    ({"outages": [{"start": "0s", "end": "1s", "mode": "refuse", "reply": "451 x"}]},
     'hosts."mx.lab.test".outages[0].reply', "only a tempfail outage"),
    ({"outages": [{"start": "0s", "end": "1s", "mode": "tempfail", "reply": "550 5.7.1 x"}]},
     'hosts."mx.lab.test".outages[0].reply', "a 4xx SMTP reply"),
    ({"outages": [{"start": "0s", "end": "1s", "mode": "tempfail", "reply": "451 5.7.1 x"}]},
     'hosts."mx.lab.test".outages[0].reply', "class matching"),
    ({"outages": [{"start": "0s", "end": "1s", "probability": 1.5}]},
     'hosts."mx.lab.test".outages[0].probability', "a probability between 0 and 1"),
    ({"tempfail_rcpt": {"reply": "452 4.2.2 Full"}},
     'hosts."mx.lab.test".tempfail_rcpt.probability', "required"),
    ({"permfail_rcpt": {"probability": 0.1, "reply": "452 4.2.2 Full"}},
     'hosts."mx.lab.test".permfail_rcpt.reply', "a 5xx SMTP reply"),
    ({"tempfail_data": {"probability": 0.1, "text": "x"}},
     'hosts."mx.lab.test".tempfail_data.text', "unknown field"),
    ({"refuse_connections": {"probability": 0.1}},
     'hosts."mx.lab.test".refuse_connections', "a probability between 0 and 1"),
])
def test_bad_replies_and_probabilities_name_the_field(
    fields: dict[str, Any], where: str, what: str
) -> None:
    with pytest.raises(ScenarioError) as err:
        scenario(fields)
    assert f"{where}: " in str(err.value)
    assert what in str(err.value)


# -- pushback: per-source limits, the same in both ---------------------------------------

PUSHBACK: dict[str, Any] = {
    **FAULTY,
    "pushback": {
        "message_rate": "8/h",
        "rate_reply": "421 4.7.0 [TS01] Messages from {source} temporarily deferred",
        "connections": 1,
        "connection_reply": "421 4.7.0 [TS02] Too many connections from {source}",
        # a source starts at 0.7 and every over-rate MAIL costs a fifth; lost
        # reputation defers MAILs: draws that must come in the same order both ways
        "reputation": 0.7,
        "over_rate_penalty": 0.2,
        "reputation_deferral": 0.9,
        "recovery": "1000d",
    },
}


def test_a_host_pushing_back_per_source_answers_alike_in_sim_and_lab() -> None:
    sc = scenario(PUSHBACK)

    async def body(lab: Lab) -> tuple[list[str], str, dict[str, int]]:
        c = await greet(lab)
        out = ["220", "250"]
        second = await Client.open(lab)  # the source's second connection
        turned_away = await second.reply()
        second.close()
        for _ in range(ROUNDS):
            replies = await c.send("MAIL FROM:<a@x.test>", "RCPT TO:<b@lab.test>",
                                   "RCPT TO:<c@lab.test>", "DATA")
            out.extend(replies)
            if replies[-1].startswith("354"):
                out.extend(await c.send("x" * 18 + "\r\n."))
        c.close()
        return out, turned_away, lab.counters()[MX]

    lab_out, turned_away, counters = with_lab(sc, body)
    rng = random.Random(f"lab:{sc.seed}:{MX}")
    w = World(sc, rng)
    sim_out = [str(w.connect(MX, "a", 0.0).banner).split(" ")[0], str(w.ehlo(MX, 0.0)[1].code)]
    second = w.connect(MX, "a", 0.0)
    w.release(MX)
    sim_out += _sim_rounds(w)
    assert turned_away == str(second.banner) == (
        "421 4.7.0 [TS02] Too many connections from 127.0.0.1")
    assert lab_out == sim_out
    over = "421 4.7.0 [TS01] Messages from 127.0.0.1 temporarily deferred"
    assert over in sim_out
    assert counters["over_rate"] == sim_out.count(over) > 0
    pushback = w.pushback(MX)
    assert pushback is not None and counters["turned_away"] == pushback.turned_away == 1
    # the reputation deferrals, drawn, came out the same too
    assert counters["reputation_deferred"] == pushback.reputation_deferred > 0
