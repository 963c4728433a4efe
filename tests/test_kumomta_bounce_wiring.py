"""The bounce classifier wired in: a policy configures it, records carry its class.

KumoMTA: crates/kumod/src/logging/classify.rs (``ClassifierParams``: ``files``,
``.toml``/``.json`` only, configured once; classification at logging time),
crates/bounce-classify/src/lib.rs (rules, first match),
crates/kumo-log-types/src/lib.rs (``is_bounce_classifiable``).  The engine test
feeds events and reads the Log effects; the simulator runs a scenario naming a
Lua policy; live delivery runs a `Service` with the same policy on loopback.
"""

from __future__ import annotations

import asyncio
import pathlib
import smtplib
from typing import Any

import pytest

from engine.config import make_egress_path
from engine.engine import Engine
from engine.errors import ConfigError, PolicyError
from engine.policy import Policy
from engine.reply import Reply
from tests.support.engine_harness import World, records, submit

RULES = """
[rules]
QuotaIssues = ["mailbox full"]
InvalidRecipient = ["^550 5\\\\.1\\\\.1 "]
"""

LUA = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.configure_bounce_classifier { files = { 'rules.toml' } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path { enable_mta_sts = false, prohibited_hosts = {},
                                 enable_tls = 'Disabled', smtp_port = PORT }
end)
"""


def _policy(tmp: pathlib.Path) -> Policy:
    (tmp / "rules.toml").write_text(RULES)
    p = Policy()
    p.configure_bounce_classifier(files=["rules.toml"], base=tmp)
    cfg = make_egress_path(enable_mta_sts=False)
    p.on("get_egress_path_config")(lambda d, s, site: cfg)
    return p


def _replies(rcpt: str) -> Reply:
    if rcpt.startswith("full"):
        return Reply.make(452, "4.2.2", "mailbox full, try later")
    if rcpt.startswith("gone"):
        return Reply.make(550, "5.1.1", "no such user")
    return Reply.make(250, "2.1.5", "ok")


def test_the_engine_classifies_classifiable_records(tmp_path: pathlib.Path) -> None:
    w = World(Engine(_policy(tmp_path), seed=1))
    w.rcpt_reply = _replies
    fx = w.feed(submit(1, rcpts=("full@example.com", "gone@example.com", "ok@example.com")))
    by_rcpt = {r["recipient"]: (r["type"], r["bounce_classification"]) for r in records(fx)
               if r["type"] != "Reception"}
    assert by_rcpt == {"full@example.com": ("TransientFailure", "QuotaIssues"),
                       "gone@example.com": ("Bounce", "InvalidRecipient"),
                       "ok@example.com": ("Delivery", "Uncategorized")}
    [rec] = records(fx, "Reception")
    assert rec["bounce_classification"] == "Uncategorized"


def test_kumomtas_shipped_iana_file_is_built_in(tmp_path: pathlib.Path) -> None:
    p = Policy()
    clf = p.configure_bounce_classifier(
        files=["/opt/kumomta/share/bounce_classifier/iana.toml"])
    assert clf.classify_line("552 5.2.2 over quota") == "QuotaIssues"


@pytest.mark.parametrize(("files", "why"), [
    (["rules.yaml"], "must have either .toml or .json filename extension"),
    (["missing.toml"], "cannot read"),
])
def test_a_bad_classifier_configuration_is_one_clear_error(
        tmp_path: pathlib.Path, files: list[str], why: str) -> None:
    with pytest.raises(ConfigError, match="configure_bounce_classifier") as err:
        Policy().configure_bounce_classifier(files=files, base=tmp_path)
    assert why in str(err.value)


def test_configured_twice_is_refused_as_kumomta_does(tmp_path: pathlib.Path) -> None:
    p = _policy(tmp_path)
    with pytest.raises(ConfigError, match="already configured"):
        p.configure_bounce_classifier(files=["rules.toml"], base=tmp_path)


def _lua(tmp: pathlib.Path, port: int = 25) -> pathlib.Path:
    (tmp / "rules.toml").write_text(RULES)
    path = tmp / "init.lua"
    path.write_text(LUA.replace("PORT", str(port)))
    return path


def test_a_lua_policy_configures_it_and_keeps_the_rules_file(tmp_path: pathlib.Path) -> None:
    p = Policy.from_file(_lua(tmp_path))
    assert p.bounce_classifier is not None
    assert p.bounce_classifier.classify_line("452 4.2.2 mailbox full") == "QuotaIssues"
    assert "rules.toml" in p.files  # copied with the policy for `egress replay`
    (tmp_path / "init.lua").write_text(LUA.replace("'rules.toml'", "'rules.txt'"))
    with pytest.raises(PolicyError, match="filename extension"):
        Policy.from_file(tmp_path / "init.lua")


def test_the_simulator_classifies_with_the_scenarios_policy(tmp_path: pathlib.Path) -> None:
    import sim
    _lua(tmp_path)
    sc = sim.Scenario.from_dict({
        "name": "classified", "horizon": "30m", "policy": "init.lua",
        "traffic": [{"domain": "example.com", "messages": 20, "at": "0s"}],
        "domains": {"example.com": {"mx": [{"host": "mx1.example.com", "preference": 10}]}},
        "hosts": {"mx1.example.com": {"permfail_rcpt": 1.0}},
    }, base_dir=tmp_path)
    result = sim.run(sc)
    bounces = [r for r in result.records if r["type"] == "Bounce"]
    assert bounces and {r["bounce_classification"] for r in bounces} != {"Uncategorized"}
    assert all(r["bounce_classification"] == "InvalidRecipient" for r in bounces
               if r["response"]["content"] and r["response"]["code"] == 550
               and r["response"]["enhanced_code"] == {"class": 5, "subject": 1, "detail": 1})


@pytest.mark.timeout(30)
def test_live_delivery_records_carry_the_class(tmp_path: pathlib.Path) -> None:
    from engine.live.dns import LiveResolver
    from engine.live.logfile import read_records
    from engine.live.service import Service
    from tests.support.dns_server import DnsServer
    from tests.support.live_harness import message, zone_for
    from tests.support.smtp_servers import SinkServer

    def send(port: int) -> Any:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            return client.sendmail("s@sender.test", ["gone@example.com"],
                                   message(1, "gone@example.com"))

    async def scenario() -> list[dict[str, Any]]:
        async with SinkServer(reject_recipients={"gone@example.com": "550 5.1.1 no such user"}
                              ) as sink:
            policy = Policy.from_file(_lua(tmp_path, sink.port))
            with DnsServer(zone_for()) as dns:
                svc = Service(policy, tmp_path / "spool", listen=("127.0.0.1", 0),
                              log_dir=tmp_path / "logs",
                              resolver=LiveResolver(["127.0.0.1"], port=dns.port, timeout=2.0))
                async with svc:
                    assert await asyncio.to_thread(send, svc.listen_port) == {}
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 10
                    while not any(r["type"] == "Bounce" for r in read_records(tmp_path / "logs")):
                        assert loop.time() < deadline, "no Bounce record"
                        await asyncio.sleep(0.02)
        return [r for r in read_records(tmp_path / "logs") if r["type"] == "Bounce"]

    [rec] = asyncio.run(scenario())
    assert rec["bounce_classification"] == "InvalidRecipient"
