"""The lab's servers behave as the scenario's host table says; its DNS answers the scenario.

Every test talks to real servers over loopback (127.0.0.x) with a raw
asyncio client, so what is checked is what a delivering engine would see on
the wire: replies, their timing, resets, refusals and TLS.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dnslib
import pytest

from engine.events import DnsFailure, Resolved, ResolveFailed
from engine.live.dns import LiveResolver
from engine.reply import Reply
from lab.compare import CompareError, compare_dirs
from lab.dns import LabZone
from lab.smtp_wire import ehlo_reply, wire
from lab.world import Lab, lab_addresses
from sim.scenario import Scenario

pytestmark = pytest.mark.timeout(60)


def scenario(hosts: dict[str, dict[str, Any]] | None = None, **extra: Any) -> Scenario:
    """A one-domain scenario whose single host `mx.lab.test` has `hosts` fields."""
    host = {"connect_latency": "0ms", "command_latency": "0ms", "data_latency": "0ms",
            "tls_latency": "0ms", **(hosts or {})}
    data: dict[str, Any] = {
        "name": "t",
        "traffic": [{"domain": "lab.test", "messages": 1}],
        "domains": {"lab.test": {"mx": [{"host": "mx.lab.test", "preference": 10}]}},
        "hosts": {"mx.lab.test": host},
    }
    data.update(extra)
    return Scenario.from_dict(data)


def with_lab(sc: Scenario, body: Callable[[Lab], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with Lab(sc) as lab:
            return await body(lab)

    return asyncio.run(main())


class Client:
    """A raw SMTP client: send lines, read whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, lab: Lab, host: str = "mx.lab.test") -> Client:
        r, w = await asyncio.open_connection(lab.host_addresses[host][0], lab.port)
        return cls(r, w)

    async def reply(self) -> str:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 5)
            if not line:
                raise ConnectionError("closed")
            lines.append(line.decode().rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    async def send(self, *lines: str) -> list[str]:
        self.writer.write(b"".join(x.encode() + b"\r\n" for x in lines))
        return [await self.reply() for _ in lines]

    def close(self) -> None:
        self.writer.close()


async def greet(lab: Lab) -> Client:
    c = await Client.open(lab)
    assert (await c.reply()).startswith("220 mx.lab.test ")
    await c.send("EHLO client.test")
    return c


# -- wire and addresses -----------------------------------------------------------


def test_wire_writes_multiline_replies_with_enhanced_codes() -> None:
    assert wire(Reply.make(450, "4.2.1", "busy\nlater")) == b"450-4.2.1 busy\r\n450 4.2.1 later\r\n"
    assert wire(Reply(code=250, text="mx\nPIPELINING")) == b"250-mx\r\n250 PIPELINING\r\n"


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("starttls", [True, False])
@pytest.mark.parametrize("auth", [True, False])
def test_ehlo_capabilities_are_the_simulated_worlds(
    pipelining: bool, starttls: bool, auth: bool,
) -> None:
    # lab.smtp_wire.ehlo_reply is a copy of sim.world's; the lab must advertise what the
    # simulated host does, so the two are pinned to each other (and to the exact lines).
    from sim.world import _ehlo_reply

    spec = scenario({"pipelining": pipelining, "starttls": starttls,
                     "auth": auth}).hosts["mx.lab.test"]
    for tls in (False, True):
        assert ehlo_reply(spec, tls=tls) == _ehlo_reply(spec, tls=tls)
    lines = ehlo_reply(spec, tls=False).text.split("\n")
    assert lines == ["mx.lab.test", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES",
                     *(["PIPELINING"] if pipelining else []),
                     *(["STARTTLS"] if starttls else []),
                     *(["AUTH PLAIN LOGIN"] if auth else [])]


def test_addresses_are_deterministic_by_host_name() -> None:
    sc = Scenario.from_dict({
        "traffic": [{"domain": "a.test", "messages": 1}],
        "domains": {"a.test": {"mx": ["zz.a.test", "aa.a.test"]}},
        "hosts": {"zz.a.test": {"addresses": ["192.0.2.7", "192.0.2.8"]},
                  "aa.a.test": {"address": "198.51.100.1"}},
    })
    amap, per_host = lab_addresses(sc)
    assert per_host == {"aa.a.test": ("127.0.0.10",), "zz.a.test": ("127.0.0.11", "127.0.0.12")}
    assert amap == {"198.51.100.1": "127.0.0.10", "192.0.2.7": "127.0.0.11",
                    "192.0.2.8": "127.0.0.12"}


# -- DNS -----------------------------------------------------------------------


def _dns_scenario() -> Scenario:
    return Scenario.from_dict({
        "traffic": [{"domain": "mx.test", "messages": 1}],
        "domains": {
            "mx.test": {"mx": [{"host": "b.mx.test", "preference": 20},
                               {"host": "a.mx.test", "preference": 10}], "ttl": "60s"},
            "null.test": {"null_mx": True},
            "gone.test": {"nxdomain": True},
            "broken.test": {"servfail": True},
            "flaky.test": {"mx": ["a.mx.test"],
                           "dns_outages": [{"start": "0s", "end": "1h", "kind": "TIMEOUT"}]},
            "self.test": {},
        },
        "host_defaults": {},
    })


def _ask(zone: LabZone, name: str, rtype: str, now: float = 0.0) -> dnslib.DNSRecord | None:
    q = dnslib.DNSRecord.question(name, rtype)
    out = zone.answer(q.pack(), now)
    return None if out is None else dnslib.DNSRecord.parse(out)


def test_zone_answers_the_scenario_with_lab_addresses() -> None:
    sc = _dns_scenario()
    amap, _ = lab_addresses(sc)
    zone = LabZone(sc, amap)
    mx = _ask(zone, "mx.test", "MX")
    assert mx is not None
    assert sorted((r.rdata.preference, str(r.rdata.label)) for r in mx.rr) == [
        (10, "a.mx.test."), (20, "b.mx.test.")]
    assert {r.ttl for r in mx.rr} == {60}
    a = _ask(zone, "a.mx.test", "A")
    assert a is not None and [str(r.rdata) for r in a.rr] == ["127.0.0.10"]
    null = _ask(zone, "null.test", "MX")
    assert null is not None and [(r.rdata.preference, str(r.rdata.label)) for r in null.rr] == [
        (0, ".")]
    gone, broken = _ask(zone, "gone.test", "MX"), _ask(zone, "broken.test", "MX")
    assert gone is not None and gone.header.rcode == dnslib.RCODE.NXDOMAIN
    assert broken is not None and broken.header.rcode == dnslib.RCODE.SERVFAIL
    assert _ask(zone, "flaky.test", "MX", now=10.0) is None  # TIMEOUT: dropped
    implicit = _ask(zone, "self.test", "MX")
    assert implicit is not None and implicit.header.rcode == 0 and implicit.rr == []
    unknown = _ask(zone, "nowhere.test", "A")
    assert unknown is not None and unknown.header.rcode == dnslib.RCODE.NXDOMAIN


def test_live_resolver_against_the_lab_dns_server() -> None:
    sc = _dns_scenario()

    async def body(lab: Lab) -> tuple[Any, ...]:
        r = LiveResolver(nameservers=[lab.dns.host], port=lab.dns.port, timeout=1.0)
        return (await r.resolve_mx("mx.test", 0.0), await r.resolve_mx("gone.test", 0.0),
                await r.resolve_mx("null.test", 0.0), await r.resolve_mx("self.test", 0.0),
                lab.host_addresses)

    mx, gone, null, implicit, addrs = with_lab(sc, body)
    assert isinstance(mx, Resolved)
    assert [(m.preference, m.host, m.addresses) for m in mx.mx] == [
        (10, "a.mx.test", addrs["a.mx.test"]), (20, "b.mx.test", addrs["b.mx.test"])]
    assert isinstance(gone, ResolveFailed) and gone.kind is DnsFailure.NXDOMAIN
    assert isinstance(null, Resolved) and null.mx[0].host == "."
    assert isinstance(implicit, Resolved) and implicit.implicit
    assert implicit.mx[0].addresses == addrs["self.test"]


# -- SMTP: the happy path, timing, pipelining -------------------------------------


def test_a_transaction_is_accepted_and_counted() -> None:
    async def body(lab: Lab) -> tuple[list[str], str, dict[str, int]]:
        c = await greet(lab)
        replies = await c.send("MAIL FROM:<a@x.test>", "RCPT TO:<b@lab.test>", "DATA")
        c.writer.write(b"Subject: hi\r\n\r\n..dot-stuffed\r\n.\r\n")
        dot = await c.reply()
        await c.send("QUIT")
        c.close()
        await asyncio.sleep(0.05)
        return replies, dot, lab.counters()["mx.lab.test"]

    replies, dot, counters = with_lab(scenario(), body)
    assert replies == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK",
                       "354 Start mail input; end with <CRLF>.<CRLF>"]
    assert dot == "250 2.0.0 Message accepted for delivery"
    assert counters["accepted"] == 1 and counters["connections"] == 1
    assert counters["open"] == 0 and counters["peak_connections"] == 1


def test_latencies_per_phase_and_one_per_pipelined_batch() -> None:
    sc = scenario({"connect_latency": "150ms", "command_latency": "100ms",
                   "data_latency": "200ms"})

    async def body(lab: Lab) -> list[float]:
        t = time.perf_counter()
        c = await Client.open(lab)
        await c.reply()
        times = [time.perf_counter() - t]
        t = time.perf_counter()
        ehlo = await c.send("EHLO c.test")
        assert "PIPELINING" in ehlo[0]
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        c.writer.write(b"RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@lab.test>\r\nDATA\r\n")
        for _ in range(4):
            await c.reply()
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        c.writer.write(b"body\r\n.\r\n")
        await c.reply()
        times.append(time.perf_counter() - t)
        c.close()
        return times

    banner, ehlo, batch, dot = with_lab(sc, body)
    assert 0.15 <= banner < 0.28
    assert 0.10 <= ehlo < 0.19
    assert 0.10 <= batch < 0.19  # one latency for the whole batch, not four
    assert 0.20 <= dot < 0.32


def test_a_host_without_pipelining_answers_each_command_after_its_own_latency() -> None:
    sc = scenario({"command_latency": "60ms", "pipelining": False})

    async def body(lab: Lab) -> tuple[str, float]:
        c = await Client.open(lab)
        await c.reply()
        ehlo = (await c.send("EHLO c.test"))[0]
        t = time.perf_counter()
        c.writer.write(b"RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@lab.test>\r\n")
        for _ in range(3):
            await c.reply()
        c.close()
        return ehlo, time.perf_counter() - t

    ehlo, batch = with_lab(sc, body)
    assert "PIPELINING" not in ehlo
    assert 0.18 <= batch < 0.3


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
        await asyncio.sleep(0.05)
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
    sc = scenario({"outages": [{"start": "0s", "end": "400ms", "mode": "refuse"},
                               {"start": "400ms", "end": "800ms", "mode": "blackhole"},
                               {"start": "800ms", "end": "1h", "mode": "tempfail"}]})

    async def body(lab: Lab) -> list[str]:
        lab.origin = time.time()
        seen = []
        try:
            await Client.open(lab)
            seen.append("connected")
        except ConnectionRefusedError:
            seen.append("refused")
        await asyncio.sleep(0.5 - lab.clock())
        c = await Client.open(lab)
        try:
            await asyncio.wait_for(c.reader.read(100), 0.2)
            seen.append("banner")
        except TimeoutError:
            seen.append("silent")
        c.close()
        await asyncio.sleep(0.9 - lab.clock())
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


# -- lab: only loopback; compare; the command ---------------------------------------


def test_servers_refuse_non_loopback_addresses() -> None:
    from lab.servers import HostServer

    sc = scenario()
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8 only, not '192\.0\.2\.1'"):
        HostServer(sc.hosts["mx.lab.test"], ("192.0.2.1",), rng=None,  # type: ignore[arg-type]
                   clock=time.time)


def test_compare_names_a_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "summary.json").write_text(json.dumps({}))
    with pytest.raises(CompareError, match=r"sim: missing series\.npz"):
        compare_dirs(tmp_path / "sim", tmp_path / "lab")
    with pytest.raises(CompareError, match="lab: not a directory"):
        compare_dirs(tmp_path / "lab", tmp_path / "lab")


def test_egress_lab_serves_for_a_duration_and_reports_counters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from engine.cli import main

    root = Path(__file__).resolve().parent.parent
    assert main(["lab", str(root / "scenarios" / "lab_small.toml"), "--duration", "0.3s"]) == 0
    out = capsys.readouterr().out
    assert "mx1.flaky.test" in out and "127.0.0.1" in out and "lab servers" in out
    assert main(["lab", str(root / "scenarios" / "lab_small.toml"), "--duration=soon"]) == 1
    assert "--duration" in capsys.readouterr().err


# -- end to end: the live engine delivering into a lab ------------------------------

TINY = """
name = "tiny"
seed = 3
horizon = "30s"
sample_interval = "0.25s"

[[traffic]]
domain = "two.test"
messages = 30
size = "2KB"

[domains."two.test"]
mx = [{ host = "mx1.two.test", preference = 10 }, { host = "mx2.two.test", preference = 20 }]

[host_defaults]
connect_latency = "2ms"
command_latency = "2ms"
data_latency = "5ms"
tls_latency = "2ms"

[hosts."mx1.two.test"]
outages = [{ start = "0s", end = "1h", mode = "refuse" }]

[hosts."mx2.two.test"]

[egress_path]
connection_limit = 2

[queue]
retry_interval = "1s"
"""


@pytest.mark.parametrize(("mx1", "seen_by_mx1"), [
    ('outages = [{ start = "0s", end = "1h", mode = "refuse" }]', "connections"),
    ("refuse_connections = 1.0", "refused"),
    ('outages = [{ start = "0s", end = "1h", mode = "blackhole" }]', "blackholed"),
])
def test_live_engine_fails_over_when_the_first_mx_fails(
    tmp_path: Path, mx1: str, seen_by_mx1: str
) -> None:
    from lab.run import run_in_lab

    path = tmp_path / "tiny.toml"
    text = TINY.replace('outages = [{ start = "0s", end = "1h", mode = "refuse" }]', mx1)
    path.write_text(text.replace("connection_limit = 2",
                                 'connection_limit = 2\nbanner_timeout = "300ms"'))
    sc = Scenario.from_toml(path)

    async def body(lab: Lab) -> Any:
        return await run_in_lab(sc, lab=lab), lab.host_addresses

    result, addrs = with_lab(sc, body)
    s = result.summary
    assert (s["delivered"], s["still_queued"], s["bounced"]) == (30, 0, 0)
    hosts = s["lab"]["hosts"]
    if seen_by_mx1 == "connections":
        assert hosts["mx1.two.test"]["connections"] == 0  # refused by the kernel
    else:  # accepted, then reset at once or never answered
        assert hosts["mx1.two.test"][seen_by_mx1] == hosts["mx1.two.test"]["connections"] > 0
    assert hosts["mx1.two.test"]["accepted"] == 0
    assert hosts["mx2.two.test"]["accepted"] == 30
    assert hosts["mx2.two.test"]["tls_handshakes"] == hosts["mx2.two.test"]["connections"]
    deliveries = [r for r in result.records if r["type"] == "Delivery"]
    assert {r["peer_address"]["addr"] for r in deliveries} == {addrs["mx2.two.test"][0]}
    assert {r["peer_address"]["name"] for r in deliveries} == {"mx2.two.test"}


def test_egress_lab_run_writes_what_simulate_writes_and_compare_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    sim_dir, lab_dir = tmp_path / "sim", tmp_path / "lab"
    assert main(["simulate", str(path), "--out", str(sim_dir), "--quiet", "--no-plot"]) == 0
    assert main(["lab", str(path), "--run", "--out", str(lab_dir), "--no-plot"]) == 0
    names = {"records.jsonl", "series.npz", "summary.json"}
    assert {p.name for p in sim_dir.iterdir()} == names
    assert {p.name for p in lab_dir.iterdir()} == names
    summary = json.loads((lab_dir / "summary.json").read_text())
    assert summary["delivered"] == 30 and summary["realisation"] == "lab"
    capsys.readouterr()
    assert main(["compare", str(sim_dir), str(lab_dir), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["delivered"]["sim"] == rows["delivered"]["lab"] == 30.0
    assert rows["delivered"]["rel_diff"] == 0.0
    assert (lab_dir / "compare.png").stat().st_size > 10_000


def test_a_lab_in_a_child_process_serves_the_same_run(tmp_path: Path) -> None:
    from lab.run import run_in_lab

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    sc = Scenario.from_toml(path)
    result = asyncio.run(run_in_lab(sc, separate_process=True))
    s = result.summary
    assert (s["delivered"], s["still_queued"]) == (30, 0)
    hosts = s["lab"]["hosts"]
    assert hosts["mx1.two.test"]["connections"] == 0
    assert hosts["mx2.two.test"]["accepted"] == 30
    assert s["lab"]["dns_queries"] >= 3  # MX, then A and AAAA of each MX host
