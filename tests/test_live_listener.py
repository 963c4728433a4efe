"""engine/live/listener.py: the SMTP listener (relay control, commit, AUTH, TLS, stop).

A real Listener on 127.0.0.1, a real aiosmtplib client, and a recording
stand-in for the journal (tests/support/listener_kit.py).  The protocol's
edge cases over raw bytes are in tests/test_live_listener_session.py and
tests/test_live_listener_auth.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib
import pytest

from engine.cidr import CidrSet
from engine.live.listener import Listener
from engine.live.submission import Submission
from tests.support.listener_kit import MSG, CommitRecorder, smtp_client, tls_contexts
from tests.support.waiting import until


def run(coro_fn: Any) -> Any:
    return asyncio.run(coro_fn())


def test_accepts_splits_by_domain_and_reads_tenant_campaign() -> None:
    journal = CommitRecorder()

    async def go() -> str:
        async with Listener("127.0.0.1", 0, submit=journal) as server, smtp_client(server) as c:
            errors, reply = await c.sendmail(
                "a@sender.test", ["x@one.test", "y@Two.test", "z@ONE.test"], MSG)
            assert errors == {}
            assert "pipelining" in c.esmtp_extensions
            assert "auth" not in c.esmtp_extensions
            assert server.accepted == 2
            return reply

    assert run(go) == "2.0.0 OK ids=id1,id2"
    first = journal.committed[0]
    assert first.helo and first.session_id  # the Reception record's (test_kumomta_reception.py)
    assert journal.committed == [
        Submission("a@sender.test", ("x@one.test", "z@ONE.test"), MSG, "acme", "spring sale",
                   "127.0.0.1", first.helo, first.session_id),
        Submission("a@sender.test", ("y@Two.test",), MSG, "acme", "spring sale", "127.0.0.1",
                   first.helo, first.session_id),
    ]


def test_250_only_after_the_commit_completes() -> None:
    journal = CommitRecorder()
    journal.gate = asyncio.Event()

    async def go() -> None:
        async with Listener("127.0.0.1", 0, submit=journal) as server, smtp_client(server) as c:
            send = asyncio.ensure_future(c.sendmail("a@s.test", ["x@one.test"], MSG))
            await until(lambda: journal.entered == 1, what="the commit begun")
            # The commit is held at its gate: a 250 sent before it completes
            # would reach the client now; give it the time to.
            done, _ = await asyncio.wait({send}, timeout=0.2)
            assert not done
            assert journal.committed == []
            assert journal.gate is not None
            journal.gate.set()
            _, reply = await asyncio.wait_for(send, 5)
            assert reply == "2.0.0 OK ids=id1"

    run(go)
    assert len(journal.committed) == 1


def test_commit_failure_gives_451_and_no_acknowledgement() -> None:
    journal = CommitRecorder()
    journal.fail = True

    async def go() -> aiosmtplib.SMTPDataError:
        async with Listener("127.0.0.1", 0, submit=journal) as server, smtp_client(server) as c:
            with pytest.raises(aiosmtplib.SMTPDataError) as err:
                await c.sendmail("a@s.test", ["x@one.test"], MSG)
            assert server.accepted == 0
            assert journal.committed == []
            # the session goes on: the next message is accepted once the journal recovers
            journal.fail = False
            _, reply = await c.sendmail("a@s.test", ["x@one.test"], MSG)
            assert reply == "2.0.0 OK ids=id1"
            return err.value

    err = run(go)
    assert (err.code, err.message) == (
        451, "4.3.0 temporary failure, message not accepted; try again later")


def test_client_outside_allowed_networks_is_refused_no_open_relay() -> None:
    journal = CommitRecorder()

    async def go() -> aiosmtplib.SMTPRecipientsRefused:
        outside = CidrSet(["10.0.0.0/8", "::1"])
        async with Listener("127.0.0.1", 0, submit=journal,
                       allowed_networks=outside) as server, smtp_client(server) as c:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as err:
                await c.sendmail("a@s.test", ["victim@elsewhere.test"], MSG)
            return err.value

    [refusal] = run(go).recipients
    assert (refusal.code, refusal.message) == (550, "5.7.1 relaying denied")
    assert journal.committed == []


def test_authenticated_client_may_relay_from_outside() -> None:
    journal = CommitRecorder()

    async def go() -> tuple[int, str]:
        async with Listener("127.0.0.1", 0, submit=journal, allowed_networks=["192.0.2.0/24"],
                       auth={"alice": "s3cret"}) as server:
            async with smtp_client(server) as bad:
                with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
                    await bad.login("alice", "wrong")
                with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                    await bad.sendmail("a@s.test", ["x@one.test"], MSG)
            async with smtp_client(server, username="alice", password="s3cret") as good:
                _, reply = await good.sendmail("a@s.test", ["x@one.test"], MSG)
            return err.value.code, reply

    assert run(go) == (535, "2.0.0 OK ids=id1")
    assert [s.recipients for s in journal.committed] == [("x@one.test",)]


def test_auth_over_starttls() -> None:
    journal = CommitRecorder()
    server_ctx, client_ctx = tls_contexts("listener.test")

    async def go() -> str:
        async with Listener("127.0.0.1", 0, submit=journal, allowed_networks=[],
                       auth={"bob": "pw"}, tls_context=server_ctx,
                       hostname="listener.test") as server:
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=True,
                                tls_context=client_ctx, username="bob", password="pw",
                                timeout=5)
            async with c:
                assert c.get_transport_info("ssl_object") is not None
                _, reply = await c.sendmail("a@s.test", ["x@one.test"], MSG)
            return reply

    assert run(go) == "2.0.0 OK ids=id1"


def test_auth_disabled_is_not_offered_and_refused() -> None:
    async def go() -> aiosmtplib.SMTPResponse:
        async with (Listener("127.0.0.1", 0, submit=CommitRecorder()) as server,
                    smtp_client(server) as c):
            await c.ehlo()
            return await c.execute_command(b"AUTH", b"PLAIN", b"AGFsaWNlAHB3")

    resp = run(go)
    assert (resp.code, resp.message) == (502, "5.5.1 AUTH not available")


def test_message_over_max_size_is_refused_and_the_session_goes_on() -> None:
    journal = CommitRecorder()

    async def go() -> int:
        async with (Listener("127.0.0.1", 0, submit=journal, max_message_size=100) as server,
                    smtp_client(server) as c):
            with pytest.raises(aiosmtplib.SMTPResponseException) as err:
                await c.sendmail("a@s.test", ["x@one.test"], MSG + b"x" * 200)
            await c.rset()
            _, reply = await c.sendmail("a@s.test", ["x@one.test"], b"Subject: s\r\n\r\nok\r\n")
            assert reply == "2.0.0 OK ids=id1"
            return err.value.code

    assert run(go) == 552
    assert [s.content for s in journal.committed] == [b"Subject: s\r\n\r\nok\r\n"]


def test_graceful_stop_lets_a_committing_transaction_finish() -> None:
    journal = CommitRecorder()
    journal.gate = asyncio.Event()

    async def go() -> str:
        server = Listener("127.0.0.1", 0, submit=journal)
        await server.start()
        c = smtp_client(server)
        await c.connect()
        send = asyncio.ensure_future(c.sendmail("a@s.test", ["x@one.test"], MSG))
        await until(lambda: journal.entered == 1, what="the commit begun")
        stopping = asyncio.ensure_future(server.stop(grace=5))
        # stop() closes the listening socket first (waited for, not slept on);
        # the transaction still committing holds it from finishing.
        await until(lambda: server._server is None, what="stop() begun")
        assert not stopping.done()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)
        assert journal.gate is not None
        journal.gate.set()
        _, reply = await asyncio.wait_for(send, 5)
        await asyncio.wait_for(stopping, 5)
        c.close()
        return reply

    assert run(go) == "2.0.0 OK ids=id1"


def test_custom_header_names() -> None:
    journal = CommitRecorder()
    content = b"X-Kumo-Tenant: t1\r\nX-Tenant: ignored\r\n\r\nX-Kumo-Campaign: in body\r\n"

    async def go() -> None:
        async with (Listener("127.0.0.1", 0, submit=journal, tenant_header="X-Kumo-Tenant",
                        campaign_header="X-Kumo-Campaign") as server, smtp_client(server) as c):
            await c.sendmail("a@s.test", ["p@a.test"], content)

    run(go)
    assert [(s.tenant, s.campaign) for s in journal.committed] == [("t1", "")]


def test_max_recipients() -> None:
    journal = CommitRecorder()

    async def go() -> dict[str, Any]:
        async with (Listener("127.0.0.1", 0, submit=journal, max_recipients=2) as server,
                    smtp_client(server) as c):
            errors, _ = await c.sendmail("a@s.test", ["p@a.test", "q@a.test", "r@a.test"], MSG)
            return {k: (v.code, v.message) for k, v in errors.items()}

    assert run(go) == {"r@a.test": (452, "4.5.3 too many recipients (at most 2)")}
    assert [s.recipients for s in journal.committed] == [("p@a.test", "q@a.test")]


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="max_message_size must be an integer above 0, not 0"):
        Listener(submit=CommitRecorder(), max_message_size=0)
    with pytest.raises(ValueError, match="max_recipients must be an integer above 0, not -1"):
        Listener(submit=CommitRecorder(), max_recipients=-1)
    with pytest.raises(ValueError, match="not a CIDR network"):
        Listener(submit=CommitRecorder(), allowed_networks=["10.0.0.300/8"])
    with pytest.raises(ValueError, match="auth must map non-empty user names"):
        Listener(submit=CommitRecorder(), auth={"": "pw"})
    with pytest.raises(TypeError, match="submit must be an async callable, not 3"):
        Listener(submit=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tenant_header must be a header field name such as "
                                         "'X-Tenant', not 'X Tenant:'"):
        Listener(submit=CommitRecorder(), tenant_header="X Tenant:")
    with pytest.raises(ValueError, match="timeout must be a number of seconds above 0, not 0"):
        Listener(submit=CommitRecorder(), timeout=0)


def test_null_sender_is_submitted_as_empty_string() -> None:
    # aiosmtpd reported MAIL FROM:<> as "<>"; the engine's null sender is "",
    # else the delivery side would send MAIL FROM:<<>>.
    journal = CommitRecorder()

    async def go() -> dict[str, Any]:
        async with Listener("127.0.0.1", 0, submit=journal) as server, smtp_client(server) as c:
            errors, _ = await c.sendmail("", ["x@one.test"], MSG)  # MAIL FROM:<>
            return errors

    assert run(go) == {}
    assert [s.sender for s in journal.committed] == [""]

