"""Shaping live, on loopback: an aiosmtpd host answers one recipient with a
provider's pushback text, the rule fires in the running service, and the
override shows in the admin API's resolve-egress-path, in `egress check
--spool`, in the log records and in the sink's connection count; a policy
reload keeps it and re-reads the shaping file.  Then AdjustConfig ramps the
connection limit back, step by step, live."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import pathlib
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from engine.cli import main
from engine.live.dns import LiveResolver
from engine.live.logfile import read_records
from engine.live.reload import read_shaping
from engine.live.service import Service
from engine.policy import Policy
from tests.support.dns_server import DnsServer
from tests.support.live_harness import LOOPBACK_POLICY_FILE, message, zone_for
from tests.support.smtp_servers import SinkServer, _RecordingSMTP, _SinkHandler
from tests.test_http_api import api, until

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")]

# four connections, and idle ones close after a second: a lowered limit opens no new
# connection, but those open run on until they close (as KumoMTA's dispatchers do)
POLICY = LOOPBACK_POLICY_FILE.replace(
    'enable_mta_sts=False)', 'enable_mta_sts=False, connection_limit=4, idle_timeout="1s")')
PUSH = "push@example.com"
PUSHBACK = "451 4.7.0 [TS01] Messages from 127.0.0.1 temporarily deferred"
RULE = '''
[["default".automation]]
regex = 'Messages from [0-9.]+ temporarily deferred'
action = {SetConfig = {name = "connection_limit", value = 1}}
duration = "1h"
'''
RAMP = '''
[["default".automation]]
regex = 'Messages from [0-9.]+ temporarily deferred'
duration = "1h"

["default".automation.action.AdjustConfig]
name = "connection_limit"
decrease_percent = 75
floor_amount = 1
ramp_step_amount = 1
ramp_up_interval = "1s"
'''


class _SlowHandler(_SinkHandler):
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(0.1)  # long enough for several connections to overlap
        return await super().handle_DATA(server, session, envelope)


class SlowSink(SinkServer):
    """The sink, slow at the dot, counting the connections open at once."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(reject_recipients={PUSH: PUSHBACK}, **kw)
        self.peak = 0

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        proto = super()._protocol(loop)
        assert isinstance(proto, _RecordingSMTP)
        proto._handle_hooks["DATA"] = _SlowHandler(self).handle_DATA
        return proto

    def open_now(self) -> int:
        self.peak = max(self.peak, len(self._transports))
        return len(self._transports)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(zone_for()) as server:
        yield server


def _service(dns: DnsServer, tmp: pathlib.Path, policy_file: pathlib.Path,
             shaping_file: pathlib.Path) -> Service:
    policy = Policy.from_file(str(policy_file))
    policy.shaping = read_shaping([str(shaping_file)])  # what `egress deliver --shaping` does
    return Service(policy, tmp / "spool", listen=None, http_listen=[("127.0.0.1", 0)],
                   resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0),
                   policy_path=policy_file, log_dir=tmp / "logs")


async def _burst(svc: Service, sink: SlowSink, start: int, n: int) -> int:
    """Submit `n` messages and watch the sink until they are in; the peak of
    connections open at once meanwhile."""
    sink.peak = 0
    before = len(sink.messages)
    await asyncio.gather(*(svc.submit("s@sender.test", [f"u{i}@example.com"], message(i))
                           for i in range(start, start + n)))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(sink.messages) < before + n:
        sink.open_now()
        assert loop.time() < deadline, "the burst was not delivered"
        await asyncio.sleep(0.005)
    return sink.peak


def _check(*args: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["check", *args]) == 0
    return out.getvalue()


def test_a_rule_fires_live_shows_everywhere_and_survives_a_reload(
        dns: DnsServer, tmp_path: pathlib.Path) -> None:
    policy_file, shaping_file = tmp_path / "policy.py", tmp_path / "shaping.toml"
    path = "/api/admin/resolve-egress-path/v1?domain=example.com"

    async def scenario() -> None:
        async with SlowSink() as sink:
            policy_file.write_text(POLICY.format(port=sink.port))
            shaping_file.write_text(RULE)
            async with _service(dns, tmp_path, policy_file, shaping_file) as svc:
                assert await _burst(svc, sink, 0, 40) > 1  # the policy's 4 connections
                before = await api(svc, "GET", path)
                assert before["shaping"]["in_force"] == []
                await svc.submit("s@sender.test", [PUSH], message(99))
                await until(lambda: svc.engine.automation is not None
                            and svc.engine.automation.firings, "the rule fired")
                shown = await api(svc, "GET", path)
                assert shown["path_config"]["connection_limit"] == 1
                [entry] = shown["shaping"]["in_force"]
                assert entry["rule"] == "default#0" and entry["response"] == PUSHBACK
                assert entry["path"] == "unspecified->mx1.example.com@smtp_client"
                assert entry["until"] > before["drain_estimate"]["backlog"] + 3000
                await until(lambda: sink.open_now() == 0, "idle connections closed", 10)
                connections = sink.connections
                assert await _burst(svc, sink, 100, 30) == 1  # the override, at the sink
                assert sink.connections - connections <= 2
                # egress check --spool rebuilds the running service's state from its journal
                args = (str(policy_file), "--shaping", str(shaping_file),
                        "--spool", str(tmp_path / "spool"))
                report = json.loads(await asyncio.to_thread(_check, *args, "--json"))
                [p] = report["domains"][0]["paths"]
                assert p["site_name"] == "mx1.example.com"
                assert p["egress_path"]["connection_limit"] == 1
                assert [e["rule"] for e in p["in_force"]] == ["default#0"]
                text = await asyncio.to_thread(_check, *args)
                assert "shaping in force (--spool):" in text
                assert ("default#0 on unspecified->mx1.example.com@smtp_client: "
                        "SetConfig connection_limit=1") \
                    in " ".join(text.split())  # rich wraps long lines at spaces
                # a reload keeps the override and re-reads the shaping file
                shaping_file.write_text(RULE + '\n["default"]\nmax_deliveries_per_connection = 7\n')
                assert (await api(svc, "POST", "/api/admin/reload/v1", {}))["reloaded"] is True
                after = await api(svc, "GET", path)
                assert after["path_config"]["connection_limit"] == 1
                assert after["path_config"]["max_deliveries_per_connection"] == 7
                assert [e["rule"] for e in after["shaping"]["in_force"]] == ["default#0"]
        recs = [r for r in read_records(tmp_path / "logs") if r["type"] == "Shaping"]
        assert [r["event"] for r in recs] == ["fired"] and recs[0]["response"] == PUSHBACK

    asyncio.run(scenario())


def test_adjust_config_ramps_the_limit_back_live(dns: DnsServer, tmp_path: pathlib.Path) -> None:
    policy_file, shaping_file = tmp_path / "policy.py", tmp_path / "shaping.toml"

    async def scenario() -> None:
        async with SlowSink() as sink:
            policy_file.write_text(POLICY.format(port=sink.port))
            shaping_file.write_text(RAMP)
            async with _service(dns, tmp_path, policy_file, shaping_file) as svc:
                await svc.submit("s@sender.test", [PUSH], message(0))
                await until(lambda: svc.engine.automation is not None
                            and svc.engine.automation.ramps, "lowered")
                [rq] = svc.engine.paths.values()
                assert rq.cfg.connection_limit == 1
                await until(lambda: not svc.engine.automation.ramps, "ramped back", 20)
                assert rq.cfg.connection_limit == 4
        recs = [r for r in read_records(tmp_path / "logs") if r["type"] == "Shaping"
                and r["event"].startswith("ramp_")]
        assert [(r["event"], r["value"]) for r in recs] == [
            ("ramp_decreased", 1), ("ramp_increased", 2), ("ramp_increased", 3),
            ("ramp_restored", 4)]
        steps = [r["next_step"] for r in recs[:-1]]  # one interval apart (whole seconds)
        assert all(b - a in (1, 2) for a, b in itertools.pairwise(steps)), steps

    asyncio.run(scenario())
