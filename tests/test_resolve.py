"""engine.resolve: MX answers (cache, null MX, NXDOMAIN/SERVFAIL), unasked answers."""

from __future__ import annotations

import pytest

from engine.effects import Discard, SetTimer
from engine.engine import Engine
from engine.errors import ProtocolError
from engine.events import DnsFailure, MxRecord, Resolved, ResolveFailed
from tests.support.engine_harness import MX, PATH, of, policy, records, submit


def test_resolved_promotes_parked_messages_into_one_ready_queue() -> None:
    eng = Engine(policy(suspended=True), seed=1)  # no connections: watch the queue
    eng.handle(submit(1))
    eng.handle(submit(2))
    fx = eng.handle(Resolved(at=1.0, domain="example.com", mx=MX))
    assert fx == [SetTimer(timer=("maint", PATH), at=7 * 86400.0)]
    assert eng.ready_depths() == {PATH: 2}


def test_domains_with_the_same_mx_set_share_a_ready_queue() -> None:
    eng = Engine(policy(suspended=True), seed=1)
    eng.handle(submit(1, rcpts=("a@one.test",)))
    eng.handle(submit(2, rcpts=("b@two.test",)))
    eng.handle(Resolved(at=0.0, domain="one.test", mx=MX))
    eng.handle(Resolved(at=0.0, domain="two.test", mx=tuple(reversed(MX))))
    assert eng.ready_depths() == {PATH: 2}


def test_null_mx_bounces_with_556() -> None:
    eng = Engine(policy(), seed=1)
    eng.handle(submit(1))
    fx = eng.handle(Resolved(at=2.0, domain="example.com",
                             mx=(MxRecord(preference=0, host="."),)))
    [rec] = records(fx, "Bounce")
    assert rec["response"] == {"code": 556, "enhanced_code": {"class": 5, "subject": 1,
                                                              "detail": 10},
                               "content": "Recipient address has null MX: example.com",
                               "command": None}
    assert of(fx, Discard) == [Discard(message_id="m1")]
    assert eng.queued_count == 0 and eng.counters["total_messages_fail"] == 1


@pytest.mark.parametrize("kind", list(DnsFailure))
def test_a_failed_resolve_is_transient_451_4_4_4_whatever_the_cause(kind: DnsFailure) -> None:
    """KumoMTA logs a ready queue it cannot resolve as a TransientFailure,
    ``451 4.4.4 failed to resolve queue ...``, site "", no source or peer, and
    requeues the message, NXDOMAIN included (crates/kumod/src/queue/queue.rs,
    the ``resolve_by_queue_name`` error arm)."""
    eng = Engine(policy(queue={"retry_interval": "10min"}), seed=3)
    eng.handle(submit(1))
    fx = eng.handle(ResolveFailed(at=3.0, domain="example.com", kind=kind))
    assert records(fx, "Bounce") == []
    [rec] = records(fx, "TransientFailure")
    assert rec["response"]["code"] == 451
    assert rec["response"]["enhanced_code"] == {"class": 4, "subject": 4, "detail": 4}
    assert rec["response"]["content"] == (
        f"failed to resolve queue example.com: MX lookup for example.com failed: {kind}")
    assert rec["site"] == "" and rec["egress_source"] is None and rec["peer_address"] is None
    [timer] = of(fx, SetTimer)
    assert timer.timer == ("promote", "") and 3.0 + 585.0 <= timer.at <= 3.0 + 615.0
    assert eng.scheduled_count == 1 and eng.queued_count == 1


def test_an_mx_set_without_addresses_is_transient_as_kumomta_words_it() -> None:
    """crates/kumod/src/smtp_dispatcher.rs: "MX didn't resolve to any hosts", 451 4.4.4."""
    eng = Engine(policy(), seed=3)
    eng.handle(submit(1))
    fx = eng.handle(Resolved(at=1.0, domain="example.com", mx=()))
    [rec] = records(fx, "TransientFailure")
    assert (rec["response"]["code"], rec["response"]["content"]) == (
        451, "MX didn't resolve to any hosts")


@pytest.mark.parametrize("answer", [
    Resolved(at=1.0, domain="never.test", mx=MX),
    ResolveFailed(at=1.0, domain="never.test", kind=DnsFailure.SERVFAIL)])
def test_answer_for_a_domain_never_asked_is_a_protocol_error(answer: object) -> None:
    eng = Engine(policy(), seed=1)
    eng.handle(submit(1))  # asks about example.com only
    before = eng.snapshot()
    kind = type(answer).__name__
    with pytest.raises(ProtocolError, match=rf"^engine cannot handle {kind}\('never.test'\) in "
                                            r"state NOT_ASKED: no Resolve was issued for "
                                            r"never.test$"):
        eng.handle(answer)  # type: ignore[arg-type]
    assert eng.snapshot() == before
