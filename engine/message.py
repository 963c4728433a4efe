"""The queued message and the scheduled queue it belongs to.

A `Message` is the engine's only per-message object, so it is a `__slots__`
class holding references to shared values (the interned queue, the ready
queue it was promoted to) rather than copies: a million queued messages must
fit in a few hundred MB.  For the same reason `recipients` is a plain ``str``
for the common one-recipient message (a tuple only for several; `rcpt_tuple`
gives the tuple form), and the scheduled list holds the message itself, keyed
by the due time in its own slot (`engine.scheduled`).  Where a message
is (scheduled, parked on DNS, ready, held by a connection, finished) is implied
by which structure holds it; `where` names it for the invariants and the admin
commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from engine.protocol import route_key
from engine.throttle import ThrottleState

if TYPE_CHECKING:
    pass

# Final: constants to the compiled build (setup.py), not a dict lookup per use
SCHEDULED: Final = 1
PARKED: Final = 2  # waiting for its domain's MX answer
READY: Final = 3
HELD: Final = 4  # taken by a connection
DONE: Final = 5
OVERFLOW: Final = 6  # re-delayed by a full ready queue, in its lazy backlog (counts as scheduled)


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class QueueInfo:
    """One scheduled queue ``campaign:tenant@domain``: its parts and cached config."""

    __slots__ = ("campaign", "config", "count", "domain", "name", "pool", "route",
                 "routing_domain", "tenant", "throttle", "throttle_next")

    def __init__(
        self, name: str, domain: str, tenant: str, campaign: str, routing_domain: str,
        config: Any, pool: str,
    ) -> None:
        self.name = name
        self.domain = domain
        self.tenant = tenant
        self.campaign = campaign
        self.routing_domain = routing_domain
        # the key of the MX answer the queue delivers by (see `route_key`)
        self.route = route_key(config, routing_domain or domain)
        self.config = config
        self.pool = pool
        self.count = 0  # messages of this queue not yet finished
        # the queue config's max_message_rate (checked at promotion), and the
        # latest due time handed to a message it held back, so a throttled
        # burst is spread one interval apart instead of waking all at once
        rate = getattr(config, "max_message_rate", None)
        self.throttle: ThrottleState | None = None if rate is None else ThrottleState(rate)
        self.throttle_next = float("-inf")


def queue_name(domain: str, tenant: str, campaign: str) -> str:
    """KumoMTA's scheduled queue name, empty parts left out."""
    name = f"{tenant}@{domain}" if tenant else domain
    return f"{campaign}:{name}" if campaign else name


@mypyc_attr(serializable=True)  # engine.snapshot pickles it: mypyc restores it without __init__
class Message:
    """A message the engine has accepted and not yet finished.

    `where` is stored in one slot with the due time: while the message is
    scheduled the slot holds its due time (a float), otherwise one of the int
    codes above, so a scheduled message costs no second slot, and the
    scheduled list keys on it.  Ordering (`<`: by creation time, then id)
    is what a snapshot of an earlier release needs to restore its scheduled
    list of ``(due, message)`` pairs (`engine.scheduled.upgrade`).
    """

    __slots__ = ("_w", "attempts", "created", "id", "queue", "recipients", "sender", "size")

    def __init__(
        self, id: str, sender: str, recipients: str | tuple[str, ...], size: int,
        queue: QueueInfo, created: float,
    ) -> None:
        self.id = id
        self.sender = sender
        # still pending: one str, or a tuple of several (never empty while queued)
        self.recipients = recipients
        self.size = size
        self.queue = queue
        self.created = created
        self.attempts = 0
        self._w: int | float = SCHEDULED

    @property
    def where(self) -> int:
        """SCHEDULED, PARKED, READY, HELD or DONE."""
        w = self._w
        return SCHEDULED if type(w) is float else w  # type: ignore[return-value]

    @where.setter
    def where(self, value: int) -> None:
        self._w = value

    @property
    def due(self) -> float | None:
        """When it is due, while it is in the scheduled list; else None."""
        w = self._w
        return w if type(w) is float else None

    def __lt__(self, other: Message) -> bool:
        return (self.created, self.id) < (other.created, other.id)

    def __repr__(self) -> str:
        return f"<Message {self.id} where={self.where} attempts={self.attempts}>"


def compact_recipients(recipients: tuple[str, ...]) -> str | tuple[str, ...]:
    """The stored form: the single address itself, or the tuple of several."""
    return recipients[0] if len(recipients) == 1 else recipients


def rcpt_tuple(recipients: str | tuple[str, ...]) -> tuple[str, ...]:
    """The tuple form of a message's stored recipients."""
    return (recipients,) if type(recipients) is str else recipients  # type: ignore[return-value]
