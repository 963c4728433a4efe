"""`egress lab SCENARIO --run`: the live engine delivering a scenario's traffic into the lab.

The same scenario the simulator runs is run for real: the lab's servers on
loopback (`lab.world.Lab`), an `engine.engine.Engine` with the scenario's
policy, `engine.live.driver.LiveDriver` doing the I/O and
`engine.live.dns.LiveResolver` asking the lab's DNS server.  Only two things
of the policy are changed, and only for the lab: ``prohibited_hosts`` is
emptied (loopback is the whole point) and ``smtp_port`` is the lab's port.

The traffic is `sim.traffic.arrivals` (the same messages the simulator
submits, same ids, same sizes): each is submitted when its simulated time
comes on the real clock, with a generated body of its size.  What the run
remembers goes through the simulator's own `sim.observer.Observer` (records,
samples every ``sample_interval`` seconds, connection counts kept by
`sim.connections.PathConnections`, the simulator's own count) into a
`sim.result.SimResult`, so ``egress lab --run --out DIR`` writes exactly what
``egress simulate --out DIR`` writes
and `lab.compare` can set them side by side.  Times in the series and the
summary are seconds since the traffic started; the records' timestamps are
real Unix times (the live engine's).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from engine.cidr import CidrSet
from engine.effects import Close, Connect, Log
from engine.events import Closed, Connected, ConnectFailed, MtaStsResolved
from engine.policy import Policy
from lab.timing import ConnectTimes
from lab.world import Lab
from sim.connections import PathConnections

Progress = Callable[[float, int, int], None]  # (seconds, finished, submitted)


def lab_policy(base: Policy, port: int) -> Policy:
    """`base` with loopback allowed and the lab's port, everything else unchanged."""
    policy = Policy()
    policy.source = base.source
    allow_all = CidrSet([])

    @policy.on("get_egress_path_config")
    def egress_path_config(domain: str, source_name: str, site_name: str) -> Any:
        cfg = base.egress_path_config(domain, source_name, site_name)
        return cfg.replace(prohibited_hosts=allow_all, smtp_port=port)

    @policy.on("get_queue_config")
    def queue_config(domain: str, tenant: str, campaign: str, routing_domain: str) -> Any:
        return base.queue_config(domain, tenant, campaign, routing_domain)

    @policy.on("get_egress_source")
    def egress_source(name: str) -> Any:
        return base.egress_source(name)

    @policy.on("get_egress_pool")
    def egress_pool(name: str) -> Any:
        return base.egress_pool(name)

    return policy


def make_body(message_id: str, sender: str, size: int) -> bytes:
    """A plain RFC 5322 message of about `size` bytes (never less than its headers)."""
    head = (
        f"From: <{sender}>\r\nSubject: egress lab {message_id}\r\n"
        f"Message-ID: <{message_id}@egress.lab>\r\n\r\n"
    ).encode()
    left = max(0, size - len(head))
    line = b"x" * 76 + b"\r\n"
    full, rest = divmod(left, len(line))
    tail = b"x" * max(0, rest - 2) + b"\r\n" if rest >= 2 else b""
    return head + line * full + tail


class _CountingEngine:
    """The engine, seen through the effects that open and close connections.

    The live driver keeps no count of a path's open connections, so this
    proxy hands the effects and events that open and end them to
    `sim.connections.PathConnections`, the simulator's own count.  It also
    times each connection from the ``Connect`` effect to the ``Connected``
    event (`connects`: the client's connect overhead, `lab.timing.ConnectTimes`).
    """

    def __init__(self, engine: Any, connections: PathConnections) -> None:
        self.engine = engine
        self.connections = connections
        self.connects = ConnectTimes()

    def __getattr__(self, name: str) -> Any:
        # Everything but `handle` is the engine's own (the driver may read it).
        return getattr(self.engine, name)

    def handle(self, event: Any) -> list[Any]:
        kind = type(event)
        if kind is Connected:
            self.connects.connected(event.conn, time.perf_counter())
        elif kind is ConnectFailed or kind is Closed:
            self._forget(event.conn)
        effects = self.engine.handle(event)
        for eff in effects:
            k = type(eff)
            if k is Connect:
                self.connects.started(eff.conn, time.perf_counter())
                self.connections.opened(eff.conn, eff.path)
            elif k is Close:
                self._forget(eff.conn)
        return effects

    def _forget(self, conn: int) -> None:
        self.connects.forget(conn)
        self.connections.ended(conn)


class _ScenarioMtaSts:
    """MTA-STS policies as the scenario gives them (the lab serves no HTTPS)."""

    def __init__(self, scenario: Any) -> None:
        self.domains = scenario.domains

    async def fetch(self, domain: str, at: float) -> MtaStsResolved:
        d = self.domains.get(domain.lower().rstrip("."))
        return MtaStsResolved(at=at, domain=domain, policy=d.mta_sts if d else None)


async def run_in_lab(
    scenario: Any,
    *,
    lab: Lab | None = None,
    horizon: float | None = None,
    progress: Progress | None = None,
    keep_records: bool = True,
    separate_process: bool = False,
    compensate: bool = True,
) -> Any:
    """Run `scenario`'s traffic through the live engine into a lab; a `SimResult`.

    With `lab` None a lab is started for the run and stopped after it.  The
    run ends when every message is finished or after `horizon` seconds of real
    time (default: the scenario's horizon).  With `separate_process` the lab
    it starts runs in a child process (`lab.process.LabProcess`), so its
    servers' latencies do not wait behind the engine's work.  `compensate`
    False makes the lab it starts sleep plainly (`lab.timing`), to measure
    what pacing changes.
    """
    own = lab is None
    if lab is None:
        if separate_process:
            from lab.process import LabProcess

            lab = LabProcess(scenario, compensate=compensate)  # type: ignore[assignment]
        else:
            lab = Lab(scenario, compensate=compensate)
        await lab.start()
    try:
        return await _run(scenario, lab, horizon or float(scenario.horizon), progress,
                          keep_records)
    finally:
        if own:
            await lab.stop()
            lab.close()


async def _run(
    scenario: Any, lab: Lab, horizon: float, progress: Progress | None, keep_records: bool
) -> Any:
    from engine.engine import Engine
    from engine.live.dns import LiveResolver
    from engine.live.driver import LiveDriver
    from sim.observer import Observer
    from sim.result import SimResult, outage_windows
    from sim.traffic import arrivals, traffic_rng

    engine = Engine(lab_policy(scenario.policy(), lab.port), seed=scenario.seed, epoch=0.0,
                    shaping=getattr(scenario, "shaping", None))  # the scenario's shaping files
    observer = Observer(engine, keep_records=keep_records)
    connections = PathConnections(observer.note_connections)
    counting = _CountingEngine(engine, connections)
    messages: dict[str, tuple[str, int]] = {}
    finished = asyncio.Event()
    submitted = 0
    all_in = False
    t0 = time.time()  # reset when the traffic starts

    def now() -> float:
        return time.time() - t0

    def on_discard(message_id: str) -> None:
        messages.pop(message_id, None)
        observer.finish(message_id)
        if all_in and observer.finished >= submitted and not finished.is_set():
            observer.drain_time = now()
            finished.set()

    class _LabDriver(LiveDriver):
        """Records go to the observer with `Log.where` beside them (the ready
        queue a full-queue Delayed record's message was turned away from), as
        the simulator's driver hands them."""

        def _log(self, eff: Log) -> None:
            observer.log(eff.record, now(), eff.where)

    driver = _LabDriver(
        counting,
        resolver=LiveResolver(nameservers=[lab.dns.host], port=lab.dns.port, timeout=2.0),
        bodies=lambda mid: make_body(mid, *messages[mid]),
        mta_sts=_ScenarioMtaSts(scenario),
        tls_cafile=str(lab.cafile),
        on_discard=on_discard,
    )
    interval = Observer.sample_interval(scenario, horizon)

    async def sample() -> None:
        while True:
            observer.sample(now(), connections.counts())
            if progress is not None:
                progress(now(), observer.finished, submitted)
            await asyncio.sleep(interval - (now() % interval))

    t0 = time.time()
    lab.origin = t0  # outage windows are on the traffic's clock
    sampler = asyncio.get_running_loop().create_task(sample())
    try:
        for msg in arrivals(scenario, traffic_rng(scenario)):
            wait = msg.at - now()
            if wait > 0:
                if wait > horizon - now():
                    break
                await asyncio.sleep(wait)
            messages[msg.id] = (msg.sender, msg.size)
            submitted += 1
            driver.feed(dataclasses.replace(msg, at=time.time()))
        all_in = True
        if observer.finished >= submitted:
            observer.drain_time = now()
            finished.set()
        remaining = horizon - now()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), remaining)
        elapsed = now()
    finally:
        sampler.cancel()
        await driver.abort_all()
    observer.sample(elapsed, connections.counts(), final=True)
    return SimResult(
        summary=_summary(scenario, observer, engine, submitted, elapsed, horizon, lab,
                         counting.connects),
        records=observer.records,
        series=observer.series(),
        scenario_name=scenario.name,
        seed=scenario.seed,
        counters=dict(engine.counters),
        wall_seconds=elapsed,
        windows=outage_windows(scenario),
    )


def _summary(scenario: Any, obs: Any, engine: Any, submitted: int, elapsed: float,
             horizon: float, lab: Lab, connects: ConnectTimes) -> dict[str, Any]:
    """The summary `sim.result.run` writes, with the same keys, plus the lab's side
    (``lab.timing``: the servers' and the client's, `lab.world.Lab.timing`, and
    ``client_connect``, the client's own cost per connection)."""
    from sim.result import scenario_hash

    counts = obs.counts
    hosts = lab.counters()  # first: a lab in a child process refreshes its DNS count here
    return {
        "scenario": scenario.name,
        "scenario_hash": scenario_hash(scenario),
        "seed": scenario.seed,
        "submitted": submitted,
        "recipients": counts["Reception"],
        "delivered": counts["Delivery"],
        "bounced": counts["Bounce"] + counts["AdminBounce"],
        "expired": counts["Expiration"],
        "still_queued": submitted - obs.finished,
        "transient_failures": counts["TransientFailure"],
        "delayed": counts["Delayed"],
        "drain_time": obs.drain_time,
        "simulated_time": elapsed,
        "horizon": horizon,
        "time_to_deliver_p50": obs.percentile(50),
        "time_to_deliver_p95": obs.percentile(95),
        "time_to_deliver_p99": obs.percentile(99),
        "peak_ready_depth": dict(sorted(engine.ready_peaks().items())),
        "peak_connections": dict(sorted(obs.peak_connections.items())),
        "deferrals": dict(sorted(obs.reasons.items())),
        "records": dict(sorted(counts.items())),
        "realisation": "lab",
        "lab": {"smtp_port": lab.port, "dns_port": lab.dns.port,
                "dns_queries": lab.dns.queries, "hosts": hosts,
                "timing": {**lab.timing(), "client_connect": connects.summary()}},
    }

