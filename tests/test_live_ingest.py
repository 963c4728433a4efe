"""engine/live/ingest.py: the SMTP listener and the Python submit API.

Real aiosmtpd listener on 127.0.0.1, real aiosmtplib client; the submit
callback stands in for the journal (it records, and can wait or fail).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import aiosmtplib
import pytest
import trustme

from engine.cidr import CidrSet
from engine.live.ingest import (
    IngestServer,
    Submission,
    _is_loopback,
    metadata_from_headers,
    split_by_domain,
    submit,
)

MSG = (b"From: a@sender.test\r\nTo: x@one.test\r\nX-Tenant: acme\r\n"
       b"X-Campaign:  spring\r\n  sale\r\nSubject: hi\r\n\r\nbody line\r\n")


class Journal:
    """A stand-in for the journal: commits after an optional gate, or fails."""

    def __init__(self) -> None:
        self.committed: list[Submission] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self, sub: Submission) -> list[str]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("disk full")
        self.committed.append(sub)
        return [f"id{len(self.committed)}"]


def run(coro_fn: Callable[[], Awaitable[object]]) -> object:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def client(server: IngestServer, **kw: object) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False,
                           timeout=5, **kw)  # type: ignore[arg-type]


def test_accepts_splits_by_domain_and_reads_tenant_campaign() -> None:
    journal = Journal()

    async def go() -> str:
        async with IngestServer("127.0.0.1", 0, submit=journal) as server, client(server) as c:
            errors, reply = await c.sendmail(
                "a@sender.test", ["x@one.test", "y@Two.test", "z@ONE.test"], MSG)
            assert errors == {}
            assert "pipelining" in c.esmtp_extensions
            assert "auth" not in c.esmtp_extensions
            return reply

    reply = run(go)
    assert reply == "2.0.0 OK ids=id1,id2"
    assert journal.committed == [
        Submission("a@sender.test", ("x@one.test", "z@ONE.test"), MSG, "acme", "spring sale",
                   "127.0.0.1"),
        Submission("a@sender.test", ("y@Two.test",), MSG, "acme", "spring sale", "127.0.0.1"),
    ]


def test_250_only_after_the_commit_completes() -> None:
    journal = Journal()
    journal.gate = asyncio.Event()

    async def go() -> None:
        async with IngestServer("127.0.0.1", 0, submit=journal) as server, client(server) as c:
            send = asyncio.ensure_future(c.sendmail("a@s.test", ["x@one.test"], MSG))
            await asyncio.sleep(0.2)
            assert not send.done()  # the journal has not committed: no reply yet
            assert journal.committed == []
            assert journal.gate is not None
            journal.gate.set()
            _, reply = await asyncio.wait_for(send, 5)
            assert reply == "2.0.0 OK ids=id1"

    run(go)
    assert len(journal.committed) == 1


def test_commit_failure_gives_451_and_no_acknowledgement() -> None:
    journal = Journal()
    journal.fail = True

    async def go() -> aiosmtplib.SMTPDataError:
        async with IngestServer("127.0.0.1", 0, submit=journal) as server, client(server) as c:
            with pytest.raises(aiosmtplib.SMTPDataError) as err:
                await c.sendmail("a@s.test", ["x@one.test"], MSG)
            assert server.accepted == 0
            return err.value

    err = run(go)
    assert isinstance(err, aiosmtplib.SMTPDataError)
    assert err.code == 451
    assert err.message.startswith("4.3.0 ")
    assert journal.committed == []


def test_client_outside_allowed_networks_is_refused_no_open_relay() -> None:
    journal = Journal()

    async def go() -> aiosmtplib.SMTPRecipientsRefused:
        outside = CidrSet(["10.0.0.0/8", "::1"])  # excludes 127.0.0.1: the client is "outside"
        async with IngestServer("127.0.0.1", 0, submit=journal,
                                allowed_networks=outside) as server, client(server) as c:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as err:
                await c.sendmail("a@s.test", ["victim@elsewhere.test"], MSG)
            return err.value

    err = run(go)
    [refusal] = err.recipients
    assert (refusal.code, refusal.message) == (550, "5.7.1 relaying denied")
    assert journal.committed == []


def test_authenticated_client_may_relay_from_outside() -> None:
    journal = Journal()
    outside = ["192.0.2.0/24"]

    async def go() -> tuple[int, str]:
        async with IngestServer("127.0.0.1", 0, submit=journal, allowed_networks=outside,
                                auth={"alice": "s3cret"}) as server:
            async with client(server) as bad:
                with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
                    await bad.login("alice", "wrong")
                with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                    await bad.sendmail("a@s.test", ["x@one.test"], MSG)
            async with client(server, username="alice", password="s3cret") as good:
                _, reply = await good.sendmail("a@s.test", ["x@one.test"], MSG)
            return err.value.code, reply

    code, reply = run(go)
    assert code == 535
    assert reply == "2.0.0 OK ids=id1"
    assert [s.recipients for s in journal.committed] == [("x@one.test",)]


def test_auth_over_starttls() -> None:
    journal = Journal()
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("ingest.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_ctx.check_hostname = False  # we dial 127.0.0.1; the chain is still verified

    async def go() -> str:
        async with IngestServer("127.0.0.1", 0, submit=journal, allowed_networks=[],
                                auth={"bob": "pw"}, tls_context=server_ctx,
                                hostname="ingest.test") as server:
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=True,
                                tls_context=client_ctx, username="bob", password="pw",
                                timeout=5)
            async with c:
                assert c.get_transport_info("ssl_object") is not None
                _, reply = await c.sendmail("a@s.test", ["x@one.test"], MSG)
            return reply

    assert run(go) == "2.0.0 OK ids=id1"


def test_auth_in_clear_only_for_loopback_peers() -> None:
    assert [_is_loopback(a) for a in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1",
                                      "192.0.2.1", "2001:db8::1", "garbage")] == [
        True, True, True, True, False, False, False]


def test_auth_disabled_is_not_offered_and_refused() -> None:
    async def go() -> aiosmtplib.SMTPResponse:
        async with IngestServer("127.0.0.1", 0, submit=Journal()) as server, client(server) as c:
            await c.ehlo()
            return await c.execute_command(b"AUTH", b"PLAIN", b"AGFsaWNlAHB3")

    resp = run(go)
    assert isinstance(resp, aiosmtplib.SMTPResponse)
    assert (resp.code, resp.message) == (502, "5.5.1 AUTH not available")


def test_message_over_max_size_is_refused() -> None:
    journal = Journal()

    async def go() -> int:
        async with (
            IngestServer("127.0.0.1", 0, submit=journal, max_message_size=100) as server,
            client(server) as c,
        ):
            with pytest.raises(aiosmtplib.SMTPResponseException) as err:
                await c.sendmail("a@s.test", ["x@one.test"], MSG + b"x" * 200)
            return err.value.code

    assert run(go) == 552
    assert journal.committed == []


def test_graceful_stop_lets_a_committing_transaction_finish() -> None:
    journal = Journal()
    journal.gate = asyncio.Event()

    async def go() -> str:
        server = IngestServer("127.0.0.1", 0, submit=journal)
        await server.start()
        c = client(server)
        await c.connect()
        send = asyncio.ensure_future(c.sendmail("a@s.test", ["x@one.test"], MSG))
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(server.stop(grace=5))
        await asyncio.sleep(0.1)
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


def test_custom_header_names_and_python_submit_api() -> None:
    journal = Journal()
    content = b"X-Kumo-Tenant: t1\r\nX-Tenant: ignored\r\n\r\nX-Kumo-Campaign: in body\r\n"

    async def go() -> list[str]:
        return await submit(journal, sender="a@s.test", recipients=["p@a.test", "q@b.test"],
                            content=content, tenant_header="X-Kumo-Tenant",
                            campaign_header="X-Kumo-Campaign")

    assert run(go) == ["id1", "id2"]
    assert [(s.domain, s.tenant, s.campaign, s.peer) for s in journal.committed] == [
        ("a.test", "t1", "", ""), ("b.test", "t1", "", "")]

    async def explicit() -> list[str]:
        return await submit(journal, sender="", recipients=["r@c.test"], content=MSG,
                            tenant="override", campaign="")

    assert run(explicit) == ["id3"]
    assert (journal.committed[2].tenant, journal.committed[2].campaign) == ("override", "")


def test_submission_validation_and_helpers() -> None:
    assert metadata_from_headers(MSG) == ("acme", "spring sale")
    assert metadata_from_headers(b"no headers at all") == ("", "")
    assert [s.recipients for s in split_by_domain("a@s", ["b@X.t", "c@y.t", "d@x.T"], b"")] == [
        ("b@X.t", "d@x.T"), ("c@y.t",)]
    with pytest.raises(ValueError, match="at least one recipient"):
        split_by_domain("a@s", [], b"")
    with pytest.raises(ValueError, match="'nodomain' is not an address of the form"):
        Submission("a@s", ("nodomain",), b"")
    with pytest.raises(ValueError, match=r"'b@x\.t' and 'c@y\.t' are in different domains"):
        Submission("a@s", ("b@x.t", "c@y.t"), b"")
    with pytest.raises(ValueError, match="content must be bytes, not str"):
        Submission("a@s", ("b@x.t",), "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_message_size must be an integer above 0, not 0"):
        IngestServer(submit=Journal(), max_message_size=0)
    with pytest.raises(ValueError, match="not a CIDR network"):
        IngestServer(submit=Journal(), allowed_networks=["10.0.0.300/8"])


def test_null_sender_is_submitted_as_empty_string() -> None:
    # aiosmtpd reports MAIL FROM:<> as "<>"; the engine's null sender is "",
    # else the delivery side would send MAIL FROM:<<>>.
    journal = Journal()

    async def go() -> None:
        async with IngestServer("127.0.0.1", 0, submit=journal) as server, client(server) as c:
            errors, _ = await c.sendmail("", ["x@one.test"], MSG)  # MAIL FROM:<>
            assert errors == {}

    run(go)
    assert [s.sender for s in journal.committed] == [""]
