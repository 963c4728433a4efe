"""The record values that need a driver: source_address, session_id, nodeid, and
the Reception record's peer_address.

KumoMTA: crates/kumo-log-types/src/lib.rs (``JsonLogRecord``: source_address a
``MaybeProxiedSourceAddress {address}``, ``nodeid``, ``session_id``),
crates/kumod/src/smtp_dispatcher.rs (``log_disposition``: the dispatcher's
session_id and the socket's source address), crates/kumod/src/ready_queue.rs
(the "failed to connect" TransientFailure carries the session_id),
crates/kumod/src/smtp_server.rs (Reception: ``peer_address {name: said_hello,
addr: peer ip}``, the inbound session's id), crates/kumo-server-common/src/
nodeid.rs (a UUID persisted once per node, or KUMO_NODE_ID).
"""

from __future__ import annotations

import asyncio
import pathlib
import smtplib
import uuid
from typing import Any

import pytest

from engine.effects import Connect, Effect
from engine.engine import Engine
from engine.events import Connected, ConnectFailed, MessageSubmitted, Response
from engine.live.nodeid import node_id
from engine.records import session_id
from engine.reply import Reply
from tests.support.engine_harness import World, policy, records, submit


class LocalWorld(World):
    """Connected events carry the socket's local address, as the live driver's do."""

    def _answer(self, e: Effect) -> None:
        if isinstance(e, Connect) and self.auto_connect:
            self.open[e.conn] = e
            local = f"10.9.8.7:{40000 + e.conn}"
            self.queue.append(Connected(at=self.now, conn=e.conn, local=local))
            self.queue.append(Response(at=self.now, conn=e.conn, reply=Reply.make(220, None, "hi")))
            return
        super()._answer(e)


def test_delivery_records_carry_the_socket_address_and_the_session_id() -> None:
    w = LocalWorld(Engine(policy(), seed=5))
    fx = w.feed(submit(1))
    [rec] = records(fx, "Delivery")
    assert rec["source_address"] == {"address": "10.9.8.7:40001"}
    assert rec["session_id"] == session_id(5, 1)
    assert uuid.UUID(rec["session_id"]).version == 4
    # deterministic: the same seed and connection give the same id; another differs
    again = records(LocalWorld(Engine(policy(), seed=5)).feed(submit(1)), "Delivery")[0]
    assert again["session_id"] == rec["session_id"]
    assert session_id(5, 2) != rec["session_id"] != session_id(6, 1)
    [reception] = records(fx, "Reception")
    assert "session_id" not in reception and reception["peer_address"] is None


def test_the_all_hosts_failed_record_carries_the_session_id() -> None:
    w = World(Engine(policy(), seed=5), auto_connect=False)
    fx = w.feed(submit(1))
    fx = []
    while w.open:
        conn = next(iter(w.open))
        w.open.pop(conn)
        fx += w.feed(ConnectFailed(at=0.0, conn=conn, reason="refused"))
    [rec] = records(fx, "TransientFailure")
    assert rec["session_id"] == session_id(5, 1)
    assert rec["source_address"] is None


def test_the_engine_writes_its_nodeid_into_every_record() -> None:
    eng = Engine(policy(), seed=1)
    eng.nodeid = "5a3c2b9e-0000-4000-8000-000000000001"
    fx = World(eng).feed(submit(1))
    assert {r["nodeid"] for r in records(fx)} == {eng.nodeid}
    plain = World(Engine(policy(), seed=1)).feed(submit(1))
    assert {r["nodeid"] for r in records(plain)} == {"00000000-0000-0000-0000-000000000000"}


def test_a_reception_over_smtp_names_the_client_and_its_session() -> None:
    eng = Engine(policy(), seed=1)
    fx = eng.handle(MessageSubmitted(at=0.0, id="m1", sender="s@x.test",
                                     recipients=("u@example.com",), peer_name="client.test",
                                     peer_addr="192.0.2.9", session_id="sid-1"))
    [rec] = records(fx, "Reception")
    assert rec["peer_address"] == {"name": "client.test", "addr": "192.0.2.9"}
    assert rec["session_id"] == "sid-1"


def test_the_spool_keeps_the_node_id(tmp_path: pathlib.Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUMO_NODE_ID", raising=False)
    first = node_id(tmp_path)
    assert uuid.UUID(first).version == 4
    assert node_id(tmp_path) == first
    assert (tmp_path / "nodeid").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("KUMO_NODE_ID", "0f0e0d0c-0b0a-4909-8807-060504030201")
    assert node_id(tmp_path) == "0f0e0d0c-0b0a-4909-8807-060504030201"
    monkeypatch.setenv("KUMO_NODE_ID", "nope")
    with pytest.raises(ValueError, match="KUMO_NODE_ID: 'nope' is not a valid UUID"):
        node_id(tmp_path)


def test_the_simulator_writes_one_node_and_session_ids() -> None:
    import sim
    from sim.driver import sim_nodeid
    sc = sim.Scenario.from_dict({
        "name": "ids", "horizon": "30m",
        "traffic": [{"domain": "example.com", "messages": 5, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx1.example.com", "preference": 10}]}},
        "hosts": {"mx1.example.com": {}},
    })
    recs = sim.run(sc).records
    assert {r["nodeid"] for r in recs} == {sim_nodeid("ids")}
    assert all(uuid.UUID(r["session_id"]) for r in recs if r["type"] == "Delivery")
    assert sim.run(sc).records == recs


@pytest.mark.timeout(30)
def test_live_records_carry_peer_source_address_session_and_node(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.live.dns import LiveResolver
    from engine.live.logfile import read_records
    from engine.live.service import Service
    from tests.support.dns_server import DnsServer
    from tests.support.live_harness import message, path_policy, zone_for
    from tests.support.smtp_servers import SinkServer

    monkeypatch.delenv("KUMO_NODE_ID", raising=False)

    def send(port: int) -> Any:
        with smtplib.SMTP("127.0.0.1", port, timeout=5, local_hostname="client.test") as c:
            return c.sendmail("s@sender.test", ["user@example.com"], message(1))

    async def scenario() -> list[dict[str, Any]]:
        async with SinkServer() as sink:
            with DnsServer(zone_for()) as dns:
                svc = Service(path_policy(sink.port), tmp_path / "spool",
                              listen=("127.0.0.1", 0), log_dir=tmp_path / "logs",
                              resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0))
                async with svc:
                    assert await asyncio.to_thread(send, svc.listen_port) == {}
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 10
                    while not any(r["type"] == "Delivery"
                                  for r in read_records(tmp_path / "logs")):
                        assert loop.time() < deadline, "no Delivery record"
                        await asyncio.sleep(0.02)
        return read_records(tmp_path / "logs")

    recs = {r["type"]: r for r in asyncio.run(scenario())}
    node = (tmp_path / "spool" / "nodeid").read_text().strip()
    reception, delivery = recs["Reception"], recs["Delivery"]
    assert reception["peer_address"] == {"name": "client.test", "addr": "127.0.0.1"}
    assert uuid.UUID(reception["session_id"])
    host, port = delivery["source_address"]["address"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert uuid.UUID(delivery["session_id"]) and delivery["session_id"] != reception["session_id"]
    assert reception["nodeid"] == delivery["nodeid"] == node
