"""engine.core: the one copy of the timer bookkeeping, and session steps' outcomes."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.core import Core
from engine.effects import CancelTimer, Log, SetTimer
from engine.ready import ConnCtx


def test_set_and_cancel_record_the_armed_timers() -> None:
    core = Core(policy=None)
    core.set_timer(("idle", 1), 5.0)
    assert core.timers == {("idle", 1): 5.0}
    assert core.out == [SetTimer(timer=("idle", 1), at=5.0)]
    core.cancel_timer(("idle", 1))
    core.cancel_timer(("idle", 2))  # not armed: nothing to say
    assert core.timers == {}
    assert core.out[1:] == [CancelTimer(timer=("idle", 1))]


def test_a_cancel_then_set_of_one_timer_in_one_event_leaves_only_the_set() -> None:
    core = Core(policy=None)
    core.timers[("conn", 1)] = 3.0
    core.take_effects([CancelTimer(timer=("conn", 1)), Log(record={"type": "x"})])
    core.take_effects([SetTimer(timer=("conn", 1), at=9.0)])
    # the cancelled slot is emptied (Engine.handle removes empty slots at the end)
    assert core.out == [None, Log(record={"type": "x"}), SetTimer(timer=("conn", 1), at=9.0)]
    assert core.dropped and core.timers == {("conn", 1): 9.0}
    assert core.cancelled == {}  # the SetTimer took the cancelled slot


def test_a_cancel_of_a_timer_not_armed_goes_out_and_changes_no_timer() -> None:
    # a session's effects may cancel a timer that already fired: the driver is
    # told (it is harmless), nothing armed changes, and a later set of it in
    # the same event still empties the cancel's slot
    core = Core(policy=None)
    core.timers[("idle", 2)] = 4.0
    core.take_effects([CancelTimer(timer=("conn", 1))])
    assert core.out == [CancelTimer(timer=("conn", 1))]
    assert core.timers == {("idle", 2): 4.0} and core.cancelled == {("conn", 1): 0}
    core.take_effects([SetTimer(timer=("conn", 1), at=5.0)])
    assert core.out == [None, SetTimer(timer=("conn", 1), at=5.0)]
    assert core.timers == {("idle", 2): 4.0, ("conn", 1): 5.0}


def test_a_timer_set_again_at_the_deadline_it_is_armed_at_makes_no_effect() -> None:
    """A session re-arms its timer at each reply; MAIL and RCPT both wait 300 s
    by default, so the RCPT's arming is the MAIL's deadline again: the driver
    is told nothing new.  A different deadline, or a timer cancelled in the
    same event, is still set."""
    core = Core(policy=None)
    core.take_effects([SetTimer(timer=("conn", 1), at=400.0)])
    core.take_effects([SetTimer(timer=("conn", 1), at=400.0)])
    assert core.out == [SetTimer(timer=("conn", 1), at=400.0)]
    core.take_effects([SetTimer(timer=("conn", 1), at=430.0)])
    assert core.out[1:] == [SetTimer(timer=("conn", 1), at=430.0)]
    core.take_effects([CancelTimer(timer=("conn", 1)), SetTimer(timer=("conn", 1), at=430.0)])
    assert core.out[2:] == [None, SetTimer(timer=("conn", 1), at=430.0)]
    assert core.timers == {("conn", 1): 430.0}


def test_run_step_passes_outcomes_to_the_installed_handlers_in_order() -> None:
    seen: list[Any] = []

    class Recording(Core):
        outcome_handlers: ClassVar[dict[type, Any]] = {
            str: lambda core, ctx, o, now: seen.append((o, now))}

    core = Recording(policy=None)
    ctx = ConnCtx(1, None, ())  # type: ignore[arg-type]
    core.run_step(ctx, ([SetTimer(timer=("conn", 1), at=2.0)], ["a", "b"]), 1.0)
    assert seen == [("a", 1.0), ("b", 1.0)]
    assert core.timers == {("conn", 1): 2.0}


def test_written_inits_take_exactly_their_fields() -> None:
    """The value classes that write their ``__init__`` out (native in the
    compiled build) must take every field as the generated one would, by
    keyword (or also by position where the class is not kw_only), with the
    field's default, and set each, or a field added later would be left unset."""
    import dataclasses
    import inspect

    from engine.effects import Close, Connect, Discard, Send, SmtpCommand, Verb
    from engine.events import Response, TimerFired
    from engine.reply import Reply
    from engine.session_outcomes import (
        RecipientResult,
        SessionClosed,
        TransactionDone,
        TxnMessage,
    )

    reply = Reply(code=250, text="ok")
    cmd = SmtpCommand(verb=Verb.MAIL, arg="a@b.example", params="SIZE=1", secret="k")
    samples: list[tuple[type, dict[str, Any]]] = [
        (SetTimer, {"timer": ("conn", 1), "at": 2.0}),
        (Log, {"record": {"type": "x"}, "where": "q"}),
        (CancelTimer, {"timer": ("conn", 1)}),
        (Connect, {"conn": 1, "host": "h", "address": "192.0.2.1", "port": 25,
                   "source": "s", "source_address": "192.0.2.9", "path": "s->h"}),
        (Discard, {"message_id": "m1"}),
        (Send, {"conn": 3, "commands": (cmd,)}),
        (cmd.__class__, {"verb": Verb.RCPT, "arg": "r@b.example", "params": "", "secret": None}),
        (Close, {"conn": 3}),
        (TxnMessage, {"id": "m1", "sender": "s@a.example", "recipients": ("r@b.example",),
                      "size": 9}),
        (RecipientResult, {"message_id": "m1", "recipient": "r@b.example",
                           "status": "delivered", "reply": reply, "command": "."}),
        (TransactionDone, {"message_id": "m1"}),
        (SessionClosed, {"reason": "quit"}),
        (Reply, {"code": 451, "text": "later", "enhanced": None}),
        (Response, {"at": 1.5, "conn": 7, "reply": reply}),
        (TimerFired, {"at": 2.0, "timer": ("conn", 7)}),
    ]
    for cls, sample in samples:
        assert "__init__" in cls.__dict__, cls  # written out, not generated
        params = inspect.signature(cls.__init__).parameters
        fields = dataclasses.fields(cls)
        assert [p for p in params if p != "self"] == [f.name for f in fields], cls
        for f in fields:
            p = params[f.name]
            kind = (inspect.Parameter.KEYWORD_ONLY if f.kw_only
                    else inspect.Parameter.POSITIONAL_OR_KEYWORD)
            assert p.kind is kind, (cls, f.name)
            default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
            assert p.default == default, (cls, f.name)
        made = cls(**sample)
        assert {f.name: getattr(made, f.name) for f in fields} == sample
        assert dataclasses.replace(made) == made


def test_written_inits_keep_their_checks() -> None:
    """A written ``__init__`` still runs its class's ``__post_init__``: the
    checked constructors refuse what they refused before, with the same words."""
    import math

    import pytest

    from engine.events import Response, TimerFired
    from engine.reply import Reply
    from engine.session_outcomes import TxnMessage

    with pytest.raises(ValueError, match=r"SMTP reply code must be 200\.\.599, not 199"):
        Reply(code=199)
    with pytest.raises(ValueError, match="a transaction needs at least one recipient"):
        TxnMessage("m1", "s@a.example", ())
    ok = Reply(code=250)
    for bad in (math.inf, -math.inf, math.nan, "1.0", None):
        with pytest.raises(ValueError, match=r"Response\.at must be a finite number"):
            Response(at=bad, conn=1, reply=ok)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"TimerFired\.at must be a finite number"):
            TimerFired(at=bad, timer=("conn", 1))  # type: ignore[arg-type]
    with pytest.raises(OverflowError):  # as math.isfinite: an int no float can hold
        TimerFired(at=10**400, timer=("conn", 1))
    assert TimerFired(at=3, timer=("conn", 1)).at == 3 and Response(at=True, conn=1, reply=ok).at
