"""The admin HTTP API against a running `Service`, over real HTTP on loopback.

Real peers: the dnslib server, an aiosmtpd sink (or a scripted slow one to
see concurrency), the SQLite spool; requests go through urllib in a thread
while the service runs on the test's loop.  What is checked is what an
operator sees: held mail delivered after DELETE, AdminBounce records for
queued and newly arriving mail until the bounce expires, a suspension still
in force (with the same expiry) after a restart, a reloaded connection_limit
in resolve-egress-path and at the sink, refusals of untrusted clients, and
400s naming the field.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from engine.live.dns import LiveResolver
from engine.live.logfile import read_records
from engine.live.service import Service
from tests.support.dns_server import DnsServer
from tests.support.live_harness import LIMITED_POLICY_FILE, message, path_policy, zone_for
from tests.support.smtp_scripted import ScriptedServer, slow_reply
from tests.support.smtp_servers import SinkServer

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")]


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(zone_for()) as server:
        yield server


def call(port: int, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request; (status, decoded JSON or text)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw, ctype = resp.status, resp.read().decode(), resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        status, raw, ctype = exc.code, exc.read().decode(), exc.headers["Content-Type"]
    return status, json.loads(raw) if "json" in (ctype or "") else raw


async def api(svc: Service, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, data = await asyncio.to_thread(call, svc.http.ports[0], method, path, body, **kw)
    assert status == 200, (status, data)
    return data


async def until(cond: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"{what} not met after {timeout}s"
        await asyncio.sleep(0.02)


def service(dns: DnsServer, spool: pathlib.Path, policy: Any, **kw: Any) -> Service:
    return Service(policy, spool, listen=None, http_listen=[("127.0.0.1", 0)],
                   resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0), **kw)


def test_suspend_holds_a_domain_until_delete_then_it_is_delivered(
        dns: DnsServer, tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        async with SinkServer() as sink, service(dns, tmp_path / "spool",
                                                 path_policy(sink.port)) as svc:
            made = await api(svc, "POST", "/api/admin/suspend/v1",
                             {"domain": "example.com", "reason": "maintenance",
                              "duration": "1h"})
            [mid] = await svc.submit("s@sender.test", ["a@example.com"], message(1))
            await asyncio.sleep(0.5)
            assert sink.messages == []
            seen = await api(svc, "GET", f"/api/admin/inspect-message/v1?id={mid}")
            assert seen["message"]["meta"]["where"] == "scheduled"
            [entry] = await api(svc, "GET", "/api/admin/suspend/v1")
            assert entry["id"] == made["id"] and entry["domain"] == "example.com"
            assert entry["held"] == 1 and entry["duration"].startswith("59m")
            summary = await api(svc, "GET", "/api/admin/queue-summary/v1")
            assert summary["scheduled_queues"][0]["scheduled"] == 1
            shape = await api(svc, "GET", "/api/admin/qshape/v1")
            assert shape["rows"][0] == {"domain": "TOTAL", "total": 1,
                                        "counts": [1] + [0] * 9}
            assert await api(svc, "DELETE", "/api/admin/suspend/v1",
                             {"id": made["id"]}) == f"removed {made['id']}"
            await until(lambda: len(sink.messages) == 1, "delivered after DELETE")
            assert await api(svc, "GET", "/api/admin/suspend/v1") == []

    asyncio.run(scenario())


def test_bounce_by_campaign_takes_queued_and_new_mail_until_it_expires(
        dns: DnsServer, tmp_path: pathlib.Path) -> None:
    logs = tmp_path / "logs"

    async def scenario() -> None:
        async with SinkServer() as sink, service(dns, tmp_path / "spool",
                                                 path_policy(sink.port),
                                                 log_dir=logs) as svc:
            # held first, so that the bounce finds mail queued
            hold = await api(svc, "POST", "/api/admin/suspend/v1",
                             {"campaign": "spring", "reason": "wait", "duration": 3600})
            queued = [(await svc.submit("s@sender.test", [f"u{i}@example.com"], message(i),
                                        campaign="spring"))[0] for i in range(3)]
            made = await api(svc, "POST", "/api/admin/bounce/v1",
                             {"campaign": "spring", "reason": "recalled", "duration": "2s"})
            assert made["total_bounced"] == 3 and made["bounced"] == {"spring:example.com": 3}
            [late] = await svc.submit("s@sender.test", ["late@example.com"], message(9),
                                      campaign="spring")
            [other] = await svc.submit("s@sender.test", ["o@example.com"], message(10),
                                       campaign="autumn")
            [listed] = await api(svc, "GET", "/api/admin/bounce/v1")
            assert listed["total_bounced"] == 4 and listed["reason"] == "recalled"
            await until(lambda: len(sink.messages) == 1, "the other campaign delivered")
            await until(lambda: not svc.engine.admin_rules.of_kind("bounce"), "expiry", 5)
            await api(svc, "DELETE", "/api/admin/suspend/v1", {"id": hold["id"]})
            [after] = await svc.submit("s@sender.test", ["after@example.com"], message(11),
                                       campaign="spring")
            await until(lambda: len(sink.messages) == 2, "delivered after the bounce expired")
        bounced = [r for r in read_records(logs) if r["type"] == "AdminBounce"]
        assert sorted(r["id"] for r in bounced) == sorted([*queued, late])
        assert all("Administrator bounced with reason: recalled" in r["response"]["content"]
                   for r in bounced)
        assert other not in {r["id"] for r in bounced} and after not in {
            r["id"] for r in bounced}

    asyncio.run(scenario())


def test_a_suspension_survives_a_restart_with_the_same_expiry(
        dns: DnsServer, tmp_path: pathlib.Path) -> None:
    spool = tmp_path / "spool"

    async def scenario() -> None:
        async with SinkServer() as sink:
            policy = path_policy(sink.port)
            async with service(dns, spool, policy) as svc:
                made = await api(svc, "POST", "/api/admin/suspend/v1",
                                 {"domain": "example.com", "reason": "r", "duration": "1h"})
                await svc.submit("s@sender.test", ["a@example.com"], message(1))
                expires = svc.engine.admin_rules.rules[made["id"]].expires
            async with service(dns, spool, policy) as svc:
                assert svc.replayed > 0
                rule = svc.engine.admin_rules.rules[made["id"]]
                assert rule.expires == expires and svc.engine.timers[("admin", made["id"])] \
                    == expires
                [entry] = await api(svc, "GET", "/api/admin/suspend/v1")
                assert entry["id"] == made["id"]
                await asyncio.sleep(0.5)
                assert sink.messages == []  # still held after the restart
                await api(svc, "DELETE", "/api/admin/suspend/v1", {"id": made["id"]})
                await until(lambda: len(sink.messages) == 1, "delivered after DELETE")
            async with service(dns, spool, policy) as svc:
                assert svc.engine.admin_rules.rules == {}  # the DELETE was journaled too

    asyncio.run(scenario())




def test_reload_changes_connection_limit_while_mail_flows(
        dns: DnsServer, tmp_path: pathlib.Path) -> None:
    from engine.policy import Policy

    policy_file = tmp_path / "policy.py"

    async def scenario() -> None:
        async with ScriptedServer(slow_reply("DOT", 0.2)) as sink:
            policy_file.write_text(LIMITED_POLICY_FILE.format(port=sink.port, limit=1))
            svc = service(dns, tmp_path / "spool", Policy.from_file(str(policy_file)),
                          policy_path=policy_file)
            async with svc:
                peak = [0]

                async def watch() -> None:
                    while True:
                        peak[0] = max(peak[0], len(sink._writers))
                        await asyncio.sleep(0.01)

                watcher = asyncio.get_running_loop().create_task(watch())
                for i in range(120):
                    await svc.submit("s@sender.test", [f"u{i}@example.com"], message(i))
                await asyncio.sleep(0.6)
                assert peak[0] == 1
                path = "/api/admin/resolve-egress-path/v1?domain=example.com"
                before = await api(svc, "GET", path)
                assert before["constraints"]["max_concurrent_dispatchers"]["value"] == 1
                # a policy that does not load is refused; the old one stays
                policy_file.write_text("this is not python(")
                status, err = await asyncio.to_thread(
                    call, svc.http.ports[0], "POST", "/api/admin/reload/v1", {})
                assert status == 422 and err["field"] == "policy"
                assert "refused, the one in force stays" in err["error"]
                policy_file.write_text(LIMITED_POLICY_FILE.format(port=sink.port, limit=4))
                done = await api(svc, "POST", "/api/admin/reload/v1", {})
                assert done["reloaded"] is True
                after = await api(svc, "GET", path)
                assert after["constraints"]["max_concurrent_dispatchers"] == {
                    "value": 4.0, "source": {"kind": "primary"}, "display": "4"}
                assert after["queue_name"] == "unspecified->mx1.example.com@smtp_client"
                await until(lambda: peak[0] >= 3, "more connections at the sink", 10)
                watcher.cancel()
                await until(lambda: svc.engine.queued_count == 0, "all delivered", 30)
            assert (tmp_path / "spool" / "policy.py").read_text() == policy_file.read_text()

    asyncio.run(scenario())


def test_untrusted_clients_need_the_bearer_token(
        dns: DnsServer, tmp_path: pathlib.Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")

    async def scenario() -> None:
        async with service(dns, tmp_path / "spool", path_policy(25),
                           http_trusted=["10.0.0.0/8"], http_token=str(token_file)) as svc:
            port = svc.http.ports[0]
            status, body = await asyncio.to_thread(call, port, "GET", "/api/admin/bounce/v1")
            assert status == 401 and "not a trusted host" in body["error"]
            status, body = await asyncio.to_thread(
                call, port, "POST", "/api/admin/bounce/v1", {"reason": "x"},
                headers={"Authorization": "Bearer wrong"})
            assert status == 403 and svc.engine.admin_rules.rules == {}
            status, body = await asyncio.to_thread(
                call, port, "GET", "/metrics.json", headers={"Authorization": "Bearer s3cret"})
            assert status == 200 and body["total_messages_received"]["type"] == "counter"
            status, text = await asyncio.to_thread(
                call, port, "GET", "/metrics", headers={"Authorization": "Bearer s3cret"})
            assert status == 200 and "# TYPE total_messages_received untyped" in text

    asyncio.run(scenario())


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/admin/suspend/v1", {"domain": "x.test"}, "reason"),
    ("/api/admin/suspend/v1", {"reason": "r", "duration": "soon"}, "duration"),
    ("/api/admin/suspend/v1", {"reason": "r", "expires": "2020-01-01T00:00:00Z"}, "expires"),
    ("/api/admin/bounce/v1", {"reason": "r", "domian": "x.test"}, "domian"),
    ("/api/admin/bounce/v1", {"reason": "r", "queue_names": "q"}, "queue_names"),
    ("/api/admin/suspend-ready-q/v1", {"reason": "r"}, "name"),
    ("/api/admin/bounce/v1", [1, 2], "body"),
])
def test_bad_requests_get_400_naming_the_field(dns: DnsServer, tmp_path: pathlib.Path,
                                               path: str, body: Any, field: str) -> None:
    async def scenario() -> None:
        async with service(dns, tmp_path / "spool", path_policy(25)) as svc:
            status, answer = await asyncio.to_thread(call, svc.http.ports[0], "POST", path,
                                                     body)
            assert status == 400 and answer["field"] == field, answer
            assert svc.engine.admin_rules.rules == {}
            status, answer = await asyncio.to_thread(
                call, svc.http.ports[0], "GET", "/api/admin/inspect-message/v1")
            assert status == 400 and answer["field"] == "id"
            status, answer = await asyncio.to_thread(
                call, svc.http.ports[0], "DELETE", "/api/admin/bounce/v1", {"id": "nope"})
            assert status == 404 and answer["field"] == "id"

    asyncio.run(scenario())
