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
    """SetTimer and Log write their ``__init__`` out (native in the compiled
    build): it must take every field, by keyword, with the field's default, and
    set each, or a field added later would be left unset."""
    import dataclasses
    import inspect

    for cls, sample in ((SetTimer, {"timer": ("conn", 1), "at": 2.0}),
                        (Log, {"record": {"type": "x"}, "where": "q"})):
        params = inspect.signature(cls.__init__).parameters
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        assert [p for p in params if p != "self"] == [f.name for f in fields]
        for f in fields:
            p = params[f.name]
            assert p.kind is inspect.Parameter.KEYWORD_ONLY
            default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
            assert p.default == default, (cls, f.name)
        made = cls(**sample)
        assert {f.name: getattr(made, f.name) for f in fields} == sample
        assert dataclasses.replace(made) == made
