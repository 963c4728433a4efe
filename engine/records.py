"""Log records in KumoMTA's JSON log shape.

Records are plain dicts (what `json.dumps` writes and KumoMTA tooling reads),
with the fields of KumoMTA's ``JsonLogRecord`` (crates/kumo-log-types/src/
lib.rs) in its serialisation order: ``type, id, sender, recipient, queue,
site, size, response{code, enhanced_code|null, content, command},
peer_address{name, addr}|null, timestamp, event_time, created, created_time,
num_attempts, bounce_classification, egress_pool, egress_source,
source_address, feedback_report, meta, headers, delivery_protocol,
reception_protocol, nodeid``, then the TLS fields only when TLS was used,
``provider_name`` only when configured and ``session_id`` only within a
session.  ``timestamp``/``created`` are integer Unix seconds and
``event_time``/``created_time`` the same instants in RFC 3339 (chrono's
form: ``Z``, and 3 or 6 fractional digits only when there is a fraction),
all from the engine's `epoch` plus event time.  The response's ``content`` is
one line (KumoMTA's `as_single_line`) and its ``command`` the command as
sent, with its CRLF (`Command::encode`).  ``tls_peer_subject_name`` is a
list of ``attr=value`` entries, the certificate's order.  Reception and
Delayed records have ``site`` "", and they and AdminBounce ``egress_pool`` null.

One builder, called on the hot path, so it builds the dict in one literal and
does no lookups it can avoid.
"""

from __future__ import annotations

import math
import re
import uuid
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from engine.bounce_classify import CLASSIFIABLE, UNCATEGORIZED
from engine.effects import Log
from engine.reply import Reply

if TYPE_CHECKING:
    from engine.bounce_classify import BounceClassifier
    from engine.message import Message

RECEPTION: Final = "Reception"
DELIVERY: Final = "Delivery"
TRANSIENT: Final = "TransientFailure"
BOUNCE: Final = "Bounce"
EXPIRATION: Final = "Expiration"
ADMIN_BOUNCE: Final = "AdminBounce"
DELAYED: Final = "Delayed"

RECORD_TYPES: Final = (RECEPTION, DELIVERY, TRANSIENT, BOUNCE, EXPIRATION, ADMIN_BOUNCE, DELAYED)

#: The nodeid of an engine whose driver gave it none (`Core.nodeid`): the nil
#: UUID.  Live delivery writes the spool's (engine.live.nodeid), the simulator
#: one per scenario and node (sim.driver.sim_nodeid).
NODEID: Final = "00000000-0000-0000-0000-000000000000"
#: How messages reach egress (KumoMTA's "reception_protocol" message meta).
RECEPTION_PROTOCOL: Final = "ESMTP"
#: What KumoMTA's SMTP dispatcher logs as delivery_protocol.
DELIVERY_PROTOCOL: Final = "ESMTP"
_DELIVERY_KINDS: Final = frozenset({DELIVERY, TRANSIENT, BOUNCE})
# KumoMTA logs these with egress_pool None (smtp_server.rs Reception, queue.rs
# Delayed, admin_bounce_v1.rs AdminBounce): no pool was involved.
_NO_POOL: Final = frozenset({RECEPTION, DELAYED, ADMIN_BOUNCE})
_RDN_SPLIT: Final = re.compile(r"(?<!\\)[,+]")


# rfc3339 texts by instant: a message's records repeat its ``created``
# (every one) and a Reception's ``event_time`` is its ``created``, so most
# calls ask for a text made a moment ago.  Emptied when full: a memo, never
# a difference in what is written.
_TEXTS: Final[dict[float, str]] = {}
_TEXTS_MAX: Final = 4096
# "000" to "999": a fraction's digits by index, not formatted at each use
_DIGITS: Final = tuple(f"{i:03d}" for i in range(1000))


def rfc3339(t: float) -> str:
    """`t` (Unix seconds) as chrono serialises a DateTime<Utc>: RFC 3339 with
    ``Z``, no fraction when whole, else 3 digits when milliseconds suffice and
    6 otherwise (egress keeps microseconds)."""
    text = _TEXTS.get(t)
    if text is None:
        if len(_TEXTS) >= _TEXTS_MAX:
            _TEXTS.clear()
        text = _TEXTS[t] = _rfc3339(t)
    return text


def forget_texts() -> None:
    """Empty the rfc3339 memos.  The live service calls this when idle state
    is reaped: a text kept from a burst pins the allocator pool it was made in
    (`engine.live.memory`)."""
    _TEXTS.clear()
    _second.cache_clear()


def _rfc3339(t: float) -> str:
    micros = round(t * 1_000_000)
    secs = micros // 1_000_000
    frac = micros - secs * 1_000_000
    text = _second(secs)
    if frac == 0:
        return text + "Z"
    ms = frac // 1000
    us = frac - ms * 1000
    if us == 0:
        return f"{text}.{_DIGITS[ms]}Z"
    return f"{text}.{_DIGITS[ms]}{_DIGITS[us]}Z"


@lru_cache(maxsize=16)
def _second(secs: int) -> str:
    # records come in time order, so a few recent seconds cover most calls; a
    # bigger cache would keep a string from every second of a burst, each
    # pinning the allocator page it was made in (engine.live.memory)
    days, rest = divmod(secs, 86_400)
    year, month, day = _civil(days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of the proleptic Gregorian calendar, `days` after
    1970-01-01 (H. Hinnant's civil_from_days).  Plain integers, where
    `datetime.strftime` (the C library's) left small blocks behind in the
    live service after a burst, made at its first calls and kept."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def humantime(seconds: float) -> str:
    """`seconds` as KumoMTA writes a duration in its texts: the humantime
    crate's ``format_duration`` (``2h 37m``, ``41s 250ms 7us``; years and
    months of 365.25 and 30.44 days, plural with an ``s``; ``0s`` for none),
    from microseconds, which is what egress keeps."""
    micros = max(0, round(seconds * 1_000_000))
    if micros == 0:
        return "0s"
    secs, sub = divmod(micros, 1_000_000)
    years, rest = divmod(secs, 31_557_600)
    months, rest = divmod(rest, 2_630_016)
    days, rest = divmod(rest, 86_400)
    parts = [f"{n}{name}{'s' if n > 1 else ''}"
             for n, name in ((years, "year"), (months, "month"), (days, "day")) if n]
    parts += [f"{n}{unit}" for n, unit in ((rest // 3600, "h"), (rest % 3600 // 60, "m"),
                                          (rest % 60, "s"), (sub // 1000, "ms"),
                                          (sub % 1000, "us")) if n]
    return " ".join(parts)


def subject_names(subject: str) -> list[str]:
    """An RFC 4514 subject string as KumoMTA's list of ``attr=value`` entries,
    in the certificate's order (RFC 4514 writes the last RDN first)."""
    if not subject:
        return []
    return [part.strip() for part in reversed(_RDN_SPLIT.split(subject))]


def _one_line(text: str) -> str:
    if "\r" in text or "\n" in text:
        return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    return text


def _wire(command: str | None) -> str | None:
    if command is None or command.endswith("\r\n"):
        return command
    return command + "\r\n"


def response(reply: Reply, command: str | None = None) -> dict[str, Any]:
    """The ``response`` object of a record."""
    enh = reply.enhanced
    return {
        "code": reply.code,
        "enhanced_code": None if enh is None else enh.to_record(),
        "content": _one_line(reply.text),
        "command": _wire(command),
    }


_MASK64: Final = (1 << 64) - 1


def session_id(seed: int, conn: int) -> str:
    """The UUID of the engine's connection `conn`: KumoMTA gives each dispatcher
    a random v4 UUID (crates/kumod/src/ready_queue.rs ``session_id``); egress
    derives it from the engine's seed and the connection id, so a replay
    writes the same one."""
    if not isinstance(seed, int):
        seed = int.from_bytes(str(seed).encode()[:8].ljust(8, b"\0"), "little")
    high = (seed * 0x9E3779B97F4A7C15) & _MASK64
    return str(uuid.UUID(int=(high << 64) | (conn & _MASK64), version=4))


def session_of(seed: int, ctx: Any) -> str:
    """`session_id` of a connection context, kept on it after the first use."""
    sid = ctx.sid
    if sid is None:
        sid = ctx.sid = session_id(seed, ctx.conn)
    return sid  # type: ignore[no-any-return]


def fill_records(effects: list[Any], classifier: BounceClassifier | None,
                 nodeid: str | None) -> None:
    """Complete an event's records with what the engine's setup adds to every
    one: the class of the configured bounce classifier (KumoMTA classifies at
    logging time, crates/kumod/src/logging/classify.rs) and the node's id
    (kumo_server_common::nodeid, crates/kumod/src/logging/disposition.rs).
    Called once per event, only when either is set, so an engine without
    them pays nothing."""
    for e in effects:
        if type(e) is not Log:  # not getattr(e, "record", None): a miss raises inside
            continue
        rec = e.record
        if type(rec) is dict:
            if nodeid is not None:
                rec["nodeid"] = nodeid
            if classifier is not None and rec["type"] in CLASSIFIABLE:
                rec["bounce_classification"] = classifier.classify(rec["response"])


def brief_record(kind: str, msg: Message, site: str,
                 recipient: str | list[str] | None = None) -> dict[str, Any]:
    """A Reception or Delivery record with only its type, id, recipient and site:
    for a simulation whose records are counted and none is written or kept
    (`Engine(brief_records=True)`, `sim.driver`), where building the whole
    record, two per message, was a tenth of the engine's time.  `recipient`
    as `make_record`'s."""
    if recipient is None:
        recipient = _pending(msg)
    return {"type": kind, "id": msg.id, "recipient": recipient, "site": site}


def _pending(msg: Message) -> str | list[str]:
    """A record's default ``recipient``: the message's pending recipients, a
    string for one, a list for several."""
    rcpts = msg.recipients
    if type(rcpts) is str:
        return rcpts
    return rcpts[0] if len(rcpts) == 1 else list(rcpts)


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
    source_address: str | None = None,
    session_id: str | None = None,
    classifier: BounceClassifier | None = None,
    nodeid: str = NODEID,
) -> dict[str, Any]:
    """Build one record; `recipient` defaults to the message's pending recipients
    (a string for one, a list for several).  `source_address` is the local
    ``address:port`` of the SMTP connection, `session_id` the session's UUID
    text, `classifier` the configured bounce classifier (none: every record
    is ``Uncategorized``, as KumoMTA without one)."""
    if recipient is None:
        recipient = _pending(msg)
    enh = reply.enhanced
    now = epoch + at
    created = epoch + msg.created
    text = reply.text
    if "\r" in text or "\n" in text:
        text = _one_line(text)
    resp = {
        "code": reply.code,
        "enhanced_code": None if enh is None else enh.to_record(),
        "content": text,
        "command": command if command is None or command.endswith("\r\n") else command + "\r\n",
    }
    event_time = rfc3339(now)
    rec: dict[str, Any] = {
        "type": kind,
        "id": msg.id,
        "sender": msg.sender,
        "recipient": recipient,
        "queue": msg.queue.name,
        "site": site,
        "size": msg.size,
        "response": resp,
        "peer_address": None if peer is None else {"name": peer[0], "addr": peer[1]},
        "timestamp": math.floor(now),
        "event_time": event_time,
        "created": math.floor(created),
        "created_time": event_time if created == now else rfc3339(created),
        "num_attempts": msg.attempts if attempts is None else attempts,
        "bounce_classification": (
            classifier.classify(resp) if classifier is not None and kind in CLASSIFIABLE
            else UNCATEGORIZED),
        "egress_pool": None if kind in _NO_POOL else msg.queue.pool,
        "egress_source": source,
        "source_address": None if source_address is None else {"address": source_address},
        "feedback_report": None,
        "meta": {},
        "headers": {},
        "delivery_protocol": DELIVERY_PROTOCOL if site and kind in _DELIVERY_KINDS else None,
        "reception_protocol": RECEPTION_PROTOCOL,
        "nodeid": nodeid,
    }
    if tls is not None:
        rec["tls_cipher"] = tls[1]
        rec["tls_protocol_version"] = tls[0]
        rec["tls_peer_subject_name"] = subject_names(tls[2])
    if provider is not None:
        rec["provider_name"] = provider
    if session_id is not None:
        rec["session_id"] = session_id
    return rec
