"""ehlo_domain's default: the path's, else the egress source's, else the host name.

The reference page (make_egress_path, ehlo_domain): "The default value is the
ehlo_domain specified by make_egress_source, if any, otherwise, the local
machine hostname"; KumoMTA: crates/kumod/src/smtp_dispatcher.rs
(``SmtpDispatcher::init``: ``gethostname()``).  The engine learns the name from
its driver (`Core.hostname`); the simulator keeps the fixed "localhost".
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from engine.effects import Send, Verb
from engine.engine import Engine
from tests.support.dns_server import DnsServer
from tests.support.engine_harness import World, of, policy, submit
from tests.support.live_harness import Live, path_policy, zone_for
from tests.support.smtp_servers import SinkServer


def ehlo_names(fx: list[Any]) -> list[str]:
    return [c.arg for s in of(fx, Send) for c in s.commands if c.verb is Verb.EHLO]


def test_the_engine_says_the_host_name_its_driver_gave() -> None:
    eng = Engine(policy(), seed=1)
    assert ehlo_names(World(eng).feed(submit(1))) == ["localhost"]  # the simulator's
    eng = Engine(policy(), seed=1)
    eng.hostname = "mta1.example.net"
    assert ehlo_names(World(eng).feed(submit(1))) == ["mta1.example.net"]
    eng = Engine(policy(ehlo_domain="out.example.org"), seed=1)
    eng.hostname = "mta1.example.net"
    assert ehlo_names(World(eng).feed(submit(1))) == ["out.example.org"]


@pytest.mark.timeout(30)
def test_live_delivery_says_the_machines_host_name() -> None:
    async def go() -> bytes:
        async with SinkServer() as sink:
            with DnsServer(zone_for()) as dns:
                async with Live(path_policy(sink.port), dns.port) as live:
                    live.submit()
                    await live.wait_done()
            return sink.plaintext

    sent = asyncio.run(go())
    assert f"EHLO {socket.gethostname()}\r\n".encode() in sent
