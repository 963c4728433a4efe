"""`Service`: the live MTA, `egress deliver` as an object.

It owns and joins the pieces, each written and tested on its own: the
`Journal` (durable events and bodies), the `Engine` (every decision), the
`LiveDriver` (every I/O), the `Listener` (SMTP in), the `LogWriter`
(KumoMTA-shaped JSON lines) and the Prometheus endpoint.  What it adds is
only the joining, and the order things happen in:

* **Recovery before anything else.**  The journal's latest snapshot is
  restored (or a fresh engine made) and the events after it are replayed,
  effects discarded (their records were written by the previous process).
  Then one `Restarted` event, journaled like any other, tells the engine that
  the previous process's connections, lookups and timers are gone
  (`engine.restart`): in-flight messages are handed back without counting an
  attempt and retried at once; then the submissions left in the journal's
  inbox (accepted, their event never written) are handed to the engine.
  Delivery is at least once: a message whose 250 from the remote server was
  not yet journaled at a crash is sent again.
* **Committed before the engine sees it.**  A submission (SMTP or
  `submit()`) is committed to the journal's inbox with its body first
  (`Journal.accept`, group-committed); only then is it handed to the engine
  and the client told 250.  A failed commit (disk full, I/O error) is a 451
  and the engine never hears of the message, so it is never delivered; the
  journal keeps what the engine already handled and retries it, so the next
  submission finds the disk again without a restart.
* **Events journaled after the engine accepted them**, in its order,
  without waiting for the commit (a submission's event leaves the inbox in
  the same commit): losing the tail of them in a crash only means retrying
  what was in flight.  A snapshot is written every
  `snapshot_every` events, or every `SNAPSHOT_PER_QUEUED` x (messages queued)
  events when that is more: writing a snapshot costs time in proportion to
  the queue (about 8 s on the loop at 1 M queued), replaying in proportion
  to the events since the last one, so the interval grows with the queue and
  snapshots never take more than a small share of the loop.  And one with
  each reload: a restart then folds no event the old policy decided under
  the new one.
* **`Discard` drops the body** from the journal (queued behind the event
  that finished the message, so the two commit in order).
* **Graceful stop** (SIGTERM/SIGINT in `egress deliver`): stop accepting
  (transactions already committing finish), start no new connection or
  transaction, give those on the wire up to `grace` seconds, then abort the
  rest and close the journal cleanly (checkpointed).  What was cut off is
  retried by the next start.

Loopback delivery: KumoMTA's default ``prohibited_hosts`` refuses
127.0.0.0/8 and ::1, so a policy delivering to a local sink (tests, a lab)
must set ``prohibited_hosts = []``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engine.engine import Engine
from engine.errors import EgressError
from engine.event_tools import restamp
from engine.events import Event, MessageSubmitted, Restarted
from engine.live.driver import LiveDriver, machine_hostname
from engine.live.journal import Journal
from engine.live.listener import Listener
from engine.live.listener_limits import LimitSettings
from engine.live.memory import HandBacks, hand_back
from engine.live.nodeid import node_id
from engine.live.submission import Submission
from engine.live.submission import submit as api_submit

__all__ = ["Service", "StartError"]


class StartError(EgressError):
    """The service cannot start: a port in use, an address it cannot bind, a
    spool or log directory it cannot write.  The message names which."""

# Events between snapshots per message queued (see the module docstring): a
# snapshot costs about what handling this many events per queued message does.
SNAPSHOT_PER_QUEUED = 4

log = logging.getLogger("egress.service")

DEFAULT_SNAPSHOT_EVERY = 20_000
# Seconds between sweeps of idle state (engine.lifecycle.reap_idle): a path is
# dropped within this long after its last connection closed (idle_timeout after
# its last message).  KumoMTA waits 10 minutes; egress keeps every path in one
# process, so sooner.
DEFAULT_REAP_AFTER = 60.0
LOG_FLUSH_INTERVAL = 1.0


class Service:
    """The live service: journal, engine, driver, SMTP listener, logs, metrics.

    ``Service(policy, spool_dir, listen=("127.0.0.1", 2525), resolver=...)``;
    ``await service.start()`` recovers and starts everything, ``await
    service.stop()`` shuts down gracefully, ``await service.run()`` does both
    around `request_stop()` (what a signal handler calls).  `listen` None
    starts no listener (the Python API only); port 0 picks a free port, read
    back from `listen_port`.  Unless `mta_sts` (a fetcher) is given, MTA-STS
    policies are fetched through `resolver`, trusting `tls_cafile`, from port
    `mta_sts_port` (443; tests point it at a local HTTPS server).  `limits`
    bounds the listener (`engine.live.listener_limits`).  A journal holding
    less than it committed (a lost WAL) is refused unless `accept_loss`.
    Idle paths, queues and domains are dropped every `reap_after` seconds.
    """

    def __init__(
        self,
        policy: Any,
        spool_dir: str | Path,
        *,
        listen: tuple[str, int] | None = ("127.0.0.1", 2525),
        resolver: Any = None,
        tls_cafile: str | None = None,
        log_dir: str | Path | None = None,
        metrics_port: int | None = None,
        allowed_networks: Iterable[str] | None = None,
        ingest_auth: Mapping[str, str] | None = None,
        mta_sts: Any = None,
        mta_sts_port: int = 443,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        grace: float = 10.0,
        log_max_bytes: int | None = 64 * 1024 * 1024,
        log_max_age: float | None = 3600.0,
        limits: LimitSettings | None = None,
        accept_loss: bool = False,
        log_options: Mapping[str, Any] | None = None,
        http_listen: Sequence[tuple[str, int]] = (),
        http_trusted: Iterable[str] | None = None,
        http_token: Any = None,
        policy_path: str | Path | None = None,
        tls_context: Any = None,
        reap_after: float = DEFAULT_REAP_AFTER,
        redis: str | None = None,
        shared_limits: Any = None,
        reuse_port: bool = False,
        shaping_files: Sequence[str] | None = None,
    ) -> None:
        if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) \
                or snapshot_every < 1:
            raise ValueError(f"Service snapshot_every must be an integer >= 1, not "
                             f"{snapshot_every!r}")
        if isinstance(mta_sts_port, bool) or not isinstance(mta_sts_port, int) \
                or not 1 <= mta_sts_port <= 65535:
            raise ValueError(f"Service mta_sts_port must be a port number 1..65535, not "
                             f"{mta_sts_port!r}")
        if isinstance(reap_after, bool) or not isinstance(reap_after, int | float) \
                or not reap_after > 0:
            raise ValueError(f"Service reap_after must be a number of seconds > 0, not "
                             f"{reap_after!r}")
        if not isinstance(grace, int | float) or grace < 0:
            raise ValueError(f"Service grace must be a number of seconds >= 0, not {grace!r}")
        self.policy = policy
        self.spool_dir = Path(spool_dir)
        self.listen = listen
        self.resolver = resolver
        self.tls_cafile = tls_cafile
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.metrics_port = metrics_port
        self.allowed_networks = list(allowed_networks) if allowed_networks is not None else None
        self.ingest_auth = ingest_auth
        self.mta_sts = mta_sts
        self.mta_sts_port = mta_sts_port
        self.snapshot_every = snapshot_every
        self.grace = float(grace)
        self.log_max_bytes = log_max_bytes
        self.log_max_age = log_max_age
        self.limits = limits
        self.accept_loss = accept_loss
        self.log_options = dict(log_options or {})  # more LogWriter keywords (retention...)
        # the admin HTTP API (engine.live.http_api), the file reload() re-reads,
        # and the listener's STARTTLS context
        self.http_listen = list(http_listen)
        self.http_trusted = http_trusted
        self.http_token = http_token
        self.policy_path = policy_path
        # the --shaping files a reload re-reads (None: the names policy.shaping has)
        self.shaping_files = shaping_files
        self.tls_context = tls_context
        self.http: Any = None
        self.reap_after = float(reap_after)
        # limits shared through Redis (engine.shared_limits, engine.live.shared_redis)
        self.redis_url = redis
        self.shared_limits = shared_limits
        self.redis: Any = None
        self.reuse_port = reuse_port  # egress deliver --workers: one port, N processes
        self.journal: Journal | None = None
        self.engine: Engine | None = None
        self.driver: LiveDriver | None = None
        self.ingest: Listener | None = None
        self.metrics: Any = None
        self.logs: Any = None
        self.replayed = 0  # events replayed at start (after the snapshot)
        self.recovered = 0  # messages queued when recovery finished
        self._since_snapshot = 0
        self._snapshot_due = False  # a reload's: with the batch that journals it
        self._hand_backs = HandBacks(self._hand_back, self.reap_after)  # after a reap
        self._stop_requested = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._started = False
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------

    @property
    def listen_port(self) -> int | None:
        """The port the SMTP listener is bound to (None without a listener)."""
        return self.ingest.port if self.ingest is not None else None

    async def start(self) -> None:
        """Open the journal, recover, and start the driver, listener, logs and metrics."""
        if self._started:
            raise RuntimeError("Service.start() was already called")
        self._started = True
        try:
            self.journal = Journal.in_spool(self.spool_dir, accept_loss=self.accept_loss)
        except OSError as exc:
            raise StartError(f"spool {str(self.spool_dir)!r}: cannot write: {_why(exc)}") from None
        try:
            await self._start()
        except BaseException:
            self.journal.close()
            raise

    async def _start(self) -> None:
        assert self.journal is not None
        self.engine = self._recover(self.journal)
        if self.log_dir is not None:
            from engine.live.logfile import LogWriter

            loop = asyncio.get_running_loop()
            options = {"offload": lambda job: loop.run_in_executor(None, job),  # zstd
                       **self.log_options}
            try:
                self.logs = LogWriter(self.log_dir, max_bytes=self.log_max_bytes,
                                      max_age=self.log_max_age, **options)
            except (OSError, ValueError) as exc:
                if isinstance(exc, ValueError):
                    raise StartError(str(exc)) from None
                raise StartError(f"log directory {str(self.log_dir)!r}: cannot write: "
                                 f"{_why(exc)}") from None
        resolver = self.resolver
        if resolver is None:
            from engine.live.dns import LiveResolver

            resolver = self.resolver = LiveResolver()
        mta_sts = self.mta_sts
        if mta_sts is None:
            from engine.live.mta_sts import MtaStsFetcher

            # The same resolver as delivery (so `--resolver` covers the TXT and
            # the policy host too) and the same CA file as STARTTLS.
            mta_sts = self.mta_sts = MtaStsFetcher(resolver, port=self.mta_sts_port,
                                                   cafile=self.tls_cafile)
        self.driver = LiveDriver(
            self.engine, resolver=resolver, bodies=self._body, records=self._record,
            journal_batch=self._journal_events, mta_sts=mta_sts, tls_cafile=self.tls_cafile,
            on_discard=self._discard, on_reap=self._hand_backs,
        )
        if self.redis_url is not None:
            from engine.live.shared_redis import RedisLimits

            self.redis = RedisLimits(self.redis_url, self.driver.handle_io)
            self.driver.add_effects(self.redis.effects())
            why = await self.redis.check()
            if why is not None:
                log.warning("shared limits: Redis does not answer yet (%s)", why)
        self.driver.feed(Restarted(at=time.time()))
        for accepted in self.journal.inbox():  # accepted, never reached the events
            self.driver.feed(restamp(accepted, time.time()))
        if self.metrics_port is not None:
            from engine.live.metrics import start_metrics_server

            try:
                self.metrics = await start_metrics_server(self.metrics_port,
                                                          counters=self.engine)
            except OSError as exc:
                raise StartError(f"--metrics-port {self.metrics_port}: cannot listen there: "
                                 f"{_why(exc)}") from None
        if self.listen is not None:
            host, port = self.listen
            self.ingest = Listener(host, port, submit=self._accept,
                                   allowed_networks=self.allowed_networks,
                                   auth=self.ingest_auth, limits=self.limits,
                                   tls_context=self.tls_context)
            self.ingest.reuse_port = self.reuse_port
            try:
                await self.ingest.start()
            except OSError as exc:
                raise StartError(f"--listen {host}:{port}: cannot listen there: "
                                 f"{_why(exc)}") from None
        if self.http_listen:
            from engine.live.http_api import HttpApi

            self.http = HttpApi(self, trusted=self.http_trusted, token=self.http_token)
            try:
                await self.http.start(self.http_listen)
            except OSError as exc:
                raise StartError(f"--http-listen: cannot listen there: {_why(exc)}") from None
        self._flusher = asyncio.get_running_loop().create_task(self._flush_logs())
        log.info("egress: started with %d messages queued (%d events replayed)",
                 self.recovered, self.replayed)

    def _recover(self, journal: Journal) -> Engine:
        snap, events = journal.replay()
        eng = Engine.restore(snap, self.policy) if snap is not None else Engine(self.policy)
        eng.reap_after = self.reap_after  # idle state is dropped (engine.lifecycle.reap_idle)
        eng.hostname = machine_hostname()  # before the replay: the EHLO name it used
        try:
            eng.nodeid = node_id(self.spool_dir)  # every record's nodeid (engine.live.nodeid)
        except (OSError, ValueError) as exc:
            raise StartError(f"spool {str(self.spool_dir)!r}: node id: {exc}") from None
        if self.redis_url is not None:
            from engine.shared_limits import SharedLimitsConfig, configure

            cfg = self.shared_limits or SharedLimitsConfig(node=uuid.uuid4().hex[:12])
            if eng.shared is None:
                configure(eng, cfg)
            else:
                eng.shared.cfg = cfg
        n = 0
        for ev in events:
            eng.handle(ev)
            n += 1
        self.replayed = n
        self.recovered = eng.queued_count
        return eng

    def request_stop(self) -> None:
        """Ask `run()` to shut down gracefully (safe from a signal handler)."""
        self._stop_requested.set()

    async def run(self) -> None:
        """Start, serve until `request_stop()`, then stop gracefully."""
        if not self._started:
            await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let transactions on the wire finish (up to `grace`
        seconds), abort the rest, close logs, metrics and the journal."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        grace = self.grace if grace is None else grace
        if self.http is not None:
            await self.http.close()
        if self.ingest is not None:
            await self.ingest.stop(grace)
        if self.driver is not None:
            if not await self.driver.drain(grace):
                log.warning("egress: %d transactions still on the wire after %.1fs; aborting",
                            self.driver.in_flight(), grace)
            await self.driver.abort_all()
        self._hand_backs.cancel()
        if self.redis is not None:
            shared = getattr(self.engine, "shared", None)
            if shared is not None:
                self.redis.release_all(shared.leases.values())
            await self.redis.close()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self.metrics is not None:
            await self.metrics.close()
        if self.logs is not None:
            self.logs.close()
        if self.journal is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.journal.close)

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- submissions -----------------------------------------------------------

    async def submit(
        self, sender: str, recipients: Sequence[str], content: bytes, *,
        tenant: str | None = None, campaign: str | None = None,
    ) -> list[str]:
        """Accept a message from Python, as the SMTP listener would: one message
        per recipient domain; returns their ids once committed."""
        if not self._started or self._stopped:
            raise RuntimeError("Service.submit() needs a started, running service")
        return await api_submit(self._accept, sender=sender, recipients=recipients,
                                content=content, tenant=tenant, campaign=campaign)

    async def _accept(self, sub: Submission) -> list[str]:
        """Make one submission durable, then hand it to the engine; return its id.

        The inbox commit comes first, so a submission the engine sees is always
        on disk: if the commit fails (disk full, I/O error) the caller answers
        451 and the engine never hears of the message, so it is never
        delivered; the next submission tries the disk again.
        """
        assert self.driver is not None and self.journal is not None
        if self._stopped:
            raise RuntimeError("the service is stopping")
        mid = uuid.uuid4().hex
        ev = MessageSubmitted(at=time.time(), id=mid, sender=sub.sender,
                              recipients=sub.recipients, size=len(sub.content),
                              tenant=sub.tenant, campaign=sub.campaign,
                              peer_name=sub.helo, peer_addr=sub.peer,
                              session_id=sub.session_id)
        await self.journal.accept(ev, sub.content)
        if self.driver.feed(restamp(ev, time.time())) is None:
            # The engine refused it (a bug, logged by the driver): take it back.
            self.journal.withdraw(mid)
            raise RuntimeError(f"message {mid} was not accepted by the engine")
        return [mid]

    # -- what the admin HTTP API calls (engine.live.http_api.AdminTarget) --------

    async def admin_event(self, event: Event) -> None:
        """An admin action: to the engine and the journal; return once committed."""
        assert self.driver is not None
        committed = self.driver.feed(event)
        if committed is None:  # refused by the engine (logged by the driver)
            raise ValueError(f"the engine refused {type(event).__name__}")
        await asyncio.wrap_future(committed)

    def message_body(self, message_id: str) -> bytes:
        return self._body(message_id)

    async def reload(self) -> str:
        """Re-read the policy file: installed and every path config re-asked at once
        (`PolicyReloaded`), or ValueError (logged, one line) and the old one stays
        (`engine.live.reload.reload_service`)."""
        from engine.live.reload import reload_service

        return await reload_service(self)

    def snapshot_with_next_batch(self) -> None:
        """Write a snapshot with the next batch of journaled events (a reload's)."""
        self._snapshot_due = True

    # -- what the driver calls -------------------------------------------------

    def _journal_events(self, events: list[Event]) -> Future[int]:
        """The driver's batch (in the engine's order): one append, not awaited
        (submissions were made durable by `Journal.accept` before the engine
        saw them); a snapshot every so often."""
        journal = self.journal
        assert journal is not None
        committed = journal.record(events)
        self._since_snapshot += len(events)
        assert self.engine is not None
        if self._snapshot_due or (
                self._since_snapshot >= self.snapshot_every
                and self._since_snapshot >= SNAPSHOT_PER_QUEUED * self.engine.queued_count):
            self._snapshot_due = False
            self._since_snapshot = 0
            journal.write_snapshot(journal.last_seq, self.engine.snapshot())
        return committed

    def _body(self, message_id: str) -> bytes:
        assert self.journal is not None
        return self.journal.body(message_id)

    def _discard(self, message_id: str) -> None:
        assert self.journal is not None
        self.journal.drop_body(message_id)

    def _hand_back(self) -> None:
        journal = self.journal
        queued = self.engine.queued_count if self.engine is not None else 0
        hand_back(journal.release_memory if journal is not None else None, queued)

    def _record(self, record: dict[str, Any]) -> None:
        if self.logs is not None:
            self.logs.write(record)

    async def _flush_logs(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_INTERVAL)
            if self.logs is not None:
                self.logs.flush()
                self.logs.rotate_if_due()


def _why(exc: OSError) -> str:
    """An OSError's reason without the repetition asyncio adds to bind errors."""
    if exc.strerror:
        return exc.strerror.rsplit(": ", 1)[-1]
    return str(exc)
