"""SMTPUTF8 on delivery: a message whose envelope has a UTF-8 address gets
SMTPUTF8 on its MAIL when the server offers it, and bounces without a word
sent (KumoMTA's 554 5.6.7) when it does not."""

from __future__ import annotations

from engine.effects import Send, Verb
from engine.engine import Engine
from engine.session import RecipientResult, SessionReady, State, TransactionDone, TxnMessage
from engine.session_txn import NO_SMTPUTF8, needs_smtputf8
from tests.support.engine_harness import World, of, policy, prime, records, submit
from tests.support.session_kit import cmd, greet, make, resp, send, timer

UTF8 = TxnMessage("m1", "sender@example.org", ("jörg@example.com",), 1234)


def test_needs_smtputf8_looks_at_every_address() -> None:
    assert not needs_smtputf8(TxnMessage("m", "a@b.example", ("c@d.example",), 1))
    assert needs_smtputf8(TxnMessage("m", "ä@b.example", ("c@d.example",), 1))
    assert needs_smtputf8(TxnMessage("m", "", ("c@d.example", "ü@d.example"), 1))


def test_mail_carries_smtputf8_when_offered() -> None:
    s = make()
    greet(s, "mx hello\nSIZE\nSMTPUTF8")
    assert s.start_transaction(10.0, UTF8) == (
        [send(cmd(Verb.MAIL, "sender@example.org", "SIZE=1234 SMTPUTF8")), timer(310.0)], [])


def test_ascii_envelope_gets_no_smtputf8() -> None:
    s = make()
    greet(s, "mx hello\nSMTPUTF8")
    fx, _ = s.start_transaction(10.0, TxnMessage("m1", "a@b.example", ("c@example.com",), 5))
    assert fx[0] == send(cmd(Verb.MAIL, "a@b.example"))


def test_not_offered_bounces_every_recipient_and_stays_idle() -> None:
    s = make()
    greet(s, "mx hello\nSIZE")
    msg = TxnMessage("m1", "sender@example.org", ("jörg@example.com", "b@example.com"), 9)
    fx, out = s.start_transaction(10.0, msg)
    assert fx == []
    assert out == [
        RecipientResult("m1", "jörg@example.com", "permanent", NO_SMTPUTF8,
                        "MAIL FROM:<sender@example.org>"),
        RecipientResult("m1", "b@example.com", "permanent", NO_SMTPUTF8,
                        "MAIL FROM:<sender@example.org>"),
        TransactionDone("m1"), SessionReady()]
    assert s.state is State.IDLE
    # the connection is still good for the next (ASCII) message
    fx, _ = s.start_transaction(11.0, TxnMessage("m2", "a@b.example", ("c@example.com",), 5))
    assert fx[0] == send(cmd(Verb.MAIL, "a@b.example", "SIZE=5"))
    assert s.handle(resp(12.0, 250))[0][0] == send(cmd(Verb.RCPT, "c@example.com"))


def _world() -> World:
    eng = Engine(policy(), seed=1)
    prime(eng)
    return World(eng)


def test_engine_sends_smtputf8_and_delivers() -> None:
    w = _world()
    w.ehlo_caps = "mx.example.com hello\nPIPELINING\nSIZE 1000000\nSMTPUTF8"
    fx = w.feed(submit(1, rcpts=("jörg@example.com",)))
    mails = [c for e in of(fx, Send) for c in e.commands if c.verb is Verb.MAIL]
    assert [(c.arg, c.params) for c in mails] == [("s@sender.org", "SIZE=100 SMTPUTF8")]
    assert [r["recipient"] for r in records(fx, "Delivery")] == ["jörg@example.com"]


def test_engine_bounces_when_not_offered() -> None:
    w = _world()
    fx = w.feed(submit(1, rcpts=("jörg@example.com",)))
    assert not [c for e in of(fx, Send) for c in e.commands if c.verb is Verb.MAIL]
    bounces = records(fx, "Bounce")
    assert [r["recipient"] for r in bounces] == ["jörg@example.com"]
    assert bounces[0]["response"]["code"] == 554
    assert "does not support SMTPUTF8" in bounces[0]["response"]["content"]
    assert records(fx, "Delivery") == []
