"""TLS as KumoMTA does it, in the engine (events in, effects out): docs/KUMOMTA.md
rows 7a-7d and the TLS keys of row 11.

Each test cites the KumoMTA source it follows (KumoCorp/kumomta, ``crates/``):

- rfc5321/src/client.rs ``SmtpClient::starttls``: anything but 220 to STARTTLS
  is ``ClientError::Rejected``; the reply is read under starttls_timeout and
  the handshake under its own starttls_timeout; a timed-out handshake is an
  error; a failed one hands back the clear stream (rustls' ``into_fallible``,
  OpenSSL's dup stream).
- kumod/src/smtp_dispatcher.rs ``attempt_connection``: OpportunisticInsecure
  goes on in clear after a failed handshake and EHLOs again, reconnecting
  only with opportunistic_tls_reconnect_on_failed_handshake;
  ``remember_broken_tls`` (the key, else 15 min with that flag) and
  ``has_broken_tls``; the DANE block (DNSSEC chain, TLSA statuses, MTA-STS
  after it).
- dns-resolver/src/lib.rs ``classify_tlsa_answer`` and ``tlsa_is_usable``.
- kumo-tls-helper/src/lib.rs: a client certificate needs both PEMs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from engine.config import make_egress_path
from engine.effects import Close, Connect, ResolveTlsa, Send, SetTimer, StartTls, TlsMode, Verb
from engine.engine import Engine
from engine.errors import ConfigError
from engine.events import (
    Closed,
    MtaStsPolicy,
    MtaStsResolved,
    Resolved,
    TlsaRecord,
    TlsaResolved,
    TlsEstablished,
    TlsFailed,
)
from engine.keysource import KeySource
from engine.reply import Reply
from engine.tls_policy import classify_tlsa, usable_tlsa_record
from tests.support.engine_harness import (
    EHLO_CAPS,
    MX,
    PATH,
    World,
    of,
    policy,
    records,
    submit,
)

TLS_CAPS = EHLO_CAPS + "\nSTARTTLS"
SECURE_MX = tuple(replace(r, secure=True) for r in MX)


def tls_world(mx: Any = MX, **path: Any) -> tuple[Engine, World]:
    eng = Engine(policy(**path), seed=1)
    w = World(eng, mx=mx)
    w.ehlo_caps = TLS_CAPS
    return eng, w


def verbs(fx: list[Any], conn: int | None = None) -> list[Verb]:
    return [c.verb for e in of(fx, Send) if conn is None or e.conn == conn for c in e.commands]


def session(eng: Engine, fx: list[Any], index: int = 0) -> Any:
    return eng.conns[of(fx, Connect)[index].conn].session


# -- 7b: anything but 220 to STARTTLS fails the host -----------------------------------


@pytest.mark.parametrize("mode", ["Opportunistic", "OpportunisticInsecure", "Required"])
@pytest.mark.parametrize("reply", [Reply.make(454, "4.7.0", "TLS not available"),
                                   Reply.make(250, "2.0.0", "fine, whatever")])
def test_starttls_not_220_fails_the_host_in_every_mode(mode: str, reply: Reply) -> None:
    """rfc5321/src/client.rs: ``if resp.code != 220 { return Err(Rejected) }``,
    propagated by ``?`` in kumod/src/smtp_dispatcher.rs: no clear fallback."""
    _, w = tls_world(enable_tls=mode)
    w.starttls_reply = reply
    fx = w.feed(submit(1))
    assert [c.host for c in of(fx, Connect)] == ["mx1.example.com", "mx2.example.com"]
    assert of(fx, StartTls) == []
    assert Verb.MAIL not in verbs(fx)
    (rec,) = records(fx, "TransientFailure")
    assert rec["response"]["code"] == 400  # every host failed
    assert f"refused STARTTLS: {reply}" in rec["response"]["content"]


# -- 7c: the reply and the handshake timed separately -----------------------------------


def test_handshake_gets_its_own_starttls_timeout_and_a_timeout_fails_the_host() -> None:
    """rfc5321/src/client.rs: ``send_command(StartTls)`` reads under
    starttls_timeout, then ``timeout(starttls_timeout, connect)``; on elapsed
    it returns TimeOutResponse (no clear fallback, nothing remembered)."""
    eng, w = tls_world(enable_tls="OpportunisticInsecure", starttls_timeout="7s",
                       remember_broken_tls="1h")
    w.now = 100.0
    fx = w.feed(submit(1, at=100.0))
    (start,) = of(fx, StartTls)
    conn = start.conn
    # STARTTLS armed its timer (starttls_timeout), and the 220 one for the
    # handshake: at the same deadline, so it stays armed as it was (no second
    # SetTimer for a timer already armed at that very time)
    timers = [e.at for e in fx if isinstance(e, SetTimer) and e.timer == ("conn", conn)]
    assert timers[-1] == 107.0 and verbs(fx, conn)[-1] is Verb.STARTTLS
    assert eng.armed_timers()[("conn", conn)] == 107.0
    w.now = 107.0
    fx = w.fire(("conn", conn))
    assert Close(conn=conn) in fx
    assert [c.host for c in of(fx, Connect)] == ["mx2.example.com"]  # the next host
    assert eng.broken_tls == {}  # a timeout is not remembered as broken TLS


# -- 7a: a failed OpportunisticInsecure handshake goes on in clear -----------------------


def test_failed_opportunistic_insecure_handshake_continues_in_clear_on_the_same_socket() -> None:
    """kumod/src/smtp_dispatcher.rs: ``TlsStatus::FailedHandshake`` in
    OpportunisticInsecure -> "continuing in clear text", then "Re-EHLO even if
    we didn't enable TLS"; no reconnect without the flag."""
    eng, w = tls_world(enable_tls="OpportunisticInsecure")
    fx = w.feed(submit(1))
    (start,) = of(fx, StartTls)
    assert start.settings.fallback_clear and start.settings.mode is TlsMode.INSECURE
    conn = start.conn
    fx = w.feed(TlsFailed(at=0.0, conn=conn, reason="sslv3 alert handshake failure"))
    assert of(fx, Connect) == [] and Close(conn=conn) not in fx[:3]
    assert verbs(fx, conn)[:2] == [Verb.EHLO, Verb.MAIL]  # EHLO again, no second STARTTLS
    (rec,) = records(fx, "Delivery")
    assert "tls_cipher" not in rec  # delivered in clear
    assert eng.broken_tls == {}  # remember_broken_tls unset, no reconnect flag: nothing kept


def test_failed_handshake_reconnects_in_clear_only_with_the_flag() -> None:
    """smtp_dispatcher.rs: with opportunistic_tls_reconnect_on_failed_handshake the
    address is pushed back and the next attempt skips STARTTLS (the site is
    remembered broken, 15 min by default)."""
    eng, w = tls_world(enable_tls="OpportunisticInsecure",
                       opportunistic_tls_reconnect_on_failed_handshake=True)
    fx = w.feed(submit(1))
    (start,) = of(fx, StartTls)
    assert not start.settings.fallback_clear
    fx = w.feed(TlsFailed(at=0.0, conn=start.conn, reason="alert"))
    assert Close(conn=start.conn) in fx
    assert [(c.host, c.address) for c in of(fx, Connect)] == [("mx1.example.com", "192.0.2.1")]
    assert session(eng, fx).tls == "Disabled"
    assert of(fx, StartTls) == [] and len(records(fx, "Delivery")) == 1
    assert eng.broken_tls == {PATH: 900.0}


class _ScriptedEhlo(World):
    """A world whose EHLOs are answered from `ehlo_answers` first."""

    ehlo_answers: list[Reply]

    def _reply(self, cmd: Any) -> Reply:
        if cmd.verb is Verb.EHLO and self.ehlo_answers:
            return self.ehlo_answers.pop(0)
        return super()._reply(cmd)


def test_ehlo_failing_after_the_failed_handshake_fails_the_host() -> None:
    """smtp_dispatcher.rs: the re-EHLO's error becomes
    OpportunisticInsecureTlsHandshakeError (the host fails) and is remembered."""
    eng = Engine(policy(enable_tls="OpportunisticInsecure", remember_broken_tls="10m"), seed=1)
    w = _ScriptedEhlo(eng)
    w.ehlo_caps = TLS_CAPS
    w.ehlo_answers = [Reply(code=250, text=TLS_CAPS), Reply.make(554, "5.5.1", "what?")]
    fx = w.feed(submit(1))
    conn = of(fx, StartTls)[0].conn
    w.now = 1.0
    fx = w.feed(TlsFailed(at=1.0, conn=conn, reason="alert"))
    assert verbs(fx, conn) == [Verb.EHLO] and Close(conn=conn) in fx
    assert eng.broken_tls == {PATH: 601.0}
    assert [c.host for c in of(fx, Connect)] == ["mx2.example.com"]
    (rec,) = records(fx, "Delivery")  # mx2, in clear: the site's TLS is broken
    assert "tls_cipher" not in rec


def test_closed_during_the_handshake_fails_the_host_even_in_opportunistic_insecure() -> None:
    """No socket left to go on in clear: the re-EHLO KumoMTA would send fails."""
    _, w = tls_world(enable_tls="OpportunisticInsecure")
    fx = w.feed(submit(1))
    conn = of(fx, StartTls)[0].conn
    fx = w.feed(Closed(at=0.0, conn=conn, reason="reset"))
    assert [c.host for c in of(fx, Connect)] == ["mx2.example.com"]


# -- remember_broken_tls -----------------------------------------------------------------


def test_remember_broken_tls_skips_starttls_for_the_site_for_its_duration() -> None:
    """smtp_dispatcher.rs ``remember_broken_tls`` / ``has_broken_tls``: after a
    failed handshake (Opportunistic: the host fails) the next address, and
    every connection of the site until the duration ends, skips STARTTLS."""
    eng, w = tls_world(enable_tls="Opportunistic", remember_broken_tls="1h",
                       max_deliveries_per_connection=1)  # a new connection per message
    fx = w.feed(submit(1))
    start = of(fx, StartTls)[0]
    fx = w.feed(TlsFailed(at=0.0, conn=start.conn, reason="certificate verify failed"))
    assert [c.host for c in of(fx, Connect)] == ["mx2.example.com"]
    assert Verb.STARTTLS not in verbs(fx) and len(records(fx, "Delivery")) == 1
    assert eng.broken_tls == {PATH: 3600.0}
    # still broken at 3599 s; STARTTLS again once the hour is over
    w.now = 3599.0
    fx = w.feed(submit(2, at=3599.0))
    assert of(fx, StartTls) == [] and len(records(fx, "Delivery")) == 1
    w.now = 3600.0
    fx = w.feed(submit(3, at=3600.0))
    assert len(of(fx, StartTls)) == 1


@pytest.mark.parametrize(("keys", "remembered"), [
    ({}, False),  # remember_broken_tls unset, no reconnect flag: nothing is remembered
    ({"enable_tls": "Required", "remember_broken_tls": "1h"}, True),
])
def test_broken_tls_is_not_remembered_without_the_key_and_required_ignores_it(
    keys: dict[str, Any], remembered: bool
) -> None:
    """smtp_dispatcher.rs: the duration is None without the key or the flag;
    ``(Required | RequiredInsecure, AdvTls::Yes, _)``: "don't care if we think
    tls is broken when policy is required"."""
    keys.setdefault("enable_tls", "Opportunistic")
    eng, w = tls_world(**keys)
    fx = w.feed(submit(1))
    fx = w.feed(TlsFailed(at=0.0, conn=of(fx, StartTls)[0].conn, reason="bad"))
    assert (PATH in eng.broken_tls) is remembered
    assert len(of(fx, StartTls)) == 1  # the next host tries STARTTLS again


# -- tls_certificate / tls_private_key --------------------------------------------------


def test_client_certificate_keys_reach_the_handshake_settings() -> None:
    """kumod/src/smtp_dispatcher.rs passes certificate_from_pem/private_key_from_pem
    into TlsOptions; the simulator has no certificates, so they change nothing
    simulated; the live driver presents them (tests/test_live_kumomta_tls.py)."""
    _, w = tls_world(enable_tls="Required", tls_certificate="/etc/egress/client.pem",
                       tls_private_key={"key_data": "PEM"})
    fx = w.feed(submit(1))
    (start,) = of(fx, StartTls)
    assert start.settings.certificate == KeySource.coerce("/etc/egress/client.pem", key="k")
    assert start.settings.private_key is not None and "PEM" not in repr(start.settings)


@pytest.mark.parametrize("key", ["tls_certificate", "tls_private_key"])
def test_half_a_client_certificate_is_refused(key: str) -> None:
    """kumo-tls-helper/src/lib.rs presents a certificate only when both are set;
    egress refuses half of one rather than silently send none."""
    with pytest.raises(ConfigError, match=f"^{key}: .* is set but"):
        make_egress_path(**{key: "/etc/egress/x.pem"})


# -- 7d: DANE after DNSSEC; TLSA tempfail defers; unusable -> RequiredInsecure ------------

EE = TlsaRecord(usage=3, selector=1, mtype=1, data=b"\x01" * 32)


@pytest.mark.parametrize(("records_", "secure", "status"), [
    ((EE,), True, "records"),
    ((EE,), False, "not_applicable"),  # an answer without AD: "We can only trust ..."
    ((), True, "not_applicable"),  # secure NODATA
    ((replace(EE, usage=1),), True, "unusable"),  # PKIX-EE
    ((replace(EE, data=b"\x01" * 31),), True, "unusable"),  # a SHA-256 digest of 31 bytes
    ((replace(EE, selector=2),), True, "unusable"),
    ((replace(EE, mtype=0, data=b"der"),), True, "records"),  # full data, any length
])
def test_classify_tlsa_as_kumomta(records_: tuple[TlsaRecord, ...], secure: bool,
                                  status: str) -> None:
    """dns-resolver/src/lib.rs ``classify_tlsa_answer`` and ``tlsa_is_usable``."""
    assert classify_tlsa(records_, secure)[0] == status
    assert all(usable_tlsa_record(r) for r in classify_tlsa(records_, secure)[1])


def test_dane_does_not_apply_without_a_dnssec_secure_chain() -> None:
    """smtp_dispatcher.rs: ``dane_eligible`` needs ``mx.is_secure`` and
    ``address.is_secure``; otherwise "insecure_chain", no TLSA lookup."""
    eng, w = tls_world(enable_dane=True)
    fx = w.feed(submit(1))
    assert of(fx, ResolveTlsa) == []
    assert session(eng, fx).tls == "Opportunistic"


def dane_run(answer: dict[str, Any], **path: Any) -> tuple[Engine, World, list[Any]]:
    eng, w = tls_world(mx=SECURE_MX, enable_dane=True, **path)
    fx = w.feed(submit(1))
    assert of(fx, ResolveTlsa) == [ResolveTlsa(host="mx1.example.com", port=25)]
    fx = w.feed(TlsaResolved(at=0.0, host="mx1.example.com", port=25, **answer))
    return eng, w, fx


def test_tlsa_lookup_failure_defers_the_host_instead_of_downgrading() -> None:
    """smtp_dispatcher.rs ``DaneStatus::TempFail`` -> ``anyhow::bail!`` after EHLO
    ("Downgrade resistance ... Defer instead"); the next host, then the
    message's TransientFailure."""
    eng, w, fx = dane_run({"records": (), "secure": False, "failure": "SERVFAIL: bad"})
    c1 = of(fx, Connect)[0].conn
    assert verbs(fx, c1) == [Verb.EHLO] and Close(conn=c1) in fx  # no STARTTLS, no MAIL
    assert of(fx, ResolveTlsa) == [ResolveTlsa(host="mx2.example.com", port=25)]
    fx = w.feed(TlsaResolved(at=0.0, host="mx2.example.com", port=25, records=(),
                             secure=False, failure="TIMEOUT: no answer"))
    (rec,) = records(fx, "TransientFailure")
    assert ("DANE TLSA lookup for mx1.example.com could not be securely resolved: "
            "SERVFAIL: bad") in rec["response"]["content"]
    assert records(w.effects, "Delivery") == []
    assert eng.tlsa == {}  # a failure is not cached: the retry asks again


def test_unusable_tlsa_records_require_unauthenticated_starttls() -> None:
    """smtp_dispatcher.rs ``DaneStatus::Unusable`` -> ``Tls::RequiredInsecure``."""
    eng, _, fx = dane_run({"records": (replace(EE, usage=1),), "secure": True})
    s = session(eng, fx)
    assert s.tls == "RequiredInsecure"
    assert s.tls_settings.mode is TlsMode.INSECURE and s.tls_settings.tlsa == ()


def test_usable_tlsa_records_require_dane_verified_tls() -> None:
    eng, _, fx = dane_run({"records": (EE,), "secure": True})
    s = session(eng, fx)
    assert s.tls == "Required" and s.tls_settings.mode is TlsMode.DANE
    assert s.tls_settings.tlsa == (EE,)


@pytest.mark.parametrize(("sts", "tls"), [("testing", "RequiredInsecure"),
                                          ("enforce", "Required")])
def test_mta_sts_after_unusable_tlsa_may_add_verification_but_not_relax(sts: str,
                                                                      tls: str) -> None:
    """smtp_dispatcher.rs: MTA-STS applies after DANE unless usable records were
    found; testing does not relax the STARTTLS unusable TLSA made mandatory."""
    eng = Engine(policy(enable_dane=True, enable_mta_sts=True), seed=1)
    w = World(eng, mx=SECURE_MX, auto_dns=False)
    w.ehlo_caps = TLS_CAPS
    w.feed(submit(1))
    w.feed(Resolved(at=0.0, domain="example.com", mx=SECURE_MX, ttl=1e9))
    policy_ = MtaStsPolicy(mode=sts, mx=("*.example.com",))
    fx = w.feed(MtaStsResolved(at=0.0, domain="example.com", policy=policy_))
    assert of(fx, ResolveTlsa) == [ResolveTlsa(host="mx1.example.com", port=25)]
    fx = w.feed(TlsaResolved(at=0.0, host="mx1.example.com", port=25,
                             records=(replace(EE, usage=0),), secure=True))
    assert session(eng, fx).tls == tls


def test_the_established_handshake_still_works_after_these_changes() -> None:
    _, w = tls_world(enable_tls="Required")
    fx = w.feed(submit(1))
    (start,) = of(fx, StartTls)
    assert not start.settings.fallback_clear
    fx = w.feed(TlsEstablished(at=0.0, conn=start.conn, protocol="TLSv1.3", cipher="X"))
    (rec,) = records(fx, "Delivery")
    assert rec["tls_cipher"] == "X"


# -- the same stories in simulation ------------------------------------------------------


@pytest.mark.parametrize(("egress", "delivered", "transient"), [
    # 7a: every handshake fails, OpportunisticInsecure delivers in clear on the same
    # connection (smtp_dispatcher.rs "continuing in clear text")
    ({"enable_tls": "OpportunisticInsecure"}, 20, 0),
    # plain Opportunistic never goes clear with that host...
    ({"enable_tls": "Opportunistic"}, 0, None),
    # ...unless the site's TLS is remembered broken: one failure, then clear
    ({"enable_tls": "Opportunistic", "remember_broken_tls": "1h"}, 20, 1),
    # tls_certificate / tls_private_key: accepted, nothing simulated changes
    ({"enable_tls": "OpportunisticInsecure", "tls_certificate": "/etc/c.pem",
      "tls_private_key": "/etc/k.pem"}, 20, 0),
])
def test_broken_tls_in_simulation(egress: dict[str, Any], delivered: int,
                                  transient: int | None) -> None:
    from sim.result import run
    from sim.scenario import Scenario

    host = {"connect_latency": "5ms", "command_latency": "2ms", "data_latency": "10ms",
            "tls_latency": "5ms", "tls_failure": 1.0}
    result = run(Scenario.from_dict({
        "name": "broken-tls", "seed": 1, "horizon": "1h", "sample_interval": "1s",
        "traffic": [{"domain": "example.com", "messages": 20, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx0.example.com", "preference": 10}]}},
        "hosts": {"mx0.example.com": host},
        "egress_path": {"connection_limit": 1, **egress},
    }))
    kinds = [r["type"] for r in result.records]
    assert kinds.count("Delivery") == delivered
    if transient is not None:
        assert kinds.count("TransientFailure") == transient
