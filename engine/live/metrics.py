"""Prometheus exposition of the engine's counters, on an optional port.

The engine keeps ``eng.counters``: a flat dict, metric name -> number, where a
per-path or per-provider series is spelled the way Prometheus spells it,
``'total_messages_delivered{path="unspecified->mx.example.com"}'`` (see
engine/metrics.py).  A flat dict with the labels in the key keeps the core free
of any metrics library and is trivially copied.

The server answers as kumod does: ``GET /metrics`` in Prometheus text and
``GET /metrics.json`` in KumoMTA's JSON, both rendered by engine/metrics.py
(`kumo_families`, `render_text`, `render_json`) so that any other HTTP front
can serve the same bytes: KumoMTA's names and ``service=`` labels, counters
typed as counters, and, when the source is an engine, ``scheduled_count``
per scheduled queue.  prometheus-client is not used for the exposition (it
insists on renaming counters to ``*_total``, which KumoMTA's are not).

The server runs on the driver's asyncio loop: a scrape then reads the engine
between two events, never while one is half-applied, and no lock is needed.
`MetricsCollector` still exposes the flat dict to any prometheus-client
registry, for sites that want it in their own process registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import Metric

from engine.metrics import (
    Family,
    kumo_families,
    provider_depths,
    render_json,
    render_text,
    scheduled_depths,
)

__all__ = [
    "MetricsCollector", "MetricsServer", "engine_families", "parse_counter_key",
    "start_metrics_server",
]

CountersSource = Callable[[], Mapping[str, float]]
FamiliesSource = Callable[[], list[Family]]
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = "application/json; charset=utf-8"

_KEY = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = re.compile(r"\\(.)")
_MONOTONIC_PREFIXES = ("total_", "delayed_due_to_")


def parse_counter_key(key: str) -> tuple[str, dict[str, str]]:
    """Split ``'name{a="x",b="y"}'`` into ``("name", {"a": "x", "b": "y"})``.

    Raises ValueError naming the key when it is not of that shape.
    """
    m = _KEY.match(key)
    if m is None:
        raise ValueError(f"counter key {key!r} is not of the form name or name{{label=\"v\",...}}")
    name, body = m.group(1), m.group(2)
    labels: dict[str, str] = {}
    pos = 0
    while body and pos < len(body):
        lm = _LABEL.match(body, pos)
        if lm is None or lm.end() == pos:
            raise ValueError(f"counter key {key!r}: cannot parse labels at {body[pos:]!r}")
        labels[lm.group(1)] = _UNESCAPE.sub(r"\1", lm.group(2))
        pos = lm.end()
    return name, labels


def _snapshot(source: CountersSource) -> dict[str, float]:
    # Read defensively: if the collector is used from another thread, the dict
    # may change while it is copied; a retry or two always gets a clean copy.
    for _ in range(5):
        with contextlib.suppress(RuntimeError):
            return dict(source())
    return dict(source())


class MetricsCollector:
    """A prometheus-client collector reading a counters dict on every scrape.

    `source` is a zero-argument callable returning the dict (for an engine:
    ``lambda: eng.counters``).  `namespace`, when given, prefixes every name
    (``egress_``) for sites that want them apart from a real KumoMTA.
    """

    def __init__(self, source: CountersSource, *, namespace: str = "") -> None:
        self._source = source
        self._namespace = namespace

    def collect(self) -> Iterator[Metric]:
        """Yield one family per metric name, samples in the dict's order."""
        families: dict[str, Metric] = {}
        for key, value in _snapshot(self._source).items():
            name, labels = parse_counter_key(key)
            full = self._namespace + name
            family = families.get(full)
            if family is None:
                kind = "unknown" if name.startswith(_MONOTONIC_PREFIXES) else "gauge"
                family = families[full] = Metric(full, f"egress engine counter {name}", kind)
            family.add_sample(full, labels, float(value))
        yield from families.values()

    def describe(self) -> list[Metric]:
        """Nothing up front: the names are only known once the engine runs."""
        return []


def engine_families(engine: Any) -> list[Family]:
    """An engine's metrics as KumoMTA's families, scheduled queues included."""
    counters = _snapshot(lambda: engine.counters)
    sched = getattr(engine, "sched", None)
    depths = None if sched is None else scheduled_depths(m.queue for m in list(sched))
    providers = provider_depths(engine) if hasattr(engine, "paths") else None
    return kumo_families(counters, depths, providers)


class MetricsServer:
    """A minimal HTTP server on the running asyncio loop answering GET /metrics
    and GET /metrics.json."""

    def __init__(self, families: FamiliesSource, host: str, port: int) -> None:
        self.families = families
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen; `port` 0 picks a free port, readable afterwards as `.port`."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == b"/metrics.json":
                status, ctype, body = "200 OK", JSON_TYPE, render_json(self.families()).encode()
            elif path not in (b"/metrics", b"/"):
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics\n"
            else:
                status, ctype, body = "200 OK", TEXT_TYPE, render_text(self.families()).encode()
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head)
            if method != b"HEAD":
                writer.write(body)  # not head + body: a second copy of 40,000 series
            del body
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            pass
        finally:
            writer.close()


async def start_metrics_server(
    port: int,
    host: str = "127.0.0.1",
    *,
    counters: CountersSource | Any,
    namespace: str = "",
) -> MetricsServer:
    """Serve the engine's metrics at ``http://host:port/metrics`` (and
    ``/metrics.json``) on the running loop.

    `counters` is a callable returning the counters dict, an object with a
    ``counters`` attribute (an `Engine`: its scheduled queues are counted
    too), or a dict that the caller updates.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be an integer 0..65535, not {port!r}")
    families: FamiliesSource
    if isinstance(counters, Mapping):
        fixed = counters
        families = lambda: kumo_families(_snapshot(lambda: fixed))  # noqa: E731
    elif callable(counters):
        source = counters
        families = lambda: kumo_families(_snapshot(source))  # noqa: E731
    elif hasattr(counters, "counters"):
        obj = counters
        families = lambda: engine_families(obj)  # noqa: E731
    else:
        raise TypeError(
            f"counters must be a callable returning a dict or an object with .counters, "
            f"not {type(counters).__name__}"
        )
    if namespace:
        plain = families
        families = lambda: [dataclasses.replace(f, name=namespace + f.name)  # noqa: E731
                            for f in plain()]
    server = MetricsServer(families, host, port)
    await server.start()
    return server
