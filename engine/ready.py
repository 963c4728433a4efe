"""Ready queues (one per egress path ``source->site@smtp_client``) and their connections.

A `ReadyQueue` holds the messages due now for one path, in FIFO order, at most
``max_ready`` of them, plus everything the path needs to decide how many
connections to run: its cached `EgressPathConfig` (asked of the policy once and
refreshed as its refresh_interval/refresh_strategy say, `config_due`), the
GCRA states of its throttles, the consecutive-failure counter and the live
connections (`ConnCtx`) in opening order.  A message taken by a connection is
*held* by its `ConnCtx` (KumoMTA's dispatcher holds it while connecting).

The number of connections a path wants is KumoMTA's ramp
``min(q, ceil(L * (1 - exp(-0.023 * q))))`` with q the ready-queue depth: the
messages *waiting*, not those a connection holds.  That is what KumoMTA does
(crates/kumod/src/ready_queue.rs: ``ideal_connection_count(self.ready_count(),
connection_limit)`` where ``ready_count()`` is ``self.ready.len()``, and a
dispatcher pops its message from ``ready`` before it connects); its maintainer
computes the target once and opens ``ideal - current`` connections in one pass,
so `engine.dispatch.pump` takes the target from the depth before the new
connections take their messages.  For L = 32: 1->1, 10->7, 32->17, 64->25,
128->31, 256->32.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final

from mypy_extensions import mypyc_attr

from engine.message import Message

CONFIG_REFRESH: Final = 60.0
"""KumoMTA's default refresh_interval (crates/kumo-api-types/src/egress_path.rs)."""


def config_due(cfg: Any, cfg_at: float) -> float:
    """When a path config asked at `cfg_at` is to be asked again: after its
    ``refresh_interval`` with ``refresh_strategy = "Ttl"``; never by time with
    ``"Epoch"``, which KumoMTA re-asks only when the configuration epoch changes
    (egress: a `PolicyReloaded`), crates/kumod/src/ready_queue.rs
    ``perform_config_refresh_if_due``.  A config restored from a snapshot
    (``cfg_at`` -inf) is due at once either way."""
    if cfg_at == -math.inf:
        return cfg_at
    if getattr(cfg, "refresh_strategy", "Ttl") == "Epoch":
        return math.inf
    return cfg_at + getattr(cfg, "refresh_interval", CONFIG_REFRESH)  # type: ignore[no-any-return]

SMTP_CLIENT: Final = "@smtp_client"


def ready_queue_name(source: str, site: str) -> str:
    """A path's name as KumoMTA names its ready queue, ``<source>-><site>@smtp_client``
    (crates/kumod/src/ready_queue.rs, ``compute_queue_name``); records carry it
    as ``site``."""
    return f"{source}->{site}{SMTP_CLIENT}"


def canonical_path(name: str) -> str:
    """A ready queue name given as input (admin API, ``egress ctl``, an older
    journal): the older spelling without ``@smtp_client`` is accepted."""
    return name if name.endswith(SMTP_CLIENT) or "->" not in name else name + SMTP_CLIENT


def ideal_connections(limit: int, depth: int) -> int:
    """KumoMTA's target connection count for `depth` messages and `limit`."""
    if depth <= 0 or limit <= 0:
        return 0
    return min(depth, math.ceil(limit * (1.0 - math.exp(-0.023 * depth))))


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class ConnCtx:
    """One connection (one `Session`) of a ready queue, from decision to close."""

    __slots__ = ("address", "carry", "closing", "conn", "counted", "deliveries", "established",
                 "excess", "failed", "host", "idle", "last_reply", "last_txn", "local", "msg",
                 "plan", "plan_index", "progress", "rate_passed", "results", "rq", "session",
                 "sid", "started", "tls", "tls_disabled", "txn_rcpts", "waiting_tlsa")

    def __init__(self, conn: int, rq: ReadyQueue, plan: tuple[tuple[str, str], ...]) -> None:
        self.conn = conn
        self.rq = rq
        self.plan = plan
        self.plan_index = 0
        self.host = ""
        self.address = ""
        self.session: Any = None
        self.msg: Message | None = None  # held: taken from the ready queue
        self.started = False  # the held message's transaction has begun
        self.deliveries = 0  # transactions completed on this connection
        self.idle = False  # waiting under an ("idle", conn) timer
        self.closing = False  # QUIT sent or host failed: takes no new message
        # The additional_connection_limits names it counts against, while it
        # counts against connection_limit: from Connect until the session is
        # closed, QUIT exchange included (KumoMTA holds the connection's lease
        # until the dispatcher ends), so open sockets never pass the limit.
        self.counted: tuple[str, ...] | None = None
        self.tls: tuple[str, str, str] | None = None  # protocol, cipher, peer subject
        self.tls_disabled = False  # reconnect in clear after a failed handshake
        self.last_reply: Any = None
        self.waiting_tlsa = False
        # why the plan's earlier addresses failed, for the record of the held
        # message when every address has failed
        self.failed: tuple[str, ...] = ()
        self.local = ""  # the socket's local address:port (`Connected.local`)
        self.sid: str | None = None  # the session's UUID text, made at first use
        self.progress = 0.0  # when an event last came for it (engine.watchdog)
        # message throttles the held message has passed (each counted as it
        # passed), so a wait resumes at the one that refused it
        self.rate_passed = 0
        self.established = False  # the session got past banner, EHLO, TLS and AUTH
        # recipients of the held message past max_recipients_per_batch, sent next
        # on this connection (KumoMTA's retry_immediately)
        self.excess: tuple[str, ...] = ()
        # a message whose transaction broke the connection, for the next host
        # (try_next_host_on_transport_error)
        self.carry: Message | None = None
        # the transaction's recipient outcomes (kind, RecipientResult), logged
        # together when it ends: one record per distinct response
        self.results: list[Any] = []
        # the held message's recipients when its transaction started, and the
        # (message id, recipients) of the connection's previous transaction:
        # KumoMTA's too-many-recipients rule reads both
        self.txn_rcpts: tuple[str, ...] = ()
        self.last_txn: tuple[str, tuple[str, ...]] = ("", ())


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class ReadyQueue:
    """The ready queue of one egress path."""

    __slots__ = ("backlog", "cfg", "cfg_at", "conn_throttle", "conns", "domain", "failures", "idle",
                 "maint_at", "messages", "msg_throttle", "msg_throttles", "mta_sts", "mx",
                 "open", "path", "peak", "pool", "ready_timer", "site", "source", "source_name",
                 "suspended")

    def __init__(self, path: str, source_name: str, source: Any, site: str, domain: str,
                 mx: tuple[Any, ...], cfg: Any, now: float) -> None:
        self.path = path
        self.source_name = source_name
        self.source = source
        self.site = site
        self.domain = domain
        self.mx = mx
        self.cfg = cfg
        self.cfg_at = now
        self.messages: deque[Message] = deque()
        self.peak = 0  # the most messages it ever held waiting (for planners' summaries)
        self.conns: dict[int, ConnCtx] = {}
        self.open = 0  # connections counted against connection_limit (until closed)
        self.idle: dict[int, ConnCtx] = {}  # sessions waiting under their idle timer
        self.failures = 0  # consecutive exhausted plans
        self.conn_throttle: Any = None
        self.msg_throttle: Any = None
        # every message-rate GCRA a transaction must pass: the path's own and the
        # shared additional ones, rebuilt whenever the config changes
        self.msg_throttles: tuple[Any, ...] = ()
        self.suspended = False  # admin Suspend
        self.pool = ""  # the egress pool of the queue that made it (the provider gauges)
        self.ready_timer: float | None = None  # ("ready", path) armed at
        self.maint_at: float | None = None  # ("maint", path) armed at
        # False for a site made without the domain's MX (smart hosts, a domain
        # literal): KumoMTA applies MTA-STS only to an MX answer
        self.mta_sts = True
        # re-delayed messages sampled lazily (`engine.backlog`; simulation only)
        self.backlog: Any = None

    def open_count(self) -> int:
        """Connections that count against connection_limit (quitting ones too)."""
        return self.open

    def held_count(self) -> int:
        """Messages held by this path's connections."""
        return sum(1 for c in self.conns.values() if c.msg is not None)
