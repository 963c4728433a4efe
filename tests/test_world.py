"""sim.world: the simulated remote side, per transaction phase; and its distributions."""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import numpy as np
import pytest

from engine.effects import SmtpCommand, Verb
from engine.events import (
    DnsFailure,
    MtaStsPolicy,
    MtaStsResolved,
    MxRecord,
    Resolved,
    ResolveFailed,
)
from engine.reply import Reply
from sim.distributions import Z99, Constant, LogNormal, Uniform
from sim.host_replies import BUSY
from sim.scenario import Scenario
from sim.world import World

MX = "mx.example.com"


def world(host: dict[str, Any] | None = None, seed: int = 1, **domains: Any) -> World:
    d: dict[str, Any] = {
        "traffic": [{"domain": "example.com", "messages": 1}],
        "domains": {"example.com": {"mx": [{"host": MX, "preference": 10}]}, **domains},
        "hosts": {MX: host or {}},
    }
    if domains:
        d["host_defaults"] = {}
    return World(Scenario.from_dict(d), random.Random(seed))


def txn(rcpts: int = 1) -> tuple[SmtpCommand, ...]:
    return (
        SmtpCommand(verb=Verb.MAIL, arg="a@b.example"),
        *(SmtpCommand(verb=Verb.RCPT, arg=f"r{i}@example.com") for i in range(rcpts)),
        SmtpCommand(verb=Verb.DATA),
    )


# -- distributions ------------------------------------------------------------------


def test_lognormal_matches_median_and_p99_over_many_samples() -> None:
    dist = LogNormal(0.02, 0.2)
    rng = random.Random(5)
    xs = sorted(dist.sample(rng) for _ in range(200_000))
    assert xs[len(xs) // 2] == pytest.approx(0.02, rel=0.02)
    assert xs[int(len(xs) * 0.99)] == pytest.approx(0.2, rel=0.05)
    ys = np.sort(dist.sample_many(np.random.default_rng(5), 200_000))
    assert ys[100_000] == pytest.approx(0.02, rel=0.02)
    assert ys[198_000] == pytest.approx(0.2, rel=0.05)
    assert dist.sigma == pytest.approx(math.log(10) / Z99)
    assert dist.mean == pytest.approx(statistics.fmean(xs), rel=0.02)


def test_uniform_and_constant() -> None:
    rng = random.Random(1)
    u = Uniform(1.0, 3.0)
    xs = [u.sample(rng) for _ in range(50_000)]
    assert min(xs) >= 1.0 and max(xs) <= 3.0
    assert statistics.fmean(xs) == pytest.approx(2.0, abs=0.02)
    state = rng.getstate()
    assert Constant(0.5).sample(rng) == 0.5
    assert rng.getstate() == state  # a constant draws nothing
    assert Constant(2.0).sample_many(np.random.default_rng(1), 3).tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LogNormal(0.0, 1.0), "median must be a number > 0"),
        (lambda: LogNormal(2.0, 1.0), "p99 must be greater than the median"),
        (lambda: Uniform(2.0, 1.0), "max must be a number >= min"),
        (lambda: Constant(-1.0), "a constant must be a finite number >= 0"),
    ],
)
def test_distribution_arguments_are_checked(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


# -- connections ------------------------------------------------------------------------


def test_max_connections_gives_421_beyond_it_and_release_frees_a_slot() -> None:
    w = world({"max_connections": 2, "connect_latency": "30ms"})
    a, b, c = (w.connect(MX, "192.0.2.1", 0.0) for _ in range(3))
    assert (a.kind, a.delay, a.banner.code) == ("ok", 0.03, 220)
    assert b.banner.code == 220
    assert (c.kind, c.banner) == ("ok", BUSY)
    assert str(c.banner) == "421 4.7.0 Too many concurrent connections; try again later"
    assert w.open_connections(MX) == 3
    w.release(MX)  # the 421 connection closes
    w.release(MX)
    assert w.connect(MX, "192.0.2.1", 1.0).banner.code == 220
    assert w.peak_connections(MX) == 3


def test_the_421_beyond_the_limit_costs_the_client_its_connect_overhead() -> None:
    # The churn of refused connections is paced by connect latency plus the
    # client's own cost of opening each one ([client] connect_overhead).
    d: dict[str, Any] = {
        "traffic": [{"domain": "example.com", "messages": 1}],
        "domains": {"example.com": {"mx": [{"host": MX, "preference": 10}]}},
        "hosts": {MX: {"max_connections": 1, "connect_latency": "5ms"}},
        "client": {"connect_overhead": "1ms"},
    }
    w = World(Scenario.from_dict(d), random.Random(1))
    first, busy = w.connect(MX, "a", 0.0), w.connect(MX, "a", 0.0)
    assert (first.banner.code, first.delay) == (220, pytest.approx(0.006))
    assert (busy.banner, busy.delay) == (BUSY, pytest.approx(0.006))


def test_release_without_connection_is_an_error() -> None:
    w = world()
    with pytest.raises(ValueError, match="without an open connection"):
        w.release(MX)
    with pytest.raises(KeyError, match=r"no host named 'nope\.example'"):
        w.connect("nope.example", "192.0.2.9", 0.0)


def test_outage_windows_refuse_blackhole_tempfail() -> None:
    w = world({"outages": [
        {"start": "10s", "end": "20s", "mode": "refuse"},
        {"start": "30s", "end": "40s", "mode": "blackhole"},
        {"start": "50s", "end": "60s", "mode": "tempfail"},
    ]})
    assert w.connect(MX, "a", 9.999).kind == "ok"
    assert w.connect(MX, "a", 10.0).kind == "refused"
    assert w.connect(MX, "a", 19.9).kind == "refused"
    assert w.connect(MX, "a", 20.0).kind == "ok"
    black = w.connect(MX, "a", 35.0)
    assert (black.kind, black.delay, black.banner) == ("blackhole", math.inf, None)
    assert w.connect(MX, "a", 55.0).kind == "ok"
    replies = [str(r) for _, r in w.reply_batch(MX, txn(), 55.0)]
    assert replies == [
        "451 4.3.0 Service temporarily unavailable (outage); try again later",
        "503 5.5.1 Need MAIL command first",
        "503 5.5.1 Need MAIL command first",
    ]
    assert [r.code for _, r in w.reply_batch(MX, txn(), 60.0)] == [250, 250, 354]


def test_refuse_probability_within_statistical_bounds() -> None:
    w = world({"refuse_connections": 0.3})
    n = 20_000
    refused = 0
    for _ in range(n):
        r = w.connect(MX, "a", 0.0)
        if r.kind == "refused":
            refused += 1
        else:
            w.release(MX)
    # 0.3 +- 5 standard deviations (sd = sqrt(n p (1-p)) ~ 65)
    assert abs(refused - 0.3 * n) < 5 * math.sqrt(n * 0.3 * 0.7)


def test_rcpt_probabilities_and_replies() -> None:
    w = world({"tempfail_rcpt": 0.1, "permfail_rcpt": 0.05})
    counts = {250: 0, 450: 0, 550: 0}
    for _ in range(4000):
        for _, reply in w.reply_batch(MX, txn(5), 0.0)[1:-1]:
            counts[reply.code] += 1
    n = 20_000
    assert abs(counts[450] - 0.1 * n) < 5 * math.sqrt(n * 0.1 * 0.9)
    assert abs(counts[550] - 0.05 * n) < 5 * math.sqrt(n * 0.05 * 0.95)
    assert str(Reply.make(550, "5.1.1", "No such user here")) in {
        str(r) for _ in range(200) for _, r in w.reply_batch(MX, txn(5), 0.0)}


def test_all_recipients_refused_gives_554_to_data() -> None:
    w = world({"permfail_rcpt": 1.0})
    codes = [r.code for _, r in w.reply_batch(MX, txn(2), 0.0)]
    assert codes == [250, 550, 550, 554]


def test_pipelined_batch_is_one_round_trip_unpipelined_one_per_command() -> None:
    w = world({"command_latency": "10ms"})
    assert [d for d, _ in w.reply_batch(MX, txn(2), 0.0)] == [0.01] * 4
    pairs = [("MAIL FROM", "a@b.example"), ("RCPT TO", "r@example.com"), ("DATA", "")]
    assert [r.code for _, r in w.reply_batch(MX, pairs, 0.0)] == [250, 250, 354]
    w = world({"command_latency": "10ms", "pipelining": False})
    delays = [d for d, _ in w.reply_batch(MX, txn(2), 0.0)]
    assert delays == pytest.approx([0.01, 0.02, 0.03, 0.04])


@pytest.mark.parametrize("pipelining", [True, False])
def test_batch_replies_are_reply_batch_with_the_slowest_delay(pipelining: bool) -> None:
    """The driver's call gives the replies `reply_batch` gives, from the same
    draws, and the delay of the slowest (when they all have come)."""
    host = {"command_latency": {"median": "20ms", "p99": "250ms"}, "tempfail_rcpt": 0.3,
            "tempfail_mail": 0.1, "pipelining": pipelining}
    cmds = (SmtpCommand(verb=Verb.RSET), *txn(3))
    ours, theirs = world(host, seed=3), world(host, seed=3)
    for i in range(300):
        answers = theirs.reply_batch(MX, cmds, float(i))
        delay, replies = ours.batch_replies(MX, cmds, float(i))
        assert replies == [r for _, r in answers]
        assert delay == max(d for d, _ in answers)
    assert ours.rng.random() == theirs.rng.random()


def test_body_probabilities_latency_and_bandwidth() -> None:
    w = world({"data_latency": "100ms", "data_bandwidth": "1MB/s"})
    assert w.body(MX, 500_000, 0.0) == (pytest.approx(0.6), Reply.make(
        250, "2.0.0", "Message accepted for delivery"))
    w = world({"tempfail_data": 0.2, "permfail_data": 0.1})
    codes = [w.body(MX, 10, 0.0)[1].code for _ in range(20_000)]
    assert abs(codes.count(451) - 4000) < 5 * math.sqrt(20_000 * 0.2 * 0.8)
    assert abs(codes.count(554) - 2000) < 5 * math.sqrt(20_000 * 0.1 * 0.9)


def test_tempfail_mail_probability() -> None:
    w = world({"tempfail_mail": 0.25})
    codes = [w.reply_batch(MX, txn(), 0.0)[0][1].code for _ in range(8000)]
    assert abs(codes.count(451) - 2000) < 5 * math.sqrt(8000 * 0.25 * 0.75)


def test_ehlo_capabilities_starttls_and_auth() -> None:
    w = world({"auth": True, "command_latency": "5ms"})
    delay, reply = w.ehlo(MX, 0.0)
    assert delay == 0.005
    assert reply.code == 250
    assert reply.text.split("\n") == [
        MX, "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "PIPELINING", "STARTTLS",
        "AUTH PLAIN LOGIN"]
    assert "STARTTLS" not in w.ehlo(MX, 0.0, tls=True)[1].text
    assert w.starttls(MX, 0.0) == (0.02, True, "")
    cmds = (SmtpCommand(verb=Verb.STARTTLS), SmtpCommand(verb=Verb.AUTH_PLAIN, arg="u"),
            SmtpCommand(verb=Verb.RSET), SmtpCommand(verb=Verb.QUIT))
    assert [r.code for _, r in w.reply_batch(MX, cmds, 0.0)] == [220, 235, 250, 221]
    plain = world({"starttls": False, "pipelining": False})
    assert plain.ehlo(MX, 0.0)[1].text.split("\n")[1:] == [
        "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES"]
    assert plain.reply_batch(MX, (SmtpCommand(verb=Verb.STARTTLS),), 0.0)[0][1].code == 502
    assert plain.starttls(MX, 0.0)[1] is False


def test_tls_failure_probability() -> None:
    w = world({"tls_failure": 0.4})
    results = [w.starttls(MX, 0.0) for _ in range(10_000)]
    failed = [r for r in results if not r[1]]
    assert abs(len(failed) - 4000) < 5 * math.sqrt(10_000 * 0.4 * 0.6)
    assert failed[0][2] == "handshake failure (simulated)"


def test_same_seed_same_answers_different_seed_differs() -> None:
    host = {"connect_latency": {"median": "20ms", "p99": "200ms"}, "tempfail_rcpt": 0.3}

    def trace(seed: int) -> list[Any]:
        w = world(host, seed=seed)
        out: list[Any] = []
        for i in range(200):
            out.append(w.connect(MX, "a", float(i)))
            out.extend(w.reply_batch(MX, txn(3), float(i)))
        return out

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


# -- DNS ----------------------------------------------------------------------------------


def test_resolve_mx_null_nxdomain_servfail_implicit_and_outages() -> None:
    w = world(
        None,
        **{
            "null.example": {"null_mx": True},
            "gone.example": {"nxdomain": True},
            "broken.example": {"servfail": True},
            "self.example": {},
            "flaky.example": {"mx": [MX], "dns_outages": [{"start": 0, "end": 10}]},
        },
    )
    r = w.resolve("Example.com", 1.0)
    assert r == Resolved(at=1.005, domain="Example.com", mx=(
        MxRecord(preference=10, host=MX, addresses=("192.0.2.1",)),), implicit=False, ttl=300.0)
    assert w.resolve("null.example", 0.0).mx == (MxRecord(preference=0, host="."),)
    assert w.resolve("gone.example", 0.0).kind == DnsFailure.NXDOMAIN
    assert w.resolve("broken.example", 0.0).kind == DnsFailure.SERVFAIL
    implicit = w.resolve("self.example", 0.0)
    assert implicit.implicit and implicit.mx[0].host == "self.example"
    assert isinstance(w.resolve("flaky.example", 5.0), ResolveFailed)
    assert isinstance(w.resolve("flaky.example", 10.0), Resolved)
    assert w.resolve("unknown.example", 0.0).kind == DnsFailure.NXDOMAIN


def test_mta_sts_only_when_the_scenario_says() -> None:
    w = world(None, **{"sts.example": {"mx": [MX], "mta_sts": {
        "mode": "enforce", "mx": ["*.example.com"], "max_age": "1d"}}})
    assert w.mta_sts("example.com", 0.0) == MtaStsResolved(
        at=0.005, domain="example.com", policy=None)
    assert w.mta_sts("sts.example", 0.0).policy == MtaStsPolicy(
        mode="enforce", mx=("*.example.com",), max_age=86400.0)
