"""SMTP replies as plain values.

A `Reply` is what a remote server said: a three digit code, an optional RFC 3463
enhanced status code, and the text (lines joined with ``"\\n"``).  Replies are
carried inside `Response` events, so they are frozen, slotted and validated on
construction; the parser that makes them from bytes lives in `engine.wire`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class EnhancedCode:
    """RFC 3463 ``class.subject.detail``, e.g. ``4.4.1``."""

    klass: int
    subject: int
    detail: int

    def __post_init__(self) -> None:
        if self.klass not in (2, 4, 5):
            raise ValueError(f"enhanced status class must be 2, 4 or 5, not {self.klass}")
        if not (0 <= self.subject <= 999 and 0 <= self.detail <= 999):
            raise ValueError(f"enhanced status {self} out of range")

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"

    @classmethod
    def parse(cls, text: str) -> EnhancedCode:
        parts = text.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"not an enhanced status code: {text!r}")
        return cls(klass=int(parts[0]), subject=int(parts[1]), detail=int(parts[2]))

    def to_record(self) -> dict[str, int]:
        """The shape KumoMTA writes in its JSON logs."""
        return {"class": self.klass, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Reply:
    """One complete (possibly multi-line) SMTP reply.

    Its ``__init__`` is written out (``init=False``): mypyc makes a written
    ``__init__`` native and a generated one not, and the engine and the
    simulator make replies on every message."""

    code: int
    text: str = ""
    enhanced: EnhancedCode | None = None

    def __init__(self, *, code: int, text: str = "",
                 enhanced: EnhancedCode | None = None) -> None:
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "enhanced", enhanced)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code must be 200..599, not {self.code}")

    def __hash__(self) -> int:
        # Equal replies have equal code and text, so this agrees with __eq__;
        # leaving the enhanced code out spares a second Python-level hash call
        # each time a transaction's results are grouped by reply (engine.outcomes).
        return hash((self.code, self.text))

    @property
    def klass(self) -> int:
        """The first digit: 2, 3, 4 or 5."""
        return self.code // 100

    def __str__(self) -> str:
        if self.enhanced is None:
            return f"{self.code} {self.text}"
        return f"{self.code} {self.enhanced} {self.text}"

    @classmethod
    def make(cls, code: int, enhanced: str | None, text: str) -> Reply:
        """Convenience for tests and the simulator: ``Reply.make(451, "4.4.1", "...")``."""
        return cls(
            code=code,
            enhanced=EnhancedCode.parse(enhanced) if enhanced else None,
            text=text,
        )
