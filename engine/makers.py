# mypy: disable-error-code="misc"
"""Constructors without validation for the values the engine makes on every
event (effects, replies, a session's outcomes) and for the events the
simulator makes several times per message (a submission, a reply, a timer).

The checked constructors (``Log(record=..., where=...)``) stay the way
external input is built; these are for values that are valid by
construction (see `engine.events.trusted_factory`), positional, every field
in declaration order, and what they make is equal to what the checked
constructor makes.  Each exists twice, because the fastest way differs:

* compiled (setup.py's optional mypyc build), the functions below run as
  written.  Most call their class's written ``__init__`` (``init=False``
  classes), which mypyc makes a native constructor: the cheap checks of a
  ``__post_init__`` (a reply's code, an event's time) are kept, at a few
  instructions.  `make_message_submitted`, whose checks parse addresses,
  allocates by its class's ``__new__`` and stores each field in the native
  slot (a frozen dataclass's ``__setattr__`` refuses the assignment only in
  Python; this module's ``disable-error-code="misc"`` is for mypy's same
  objection).  Compiled callers call them directly, in C.
* in Python, such an assignment raises, so at import the end of this module
  rebinds each name to `trusted_factory`'s generated function, which fills
  the slots through their descriptors (the fastest way CPython has).
"""

from __future__ import annotations

from dataclasses import fields
from types import FunctionType
from typing import Any

from engine.effects import CancelTimer, Close, Connect, Discard, Log, Send, SetTimer, SmtpCommand
from engine.events import MessageSubmitted, Response, Timer, TimerFired, trusted_factory
from engine.reply import EnhancedCode, Reply
from engine.session_outcomes import (
    RecipientResult,
    SessionClosed,
    Status,
    TransactionDone,
    TxnMessage,
)


def make_log(record: dict[str, Any], where: str | None = None) -> Log:
    return Log(record=record, where=where)  # its written __init__: native, compiled


def make_set_timer(timer: Timer, at: float) -> SetTimer:
    return SetTimer(timer=timer, at=at)  # as make_log


def make_cancel_timer(timer: Timer) -> CancelTimer:
    return CancelTimer(timer=timer)


def make_connect(conn: int, host: str, address: str, port: int, source: str,
                 source_address: str | None = None, path: str = "") -> Connect:
    return Connect(conn=conn, host=host, address=address, port=port, source=source,
                   source_address=source_address, path=path)


def make_discard(message_id: str) -> Discard:
    return Discard(message_id=message_id)


def make_send(conn: int, commands: tuple[SmtpCommand, ...]) -> Send:
    return Send(conn=conn, commands=commands)


def make_command(verb: Any, arg: str = "", params: str = "", secret: Any = None) -> SmtpCommand:
    return SmtpCommand(verb=verb, arg=arg, params=params, secret=secret)


def make_close(conn: int) -> Close:
    return Close(conn=conn)


def make_txn_message(id: str, sender: str, recipients: tuple[str, ...],
                     size: int = 0) -> TxnMessage:
    return TxnMessage(id=id, sender=sender, recipients=recipients, size=size)


def make_recipient_result(message_id: str, recipient: str, status: Status, reply: Reply,
                          command: str) -> RecipientResult:
    return RecipientResult(message_id=message_id, recipient=recipient, status=status,
                           reply=reply, command=command)


def make_transaction_done(message_id: str) -> TransactionDone:
    return TransactionDone(message_id=message_id)


def make_session_closed(reason: str) -> SessionClosed:
    return SessionClosed(reason=reason)


def make_reply(code: int, text: str = "", enhanced: EnhancedCode | None = None) -> Reply:
    return Reply(code=code, text=text, enhanced=enhanced)


def make_response(at: float, conn: int, reply: Reply) -> Response:
    return Response(at=at, conn=conn, reply=reply)


def make_timer_fired(at: float, timer: Timer) -> TimerFired:
    return TimerFired(at=at, timer=timer)


def make_message_submitted(at: float, id: str, sender: str, recipients: tuple[str, ...],
                           size: int = 0, tenant: str = "", campaign: str = "",
                           routing_domain: str = "", peer_name: str = "", peer_addr: str = "",
                           session_id: str = "") -> MessageSubmitted:
    o = MessageSubmitted.__new__(MessageSubmitted)
    o.at = at
    o.id = id
    o.sender = sender
    o.recipients = recipients
    o.size = size
    o.tenant = tenant
    o.campaign = campaign
    o.routing_domain = routing_domain
    o.peer_name = peer_name
    o.peer_addr = peer_addr
    o.session_id = session_id
    return o


_CLASSES: dict[str, type] = {
    "make_log": Log, "make_set_timer": SetTimer, "make_cancel_timer": CancelTimer,
    "make_connect": Connect, "make_discard": Discard, "make_send": Send,
    "make_command": SmtpCommand, "make_close": Close, "make_txn_message": TxnMessage,
    "make_recipient_result": RecipientResult, "make_transaction_done": TransactionDone,
    "make_session_closed": SessionClosed, "make_reply": Reply,
    "make_response": Response, "make_timer_fired": TimerFired,
    "make_message_submitted": MessageSubmitted,
}


def _in_python(namespace: dict[str, Any]) -> None:
    """Rebind each maker that runs as Python bytecode (this module was not
    compiled) to `trusted_factory`'s function for its class, once it is
    checked to take its class's fields in order with their defaults: a field
    added to the class and not here would be left unset by the compiled one."""
    for name, cls in _CLASSES.items():
        maker = namespace[name]
        if not isinstance(maker, FunctionType):
            continue
        code = maker.__code__
        params = code.co_varnames[:code.co_argcount]
        every = fields(cls)  # type: ignore[arg-type]
        defaults = tuple(f.default for f in every[len(every) - len(maker.__defaults__ or ()):])
        if params != tuple(f.name for f in every) or (maker.__defaults__ or ()) != defaults:
            raise ImportError(f"engine.makers.{name} takes {params} (defaults "
                              f"{maker.__defaults__}), not the fields of {cls.__name__}: "
                              f"{tuple(f.name for f in every)} (defaults {defaults})")
        namespace[name] = trusted_factory(cls)


_in_python(globals())
