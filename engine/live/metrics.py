"""Prometheus exposition of the engine's counters, on an optional port.

The engine keeps ``eng.counters``: a flat dict, metric name -> number, where a
per-path or per-provider series is spelled the way Prometheus spells it,
``'total_messages_delivered{path="unspecified->mx.example.com"}'`` (see
engine/metrics.py).  A flat dict with the labels in the key keeps the core free
of any metrics library and is trivially copied; this module parses the keys
back into families on each scrape.  Unlabelled keys that also appear labelled
(``ready_count`` beside ``ready_count{path=...}``) are exposed as they are: the
unlabelled sample is the sum, as KumoMTA's own endpoint shows it.

Names are kept exactly as KumoMTA names them so existing dashboards work.
prometheus-client insists on a ``_total`` suffix for the "counter" type, so the
monotonic totals (``total_*``, ``delayed_due_to_*``) are exposed as untyped
rather than renamed; the levels (``ready_count``, ``connection_count``, ...)
are gauges.

The server runs on the driver's asyncio loop, not in prometheus-client's
thread: a scrape then reads the engine between two events, never while one is
half-applied, and no lock is needed.  `MetricsCollector` can also be registered
with any registry (e.g. for `prometheus_client.start_http_server`) when that
trade-off is acceptable.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

__all__ = ["MetricsCollector", "MetricsServer", "parse_counter_key", "start_metrics_server"]

CountersSource = Callable[[], Mapping[str, float]]

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


class MetricsServer:
    """A minimal HTTP server on the running asyncio loop answering GET /metrics."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
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
            elif path not in (b"/metrics", b"/"):
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics\n"
            else:
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head if method == b"HEAD" else head + body)
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
    """Serve the engine's counters at ``http://host:port/metrics`` on the running loop.

    `counters` is a callable returning the counters dict, an object with a
    ``counters`` attribute (an `Engine`), or a dict that the caller updates.
    Only this server's registry is served (not prometheus-client's global
    one), so two engines in one process do not mix.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be an integer 0..65535, not {port!r}")
    if isinstance(counters, Mapping):
        fixed = counters
        source: CountersSource = lambda: fixed  # noqa: E731
    elif callable(counters):
        source = counters
    elif hasattr(counters, "counters"):
        obj = counters
        source = lambda: obj.counters  # noqa: E731
    else:
        raise TypeError(
            f"counters must be a callable returning a dict or an object with .counters, "
            f"not {type(counters).__name__}"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(source, namespace=namespace))
    server = MetricsServer(registry, host, port)
    await server.start()
    return server
