"""The node's id: a UUID made once and kept in the spool, written into every record.

KumoMTA (crates/kumo-server-common/src/nodeid.rs) makes a v4 UUID at first
start and persists it (``/opt/kumomta/etc/.nodeid``), or takes it from the
``KUMO_NODE_ID`` environment variable; every log record carries it as
``nodeid`` (crates/kumod/src/logging/disposition.rs).  egress keeps it in the
spool (``SPOOL/nodeid``), so a node keeps its id across restarts and a new
spool is a new node.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from engine.live.private_files import open_new

__all__ = ["NODEID_FILE", "kept_node_id", "node_id"]

NODEID_FILE = "nodeid"


def node_id(spool: Path) -> str:
    """The node's UUID text: ``KUMO_NODE_ID`` if set, else the spool's, made
    and kept there at first use.  A malformed value is a one-line ValueError."""
    env = os.environ.get("KUMO_NODE_ID")
    if env is not None:
        return _parse(env, "KUMO_NODE_ID")
    path = spool / NODEID_FILE
    try:
        return _parse(path.read_text(encoding="ascii").strip(), str(path))
    except FileNotFoundError:
        pass
    made = str(uuid.uuid4())
    try:
        with open_new(path) as f:
            f.write(made.encode() + b"\n")
    except FileExistsError:  # another process made it first: use theirs
        return _parse(path.read_text(encoding="ascii").strip(), str(path))
    return made


def kept_node_id(spool: Path) -> str | None:
    """The id the spool keeps, read only (`egress replay` writes records with the
    id the live ones had); None when it keeps none (or ``KUMO_NODE_ID`` named the
    node, which the spool does not record)."""
    path = spool / NODEID_FILE
    try:
        return _parse(path.read_text(encoding="ascii").strip(), str(path))
    except FileNotFoundError:
        return None


def _parse(text: str, where: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a valid UUID") from None
