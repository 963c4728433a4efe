"""Events: the things that happened, fed into `Engine.handle`.

Every event is a frozen, slotted, keyword-only dataclass carrying its time `at`
(seconds; Unix time in the live driver, simulated seconds in the simulator).
Fields hold only plain values (str, int, float, bytes, tuples, enums) so the
journal codec can encode every event and two replays compare equal.  Events are
validated on construction, so a malformed event cannot exist.

The journal is the ordered list of these events: the engine's whole state is a
fold over it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from engine.reply import Reply

# A timer is named by a small tuple, e.g. ("conn", 17) or ("promote", "").
# Setting a timer that is already armed re-arms it; the driver must deliver a
# `TimerFired` only for the latest arming of a name (lazy cancellation).
Timer = tuple[str, str | int]

_T = TypeVar("_T")


def trusted_factory(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor for the frozen, slotted dataclass `cls` that fills
    its slots directly: no ``__init__``, no ``__post_init__`` validation.

    For trusted producers only, whose values are valid by construction: the
    simulator's own events (about 1 us of validation each, several per
    simulated message), the engine's own effects on its hot path.  External
    input (the live driver's parsed replies, the journal, tests) keeps the
    checked constructor.  Arguments are every field in declaration order
    (the trailing ones with a default may be left out); what it makes is
    equal to, and indistinguishable from, what ``cls(...)`` makes with the
    same values.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": cls.__new__, "_cls": cls}
    body = []
    params = []
    every = fields(cls)  # type: ignore[arg-type]
    # the trailing fields with a plain default may be left out, as with cls(...)
    optional = len(every)
    while optional and every[optional - 1].default is not MISSING:
        optional -= 1
    for i, f in enumerate(every):
        name = f.name
        slot = next(k.__dict__[name] for k in cls.__mro__ if name in k.__dict__)
        namespace[f"_set_{name}"] = slot.__set__
        body.append(f"    _set_{name}(o, {name})\n")
        if i < optional:
            params.append(name)
        else:
            namespace[f"_default_{name}"] = f.default
            params.append(f"{name}=_default_{name}")
    source = f"def make({', '.join(params)}):\n    o = _new(_cls)\n{''.join(body)}    return o\n"
    exec(source, namespace)  # as dataclasses builds __init__: one plain function per class
    make: Callable[..., _T] = namespace["make"]
    make.__qualname__ = make.__name__ = f"trusted_{cls.__name__}"
    make.__doc__ = f"{cls.__name__}({', '.join(names)}) without validation (see trusted_factory)."
    return make


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events: `at` is when it happened, in seconds."""

    at: float

    def __post_init__(self) -> None:
        # a tuple, not ``int | float`` (which builds a union at each call), and
        # isinf/isnan, which compiled (setup.py) are C calls where isfinite is not
        at = self.at
        if not isinstance(at, (int, float)) or math.isinf(at) or math.isnan(at):
            raise ValueError(f"{type(self).__name__}.at must be a finite number, not {self.at!r}")


def _domain_of(address: str) -> str:
    at = address.rfind("@")
    if at <= 0 or at == len(address) - 1:
        raise ValueError(f"recipient {address!r} is not an address of the form local@domain")
    return address[at + 1 :].lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageSubmitted(Event):
    """A message was accepted for delivery (its body is in the driver's spool).

    All recipients share one domain: a submitter splits a multi-domain message
    into one message per domain, as KumoMTA does.
    """

    id: str
    sender: str
    recipients: tuple[str, ...]
    size: int = 0
    tenant: str = ""
    campaign: str = ""
    routing_domain: str = ""
    # The Reception record's peer_address {name: the client's EHLO name, addr:
    # its IP} and the inbound session's UUID, as KumoMTA's listener logs them
    # (crates/kumod/src/smtp_server.rs); "" when not received over SMTP.
    peer_name: str = ""
    peer_addr: str = ""
    session_id: str = ""

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if not self.id:
            raise ValueError("MessageSubmitted.id must not be empty")
        if not self.recipients:
            raise ValueError(f"message {self.id}: at least one recipient is required")
        first = _domain_of(self.recipients[0])
        for r in self.recipients[1:]:
            if _domain_of(r) != first:
                raise ValueError(
                    f"message {self.id}: recipients {self.recipients[0]!r} and {r!r} are in "
                    "different domains; submit one message per domain"
                )
        if self.size < 0:
            raise ValueError(f"message {self.id}: size must be >= 0, not {self.size}")

    @property
    def domain(self) -> str:
        """The destination domain (lowercased) of every recipient."""
        return _domain_of(self.recipients[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class MxRecord:
    """One MX host with its preference and resolved addresses (A then AAAA).
    `secure`: the chain to these addresses is DNSSEC-validated (the MX answer
    and the host's A/AAAA answers all carried AD), what DANE requires."""

    preference: int
    host: str
    addresses: tuple[str, ...] = ()
    secure: bool = False


class DnsFailure(enum.StrEnum):
    """Why a lookup failed (for the record's text); every kind is a retry."""

    NXDOMAIN = "NXDOMAIN"
    SERVFAIL = "SERVFAIL"
    TIMEOUT = "TIMEOUT"
    NO_ADDRESSES = "NO_ADDRESSES"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved(Event):
    """The MX set of `domain`, each host with its addresses.

    `implicit` is true when the domain has no MX and the driver used the domain
    itself (RFC 5321 5.1).  A null MX (RFC 7505) arrives as the single record
    ``MxRecord(preference=0, host=".")``; the core turns it into a bounce.
    """

    domain: str
    mx: tuple[MxRecord, ...]
    implicit: bool = False
    ttl: float = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveFailed(Event):
    domain: str
    kind: DnsFailure
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MtaStsPolicy:
    """An RFC 8461 policy: mode enforce | testing | none, MX patterns, max_age seconds."""

    mode: str
    mx: tuple[str, ...] = ()
    max_age: float = 86400.0

    def __post_init__(self) -> None:
        if self.mode not in ("enforce", "testing", "none"):
            raise ValueError(f"MTA-STS mode must be enforce, testing or none, not {self.mode!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MtaStsResolved(Event):
    """The MTA-STS policy of `domain`, or None when it publishes none."""

    domain: str
    policy: MtaStsPolicy | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsaResolved(Event):
    """TLSA records of ``_port._tcp.host``; `secure` is the DNSSEC AD flag.
    `failure` says why the lookup failed (SERVFAIL, timeout, bogus: the status
    is unknown and DANE defers the host); "" when it was answered (NXDOMAIN
    and NODATA are answers with no records)."""

    host: str
    port: int
    records: tuple[TlsaRecord, ...]
    secure: bool
    failure: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnEvent(Event):
    """Base of events about one connection, named by the engine's `conn` id."""

    conn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected(ConnEvent):
    """The TCP connection is up; `local` is its local ``address:port`` (the
    records' ``source_address``, KumoMTA's MaybeProxiedSourceAddress), "" when
    the driver has no socket (the simulator)."""

    local: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectFailed(ConnEvent):
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsEstablished(ConnEvent):
    protocol: str = ""
    cipher: str = ""
    peer_subject: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFailed(ConnEvent):
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Response(ConnEvent):
    """One complete SMTP reply read on `conn` (a pipelined batch gives one each).

    Its ``__init__`` is written out (``init=False``): mypyc makes a written
    ``__init__`` native and a generated one not, and the simulator makes
    several per message."""

    reply: Reply

    def __init__(self, *, at: float, conn: int, reply: Reply) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "conn", conn)
        object.__setattr__(self, "reply", reply)
        self.__post_init__()


@dataclass(frozen=True, slots=True, kw_only=True)
class Malformed(ConnEvent):
    """The peer sent bytes that are not an SMTP reply (the parser's message in `detail`)."""

    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed(ConnEvent):
    """The peer closed or reset the connection.  A driver never reports `Closed`
    for a connection the engine itself closed (`Close` effect): after `Close`
    the connection id is dead to both sides."""

    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class TimerFired(Event):
    timer: Timer

    def __init__(self, *, at: float, timer: Timer) -> None:
        # written out, as Response's
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "timer", timer)
        self.__post_init__()


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspend(Event):
    """Admin: stop sending on the ready queue `path` (``"source->site"``) until Resume."""

    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume(Event):
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounce(Event):
    """Admin bounce: every queued message for `domain` (or of scheduled `queue`,
    or everything when both are empty) is bounced with an AdminBounce record."""

    domain: str = ""
    queue: str = ""
    reason: str = "administratively bounced"


@dataclass(frozen=True, slots=True, kw_only=True)
class Restarted(Event):
    """The driver restarted (after a crash or a clean stop): every connection and
    timer of the previous process is gone.  Sessions are dropped without counting
    an attempt, pending lookups are asked again and armed timers re-emitted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Drain(Event):
    """The driver is shutting down (SIGTERM): open no connection and start no
    transaction from now on; transactions on the wire finish."""


def _admin_checks(ev: Event, id_: str, expires: float) -> None:
    if not id_:
        raise ValueError(f"{type(ev).__name__}.id must not be empty")
    if isinstance(expires, bool) or not isinstance(expires, int | float) \
            or not math.isfinite(expires):
        raise ValueError(f"{type(ev).__name__}.expires must be a finite time, not {expires!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSuspend(Event):
    """Admin (KumoMTA's /api/admin/suspend/v1): hold the messages of the scheduled
    queues matching every non-empty criterion (nothing given: all) until
    `expires` (an absolute time, so a restart ends it at the same moment) or an
    `AdminCancel` naming `id`."""

    id: str
    reason: str
    expires: float
    domain: str = ""
    tenant: str = ""
    campaign: str = ""
    queue_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _admin_checks(self, self.id, self.expires)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSuspendReadyQ(Event):
    """Admin (/api/admin/suspend-ready-q/v1): suspend the ready queue `name`
    (``"source->site"``) until `expires` or an `AdminCancel` naming `id`."""

    id: str
    name: str
    reason: str
    expires: float

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _admin_checks(self, self.id, self.expires)
        if not self.name:
            raise ValueError("AdminSuspendReadyQ.name must not be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminBounceRule(Event):
    """Admin (/api/admin/bounce/v1): bounce every queued message matching every
    non-empty criterion now, and each newly arriving one until `expires` or an
    `AdminCancel` naming `id`."""

    id: str
    reason: str
    expires: float
    domain: str = ""
    tenant: str = ""
    campaign: str = ""
    routing_domain: str = ""
    queue_names: tuple[str, ...] = ()
    suppress_logging: bool = False

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _admin_checks(self, self.id, self.expires)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminCancel(Event):
    """Admin: end the suspension or bounce `id` now (the DELETE of its endpoint)."""

    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyReloaded(Event):
    """The driver installed a new policy (SIGHUP, /api/admin/reload/v1): every
    path config is asked again at once (KumoMTA's config epoch)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitAnswered(Event):
    """The shared store's answer to one `AcquireLease` or `CheckThrottle` (its
    `request`).  ``wait <= 0.0``: granted (the lease is held, or the event was
    counted); ``wait > 0``: refused, seconds until it may be granted.  A non-empty
    `error` says the store could not answer (then `wait` means nothing)."""

    request: int
    wait: float = 0.0
    error: str = ""

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if isinstance(self.request, bool) or not isinstance(self.request, int):
            raise TypeError(f"LimitAnswered.request must be an int, not {self.request!r}")
        if not isinstance(self.wait, int | float) or not math.isfinite(self.wait):
            raise ValueError(f"LimitAnswered.wait must be finite seconds, not {self.wait!r}")


ALL_EVENTS: tuple[type[Event], ...] = (
    MessageSubmitted,
    Resolved,
    ResolveFailed,
    MtaStsResolved,
    TlsaResolved,
    Connected,
    ConnectFailed,
    TlsEstablished,
    TlsFailed,
    Response,
    Malformed,
    Closed,
    TimerFired,
    Suspend,
    Resume,
    Bounce,
    Restarted,
    Drain,
    AdminSuspend,
    AdminSuspendReadyQ,
    AdminBounceRule,
    AdminCancel,
    PolicyReloaded,
    LimitAnswered,
)
