"""Traffic: the `[[traffic]]` streams of a scenario and the messages they submit.

Two kinds of stream: *bulk* (``messages`` submitted at one instant ``at``)
and *Poisson* (arrivals at ``rate`` for ``duration`` from ``start``).  Each
stream names its domain (or several, with weights), tenant, campaign,
sender, recipients per message and a message-size distribution.

`arrivals(scenario, rng)` yields `MessageSubmitted` events in time order,
lazily: every stream is generated in numpy batches (one vectorised draw of
inter-arrival gaps, domains and sizes per batch of `BATCH` messages, which
is several times faster than drawing per message in Python), the streams are
merged with `heapq.merge` on (time, stream, sequence) so ties break the same
way every run, and ids are numbered in merged order (``"m00000001"``...).
A million-message scenario therefore never holds more than one batch per
stream in memory.

Each stream draws from its own numpy generator, seeded from the `rng` the
caller passes in, in stream order: a run is a function of that seed alone.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engine.events import MessageSubmitted
from engine.makers import make_message_submitted
from engine.snapshot import by_fields
from sim.distributions import Constant, Distribution

if TYPE_CHECKING:
    from sim.scenario_schema import Table

BATCH = 16384
DEFAULT_SENDER = "sender@egress.example"
DEFAULT_SIZE = "10KB"


@dataclass(frozen=True, slots=True)
class TrafficStream:
    """One `[[traffic]]` entry.  `messages` is set for bulk streams, `rate`
    (messages per second) and `duration` for Poisson ones.  A bulk stream's
    `duration` is its `over` spread: 0 submits every message at `at`, more
    submits them evenly over that long (an injector feeding at a steady rate)."""

    name: str
    messages: int | None
    at: float
    rate: float | None
    start: float
    duration: float
    domains: tuple[tuple[str, float], ...]  # (domain, weight), weights sum to 1
    tenant: str
    campaign: str
    sender: str
    recipients: int
    size: Distribution

    def __reduce__(self) -> tuple[Any, ...]:
        return by_fields(self)  # compiled, a frozen class pickles no other way

    @property
    def kind(self) -> str:
        return "bulk" if self.messages is not None else "poisson"

    @property
    def expected_messages(self) -> float:
        """Messages this stream submits (the mean, for a Poisson stream)."""
        if self.messages is not None:
            return float(self.messages)
        assert self.rate is not None
        return self.rate * self.duration


# -- reading ---------------------------------------------------------------------


def _domains(t: Table) -> tuple[tuple[str, float], ...]:
    if t.has("domain") and t.has("domains"):
        raise t.error("domains", "give either domain or domains, not both")
    if t.has("domain"):
        dom = t.string("domain")
        if "@" in dom or " " in dom:
            raise t.expected("domain", "a domain name such as \"example.com\"", dom)
        return ((dom.lower().rstrip("."), 1.0),)
    t.raw("domain", None)
    value = t.raw("domains", None)
    what = 'a table of domain = weight, e.g. { "gmail.com" = 3, "yahoo.com" = 1 }'
    if value is None:
        raise t.error("domain", "this field is required (or give domains with weights)")
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        value = dict.fromkeys(value, 1)
    if not isinstance(value, dict) or not value:
        raise t.expected("domains", what, value)
    total = 0.0
    for dom, w in value.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not w > 0:
            raise t.error("domains", f"{dom!r}: expected a weight above 0, got {w!r}")
        total += w
    return tuple((d.lower().rstrip("."), w / total) for d, w in value.items())


def _text(t: Table, key: str) -> str:
    value = t.raw(key, "")
    if not isinstance(value, str):
        raise t.expected(key, "a string", value)
    return value


def _stream(i: int, t: Table) -> TrafficStream:
    bulk, poisson = t.has("messages"), t.has("rate")
    if bulk == poisson:
        raise t.error(
            None, "give either messages (a bulk submission at `at`) or rate and duration "
            "(Poisson arrivals), not " + ("both" if bulk else "neither")
        )
    if bulk:
        messages = t.integer("messages", minimum=0)
        at = t.duration("at", 0.0)
        rate, start, duration = None, at, t.duration("over", 0.0)
        for key in ("start", "duration"):
            if t.has(key):
                raise t.error(key, "only Poisson streams (with rate) take start and duration; "
                              "a bulk stream uses at (and over, to spread it evenly)")
    else:
        messages = None
        rate = t.rate("rate")
        duration = t.duration("duration")
        start = t.duration("start", 0.0)
        at = start
        if t.has("at"):
            raise t.error("at", "a Poisson stream (with rate) starts at start, not at")
        if t.has("over"):
            raise t.error("over", "only bulk streams (with messages) are spread with over")
    sender = t.string("sender", DEFAULT_SENDER)
    if sender.count("@") != 1 or sender.startswith("@") or sender.endswith("@"):
        raise t.expected("sender", "an address such as \"news@example.org\"", sender)
    stream = TrafficStream(
        name=t.string("name", f"traffic[{i}]"),
        messages=messages,
        at=at,
        rate=rate,
        start=start,
        duration=duration,
        domains=_domains(t),
        tenant=_text(t, "tenant"),
        campaign=_text(t, "campaign"),
        sender=sender,
        recipients=t.integer("recipients", 1, minimum=1, maximum=1000),
        size=t.distribution("size", DEFAULT_SIZE, kind="size"),
    )
    t.finish()
    return stream


def build_traffic(top: Table) -> tuple[TrafficStream, ...]:
    """Validate the scenario's ``[[traffic]]`` array."""
    return tuple(_stream(i, t) for i, t in enumerate(top.tables("traffic")))


# -- generating ------------------------------------------------------------------



def _stream_batches(
    index: int, s: TrafficStream, gen: np.random.Generator
) -> Iterator[Iterator[tuple[float, int, int, int, int]]]:
    """(at, stream index, sequence, domain index, size) of each message, in time
    order, a batch at a time (`itertools.chain.from_iterable` flattens them
    without a generator step per message)."""
    weights = np.array([w for _, w in s.domains])
    seq = 0
    t = s.start
    end = s.start + s.duration
    remaining = s.messages
    while True:
        if remaining is not None:  # bulk
            n = min(BATCH, remaining)
            if n <= 0:
                return
            remaining -= n
            if s.duration > 0:  # spread evenly over `over`
                step = s.duration / s.messages  # type: ignore[operator]
                times: list[float] = [s.at + step * k for k in range(seq, seq + n)]
            else:
                times = [s.at] * n
        else:
            assert s.rate is not None
            gaps = gen.exponential(1.0 / s.rate, BATCH)
            arr = t + np.cumsum(gaps)
            stop = int(np.searchsorted(arr, end, side="left"))
            times = arr[:stop].tolist()
            n = len(times)
            if n == 0:
                return
            t = times[-1]
        doms: list[int] = (
            [0] * n if len(weights) == 1 else gen.choice(len(weights), n, p=weights).tolist()
        )
        if isinstance(s.size, Constant):
            sizes = [round(s.size.value)] * n
        else:
            sizes = np.rint(s.size.sample_many(gen, n)).astype(np.int64).tolist()
        yield zip(times, [index] * n, range(seq, seq + n), doms, sizes, strict=True)
        seq += n
        if remaining is None and n < BATCH:
            return


def traffic_rng(scenario: Any) -> random.Random:
    """The generator a run draws its traffic from: the simulator's and the
    lab's runs of a scenario submit the same messages."""
    return random.Random(f"traffic:{scenario.seed}")


class HasTraffic(Protocol):
    """What `arrivals` reads of a scenario (`sim.scenario.Scenario` is one)."""

    @property
    def traffic(self) -> tuple[TrafficStream, ...]: ...


def message_id(number: int) -> str:
    """The id of the `number`-th message (1, 2, ...): ``f"m{number:08d}"``,
    built by concatenation, which the compiled build makes natively (a format
    specification goes through ``str.format``, a few thousand instructions)."""
    digits = str(number)
    return "m" + "0" * (8 - len(digits)) + digits


def arrivals(scenario: HasTraffic, rng: random.Random) -> Iterator[MessageSubmitted]:
    """The scenario's messages as `MessageSubmitted` events, sorted by `at`.

    Deterministic for a given `rng` state; ids are ``"m00000001"``, ... in
    arrival order; recipients are ``r<number>@<domain>`` (``r<number>.<k>@``
    for the k-th further recipient of a message).
    """
    streams = scenario.traffic
    gens = [np.random.default_rng(rng.getrandbits(64)) for _ in streams]
    sources = [chain.from_iterable(_stream_batches(i, s, g))
               for i, (s, g) in enumerate(zip(streams, gens, strict=True))]
    merged: Iterator[tuple[float, int, int, int, int]] = (
        sources[0] if len(sources) == 1 else heapq.merge(*sources))
    # Per-stream constants hoisted out of the loop: this runs once per message.
    senders = [s.sender for s in streams]
    tenants = [s.tenant for s in streams]
    campaigns = [s.campaign for s in streams]
    rcpts = [s.recipients for s in streams]
    domains = [[d for d, _ in s.domains] for s in streams]
    # the first message of every stream is checked by the real constructor; the
    # rest, valid by construction (domains and senders were checked when the
    # scenario was read), skip the checks (`engine.makers`)
    for number, (at, si, seq, di, size) in enumerate(merged, 1):
        dom = domains[si][di]
        k = rcpts[si]
        if k == 1:
            recipients: tuple[str, ...] = (f"r{number}@{dom}",)
        else:
            recipients = (f"r{number}@{dom}", *(f"r{number}.{j}@{dom}" for j in range(1, k)))
        if seq:
            yield make_message_submitted(at, message_id(number), senders[si], recipients, size,
                                         tenants[si], campaigns[si])
        else:
            yield MessageSubmitted(
                at=at,
                id=message_id(number),
                sender=senders[si],
                recipients=recipients,
                size=size,
                tenant=tenants[si],
                campaign=campaigns[si],
            )
