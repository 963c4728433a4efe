"""Reloading the policy of a running service (SIGHUP, POST /api/admin/reload/v1).

A new policy is installed only once it has loaded and answered, for every
ready queue and scheduled queue the engine has, the questions the engine
would then ask at once (`engine.admin.policy_reloaded` re-asks them all: the
config epoch).  A policy that fails to load or to answer is refused with one
line naming the fault, and the one in force stays.

The shaping files the service started with (``egress deliver --shaping``, or
the ones its spool kept) are read again, from where they were first read, with
the policy and go in with it (`Policy.shaping`); a file that no longer reads or
loads refuses the reload the same way.  What a reload installs, policy file and
shaping files, replaces the copies in the spool (`engine.live.spool_files`), so
a restart and `egress replay` fold the journal with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.engine import Engine

__all__ = ["load_checked", "read_shaping", "reload_service"]

log = logging.getLogger("egress.service")  # as the service logs it


def read_shaping(files: Sequence[str]) -> Any:
    """The shaping files read and merged (an `engine.shaping.Shaping`), or None for
    none; ConfigError naming the file that cannot be read or loaded."""
    if not files:
        return None
    from engine.errors import ConfigError
    from engine.shaping_load import load_shaping

    texts = []
    for name in files:
        try:
            texts.append((name, Path(name).read_text(encoding="utf-8")))
        except OSError as exc:
            raise ConfigError(f"--shaping {name}: cannot read: {exc.strerror or exc}") from None
    return load_shaping(texts)


def load_checked(path: str | Path, eng: Engine, spool: Path | None = None,
                 shaping_files: Sequence[str] | None = None) -> Any:
    """The policy in `path` (with `shaping_files` re-read; None: the files of the
    policy in force), checked against `eng`'s queues; ValueError naming the fault.
    With `spool`, the new policy and shaping files are kept there."""
    from engine.policy import Policy
    from engine.shaping_load import combine

    if shaping_files is None:
        shaping = getattr(eng.policy, "shaping", None)
        shaping_files = shaping.files if shaping is not None else ()
    try:
        policy = Policy.from_file(str(path))
        extra = read_shaping(shaping_files)
        # the --shaping files merged over what a Lua policy's shaping helper loaded
        policy.shaping = combine(policy.shaping, extra)
        for rq in list(eng.paths.values()):
            policy.egress_path_config(rq.domain, rq.source_name, rq.site)
        for q in list(eng.queues.values()):
            policy.queue_config(q.domain, q.tenant, q.campaign, q.routing_domain)
    except Exception as exc:  # any fault of the file or its hooks refuses it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"policy {str(path)!r} refused, the one in force stays: "
                         f"{type(exc).__name__}: {first}") from None
    if spool is not None:
        from engine.live.spool_files import keep_policy, keep_shaping

        try:
            keep_shaping(spool, extra.contents if extra is not None else ())
            keep_policy(spool, path, policy.files)
        except OSError as exc:
            raise ValueError(f"policy {str(path)!r} refused, the one in force stays: cannot "
                             f"keep it in the spool {str(spool)!r}: "
                             f"{exc.strerror or exc}") from None
    return policy


async def reload_service(svc: Any) -> str:
    """`Service.reload`: the policy file re-read and checked (`load_checked`),
    installed, and `PolicyReloaded` journaled with a snapshot in the same
    batch; a one-line summary, or ValueError (logged) and the old one stays.

    The snapshot: a restart folds the events after it only, under the policy
    now in force.  The events before it were decided under the old one;
    folded again under the new one (a lower connection_limit), they would
    not replay."""
    from engine.events import PolicyReloaded

    eng = svc.engine
    assert eng is not None
    if svc.policy_path is None:
        raise ValueError("this service was started without a policy file to re-read")
    try:
        policy = load_checked(svc.policy_path, eng, svc.spool_dir, svc.shaping_files)
    except ValueError as exc:
        log.error("egress: reload: %s", exc)
        raise
    svc.policy = eng.policy = policy
    svc.snapshot_with_next_batch()
    await svc.admin_event(PolicyReloaded(at=time.time()))
    detail = f"policy {svc.policy_path} reloaded; {len(eng.paths)} path configs re-asked"
    log.warning("egress: %s", detail)
    return detail

