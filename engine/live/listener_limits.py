"""The listener's bounds: connections, DATA held in memory, AUTH failures.

One `Limits` per listener, shared by its connections, so one client (or
many) cannot take the process's memory or sockets, nor guess passwords at
line rate:

* a global connection cap and a per-client (per IP address) cap: a
  connection over either is told ``421 4.7.0`` and closed before its banner;
* a cap on the bytes buffered by all connections together: a DATA body that
  would pass it is read on but dropped, and answered ``452 4.3.1`` at its
  final dot (the client retries later; nothing was accepted);
* AUTH failures per client: each failure's 535 is delayed a little longer
  (`auth_delay` x failures so far, at most `AUTH_DELAY_CAP` seconds), and
  after `auth_max_failures` within `AUTH_WINDOW` seconds the client's AUTH
  is refused with ``421 4.7.0`` and the connection closed, until the window
  passes.

Plain bookkeeping with the clock passed in; the connection does the I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = ["AUTH_DELAY_CAP", "AUTH_WINDOW", "LimitSettings", "Limits"]

AUTH_DELAY_CAP = 5.0
AUTH_WINDOW = 900.0  # seconds a client's AUTH failures are remembered
MAX_TRACKED_CLIENTS = 10_000  # clients with failures before the expired ones are swept

TOO_MANY = b"421 4.7.0 too many connections, try again later\r\n"
TOO_MANY_FROM_YOU = b"421 4.7.0 too many connections from your address, try again later\r\n"
NO_MEMORY = b"452 4.3.1 insufficient system storage, try again later\r\n"
AUTH_LOCKED = b"421 4.7.0 too many authentication failures, try again later\r\n"


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """The bounds (see the module docstring)."""

    max_connections: int = 1024
    max_connections_per_client: int = 64
    max_buffered_data: int = 256 * 1024 * 1024
    auth_max_failures: int = 10
    auth_delay: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_client", "max_buffered_data",
                     "auth_max_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Listener {name} must be an integer above 0, not {value!r}")
        delay = self.auth_delay
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ValueError(f"Listener auth_delay must be a number of seconds >= 0, not "
                             f"{delay!r}")


class Limits:
    """What the listener's connections hold together, checked against `LimitSettings`."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.connections = 0
        self.per_client: Counter[str] = Counter()
        self.buffered = 0  # bytes in every connection's receive buffer
        self._auth_failures: dict[str, list[float]] = {}

    def admit(self, peer: str) -> bytes | None:
        """Count a new connection from `peer`; or the 421 refusing it (not counted)."""
        if self.connections >= self.settings.max_connections:
            return TOO_MANY
        if self.per_client[peer] >= self.settings.max_connections_per_client:
            return TOO_MANY_FROM_YOU
        self.connections += 1
        self.per_client[peer] += 1
        return None

    def release(self, peer: str) -> None:
        """An admitted connection closed."""
        self.connections -= 1
        self.per_client[peer] -= 1
        if self.per_client[peer] <= 0:
            del self.per_client[peer]

    def hold(self, delta: int) -> None:
        """A connection's receive buffer grew (or shrank) by `delta` bytes."""
        self.buffered += delta

    def over_budget(self) -> bool:
        """True when the connections together buffer more than allowed."""
        return self.buffered > self.settings.max_buffered_data

    def auth_locked(self, peer: str, now: float) -> bool:
        """True while `peer` has used up its AUTH failures."""
        recent = self._recent(peer, now)
        return len(recent) >= self.settings.auth_max_failures

    def auth_failed(self, peer: str, now: float) -> float:
        """Record a failure; the seconds to hold back its 535."""
        if len(self._auth_failures) >= MAX_TRACKED_CLIENTS:
            for old in [p for p, t in self._auth_failures.items() if now - t[-1] >= AUTH_WINDOW]:
                del self._auth_failures[old]
        recent = self._recent(peer, now)
        recent.append(now)
        self._auth_failures[peer] = recent
        return min(self.settings.auth_delay * len(recent), AUTH_DELAY_CAP)

    def _recent(self, peer: str, now: float) -> list[float]:
        times = self._auth_failures.get(peer)
        if not times:
            return []
        recent = [t for t in times if now - t < AUTH_WINDOW]
        if recent:
            self._auth_failures[peer] = recent
        else:
            del self._auth_failures[peer]
        return recent
