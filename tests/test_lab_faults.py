"""The lab's servers fail as the scenario's host table says: by probability, by
connection limits and outages, and in TLS.

Real servers over loopback (127.0.0.x), a raw asyncio client
(tests/support/lab_kit.py), so what is checked is what a delivering engine
would see on the wire.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import pytest

from lab.world import Lab
from tests.support.lab_kit import Client, greet, scenario, with_lab
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)


# -- SMTP: failures by probability ----------------------------------------------


@pytest.mark.parametrize(("fields", "commands", "expected", "counter"), [
    ({"tempfail_rcpt": 1.0}, ["RCPT TO:<b@lab.test>", "DATA"],
     ["450 4.2.1 Mailbox temporarily unavailable; try again later",
      "554 5.5.1 No valid recipients"], "deferred"),
    ({"permfail_rcpt": 1.0}, ["RCPT TO:<b@lab.test>"], ["550 5.1.1 No such user here"],
     "rejected"),
    ({"tempfail_mail": 1.0}, ["RCPT TO:<b@lab.test>"], ["503 5.5.1 Need MAIL command first"],
     "deferred"),
])
def test_probabilities_of_one_fail_every_time(
    fields: dict[str, Any], commands: list[str], expected: list[str], counter: str
) -> None:
    async def body(lab: Lab) -> tuple[str, list[str], dict[str, int]]:
        c = await greet(lab)
        mail = (await c.send("MAIL FROM:<a@x.test>"))[0]
        rest = await c.send(*commands)
        c.close()
        return mail, rest, lab.counters()["mx.lab.test"]

    mail, rest, counters = with_lab(scenario(fields), body)
    if "tempfail_mail" in fields:
        assert mail == "451 4.3.0 Temporary local problem; try again later"
    else:
        assert mail == "250 2.1.0 Sender OK"
    assert rest == expected
    assert counters[counter] == 1


@pytest.mark.parametrize(("fields", "expected"), [
    ({"tempfail_data": 1.0}, "451 4.3.0 Temporary failure after DATA; try again later"),
    ({"permfail_data": 1.0}, "554 5.7.1 Message rejected by content policy"),
])
def test_failures_after_the_dot(fields: dict[str, Any], expected: str) -> None:
    async def body(lab: Lab) -> str:
        c = await greet(lab)
        await c.send("MAIL FROM:<a@x.test>", "RCPT TO:<b@lab.test>", "DATA")
        c.writer.write(b"x\r\n.\r\n")
        reply = await c.reply()
        c.close()
        return reply

    assert with_lab(scenario(fields), body) == expected


def test_a_tempfail_probability_is_honoured_in_proportion() -> None:
    async def body(lab: Lab) -> list[str]:
        c = await greet(lab)
        await c.send("MAIL FROM:<a@x.test>")
        out = await c.send(*[f"RCPT TO:<r{i}@lab.test>" for i in range(2000)])
        c.close()
        return out

    replies = with_lab(scenario({"tempfail_rcpt": 0.2}), body)
    deferred = sum(r.startswith("450") for r in replies)
    # 2000 draws of p = 0.2: mean 400, sd ~17.9; 5 sd either side.
    assert 310 <= deferred <= 490


# -- connections: max_connections, refusals, outages --------------------------------


def test_beyond_max_connections_the_banner_is_421() -> None:
    async def body(lab: Lab) -> tuple[str, str, dict[str, int]]:
        a = await Client.open(lab)
        first = await a.reply()
        b = await Client.open(lab)
        second = await b.reply()
        a.close()
        b.close()
        await until(lambda: lab.counters()["mx.lab.test"]["open"] == 0, what="both closed")
        return first, second, lab.counters()["mx.lab.test"]

    first, second, c = with_lab(scenario({"max_connections": 1}), body)
    assert first.startswith("220 ")
    assert second == "421 4.7.0 Too many concurrent connections; try again later"
    assert c["busy"] == 1 and c["peak_connections"] == 2 and c["open"] == 0


def test_refuse_connections_closes_at_once() -> None:
    async def body(lab: Lab) -> tuple[bytes | str, dict[str, int]]:
        r, w = await asyncio.open_connection(lab.host_addresses["mx.lab.test"][0], lab.port)
        try:
            got: bytes | str = await asyncio.wait_for(r.read(100), 2)
        except ConnectionResetError:
            got = "reset"
        w.close()
        return got, lab.counters()["mx.lab.test"]

    got, c = with_lab(scenario({"refuse_connections": 1.0}), body)
    assert got in (b"", "reset")
    assert c["refused"] == 1 and c["peak_connections"] == 0


def test_outage_windows_refuse_blackhole_and_tempfail() -> None:
    # One-second windows, each probe well inside its own; the lab clock is
    # asserted around every probe, so a machine too loaded to probe in time
    # fails saying so rather than seeing the wrong window.
    sc = scenario({"outages": [{"start": "0s", "end": "1s", "mode": "refuse"},
                               {"start": "1s", "end": "2s", "mode": "blackhole"},
                               {"start": "2s", "end": "1h", "mode": "tempfail"}]})

    def inside(lab: Lab, lo: float, hi: float) -> None:
        now = lab.clock()
        assert lo <= now < hi, f"probe at {now:.3f} s, outside its window [{lo}, {hi})"

    async def body(lab: Lab) -> list[str]:
        lab.origin = time.time()
        seen = []
        try:
            await Client.open(lab)
            seen.append("connected")
        except ConnectionRefusedError:
            seen.append("refused")
        inside(lab, 0.0, 1.0)
        await asyncio.sleep(1.2 - lab.clock())
        c = await Client.open(lab)
        try:
            await asyncio.wait_for(c.reader.read(100), 0.3)
            seen.append("banner")
        except TimeoutError:
            seen.append("silent")
        inside(lab, 1.2, 2.0)
        c.close()
        await asyncio.sleep(2.2 - lab.clock())
        c = await greet(lab)
        seen.append((await c.send("MAIL FROM:<a@x.test>"))[0])
        c.close()
        return seen

    assert with_lab(sc, body) == [
        "refused", "silent",
        "451 4.3.0 Service temporarily unavailable (outage); try again later"]


# -- TLS ------------------------------------------------------------------------------


async def _starttls(lab: Lab, c: Client) -> ssl.SSLObject | None:
    assert (await c.send("STARTTLS"))[0] == "220 2.0.0 Ready to start TLS"
    ctx = ssl.create_default_context(cafile=str(lab.cafile))
    await c.writer.start_tls(ctx, server_hostname="mx.lab.test")
    return c.writer.get_extra_info("ssl_object")


def test_starttls_with_a_certificate_for_the_host_name() -> None:
    async def body(lab: Lab) -> tuple[str, str, str]:
        c = await Client.open(lab)
        await c.reply()
        before = (await c.send("EHLO c.test"))[0]
        obj = await _starttls(lab, c)
        assert obj is not None
        after = (await c.send("EHLO c.test"))[0]
        name = obj.getpeercert()["subjectAltName"][0][1]
        c.close()
        return before, after, name

    before, after, name = with_lab(scenario(), body)
    assert "STARTTLS" in before.split("\n")[-1] or "250-STARTTLS" in before
    assert "STARTTLS" not in after
    assert name == "mx.lab.test"


def test_no_starttls_when_the_host_does_not_offer_it() -> None:
    async def body(lab: Lab) -> tuple[str, str]:
        c = await Client.open(lab)
        await c.reply()
        ehlo = (await c.send("EHLO c.test"))[0]
        reply = (await c.send("STARTTLS"))[0]
        c.close()
        return ehlo, reply

    ehlo, reply = with_lab(scenario({"starttls": False}), body)
    assert "STARTTLS" not in ehlo
    assert reply == "502 5.5.1 Command not implemented"


def test_tls_failure_probability_breaks_the_handshake() -> None:
    async def body(lab: Lab) -> tuple[str, dict[str, int]]:
        c = await greet(lab)
        try:
            await _starttls(lab, c)
            outcome = "established"
        except (ssl.SSLError, ConnectionError, OSError):
            outcome = "failed"
        c.close()
        return outcome, lab.counters()["mx.lab.test"]

    outcome, c = with_lab(scenario({"tls_failure": 1.0}), body)
    assert outcome == "failed"
    assert c["tls_failures"] == 1 and c["tls_handshakes"] == 1
