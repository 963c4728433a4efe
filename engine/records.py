"""Log records in KumoMTA's JSON log shape.

Records are plain dicts (what `json.dumps` writes and KumoMTA tooling reads):
``type, id, sender, recipient, queue, site, size, response{code,
enhanced_code|null, content, command}, peer_address{name, addr}|null,
timestamp, created, num_attempts, egress_pool, egress_source``, plus the TLS
fields only when TLS was used and ``provider_name`` only when configured.
``timestamp``/``created`` are integer Unix seconds (the engine's `epoch` plus
event time).  Reception and Delayed records have ``site`` "".

One builder, called on the hot path, so it builds the dict in one literal and
does no lookups it can avoid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.reply import Reply

if TYPE_CHECKING:
    from engine.message import Message

RECEPTION = "Reception"
DELIVERY = "Delivery"
TRANSIENT = "TransientFailure"
BOUNCE = "Bounce"
EXPIRATION = "Expiration"
ADMIN_BOUNCE = "AdminBounce"
DELAYED = "Delayed"

RECORD_TYPES = (RECEPTION, DELIVERY, TRANSIENT, BOUNCE, EXPIRATION, ADMIN_BOUNCE, DELAYED)


def response(reply: Reply, command: str | None = None) -> dict[str, Any]:
    """The ``response`` object of a record."""
    enh = reply.enhanced
    return {
        "code": reply.code,
        "enhanced_code": None if enh is None else enh.to_record(),
        "content": reply.text,
        "command": command,
    }


def make_record(
    kind: str,
    msg: Message,
    at: float,
    epoch: float,
    reply: Reply,
    *,
    recipient: str | list[str] | None = None,
    site: str = "",
    source: str | None = None,
    peer: tuple[str, str] | None = None,
    command: str | None = None,
    tls: tuple[str, str, str] | None = None,
    provider: str | None = None,
    attempts: int | None = None,
) -> dict[str, Any]:
    """Build one record; `recipient` defaults to the message's pending recipients
    (a string for one, a list for several)."""
    if recipient is None:
        rcpts = msg.recipients
        if type(rcpts) is str:
            recipient = rcpts
        else:
            recipient = rcpts[0] if len(rcpts) == 1 else list(rcpts)
    enh = reply.enhanced
    rec: dict[str, Any] = {
        "type": kind,
        "id": msg.id,
        "sender": msg.sender,
        "recipient": recipient,
        "queue": msg.queue.name,
        "site": site,
        "size": msg.size,
        "response": {
            "code": reply.code,
            "enhanced_code": None if enh is None else enh.to_record(),
            "content": reply.text,
            "command": command,
        },
        "peer_address": None if peer is None else {"name": peer[0], "addr": peer[1]},
        "timestamp": int(epoch + at),
        "created": int(epoch + msg.created),
        "num_attempts": msg.attempts if attempts is None else attempts,
        "egress_pool": msg.queue.pool,
        "egress_source": source,
    }
    if tls is not None:
        rec["tls_protocol_version"] = tls[0]
        rec["tls_cipher"] = tls[1]
        rec["tls_peer_subject_name"] = tls[2]
    if provider is not None:
        rec["provider_name"] = provider
    return rec
