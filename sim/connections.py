"""Open connections per egress path, counted from the engine's own effects.

A connection counts from the engine's `Connect` effect until it ends: the
engine's `Close`, or the driver's news that it failed or was closed by the
peer (`ConnectFailed`, `Closed`).  The simulator's driver counts with this
class and so does the lab's run (`lab.run`), so the connection series and
peaks of ``egress simulate`` and ``egress lab --run`` are the same figure.
"""

from __future__ import annotations

from collections.abc import Callable


class PathConnections:
    """Open connections per path; `on_rise(path, count)` whenever one opens."""

    __slots__ = ("_on_rise", "_paths", "open")

    def __init__(self, on_rise: Callable[[str, int], None] | None = None) -> None:
        self._on_rise = on_rise
        self._paths: dict[int, str] = {}
        self.open: dict[str, int] = {}

    def opened(self, conn: int, path: str) -> None:
        """The engine ordered connection `conn` for `path`."""
        self._paths[conn] = path
        count = self.open.get(path, 0) + 1
        self.open[path] = count
        if self._on_rise is not None:
            self._on_rise(path, count)

    def ended(self, conn: int) -> None:
        """Connection `conn` is gone (closed, refused, failed); a repeat is ignored."""
        path = self._paths.pop(conn, None)
        if path is not None:
            self.open[path] -= 1

    def counts(self) -> dict[str, int]:
        """Open connections per path now (a copy)."""
        return dict(self.open)
