"""What the engine knows about one destination domain's MX set."""

from __future__ import annotations

from engine.events import MxRecord
from engine.message import Message

__all__ = ["DomainState"]


class DomainState:
    """A domain's cached MX answer, and the messages parked until it is known."""

    __slots__ = ("expires", "mx", "null", "parked", "resolving", "site")

    def __init__(self) -> None:
        self.mx: tuple[MxRecord, ...] = ()
        self.site: str | None = None
        self.expires = float("-inf")
        self.null = False
        self.parked: list[Message] = []
        self.resolving = False
