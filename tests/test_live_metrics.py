"""engine/live/metrics.py: the counters dict, scraped over real HTTP on loopback,
in kumod's shape (crates/kumod/src/metrics_helper.rs, crates/kumo-prometheus/src/lib.rs)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from engine.live.metrics import MetricsCollector, parse_counter_key, start_metrics_server


class FakeEngine:
    """Stands in for Engine: only `.counters` is read."""

    def __init__(self) -> None:
        self.counters: dict[str, float] = {
            "total_messages_delivered": 5,
            'total_messages_delivered{path="unspecified->mx.example.com"}': 3,
            'total_messages_delivered{path="unspecified->mx.other.net"}': 2,
            'total_messages_fail{provider="google"}': 1,
            "ready_count": 7,
            'ready_count{path="unspecified->mx.example.com"}': 7,
        }


def scrape(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


def test_scrape_exposes_counters_with_kumomta_names_and_labels() -> None:
    eng = FakeEngine()

    async def go() -> tuple[str, str, str]:
        server = await start_metrics_server(0, counters=eng)
        async with server:
            url = f"http://127.0.0.1:{server.port}/metrics"
            _, ctype, first = await asyncio.to_thread(scrape, url)
            eng.counters["total_messages_delivered"] = 6
            eng.counters['total_messages_delivered{path="unspecified->mx.other.net"}'] = 3
            _, _, second = await asyncio.to_thread(scrape, url)
            return ctype, first, second

    ctype, first, second = asyncio.run(go())
    assert ctype.startswith("text/plain; version=")
    svc = "smtp_client:unspecified->mx.example.com@smtp_client"
    assert (
        "# HELP total_messages_delivered total number of messages ever delivered\n"
        "# TYPE total_messages_delivered counter\n"
        'total_messages_delivered{service="smtp_client"} 5\n'
        f'total_messages_delivered{{service="{svc}"}} 3\n'
        "# HELP "
    ) in first
    # the path mx.other.net has no ready queue any more: its series is pruned
    assert "mx.other.net" not in first
    assert 'total_messages_fail_by_provider{provider="google"} 1\n' in first
    assert ("# TYPE ready_count gauge\n"
            'ready_count{service="smtp_client"} 7\n'
            f'ready_count{{service="{svc}"}} 7\n') in first
    assert 'total_messages_delivered{service="smtp_client"} 6\n' in second


def test_callable_source_namespace_and_unknown_path() -> None:
    values = {"connection_count": 2}

    async def go() -> tuple[str, int]:
        server = await start_metrics_server(0, counters=lambda: values, namespace="egress_")
        async with server:
            _, _, body = await asyncio.to_thread(
                scrape, f"http://127.0.0.1:{server.port}/metrics")
            with pytest.raises(urllib.error.HTTPError) as err:
                await asyncio.to_thread(scrape, f"http://127.0.0.1:{server.port}/nope")
            err.value.close()
            return body, err.value.code

    body, code = asyncio.run(go())
    assert ("# TYPE egress_connection_count gauge\n"
            'egress_connection_count{service="smtp_client"} 2\n') in body
    assert code == 404


def test_parse_counter_key() -> None:
    assert parse_counter_key("ready_count") == ("ready_count", {})
    assert parse_counter_key('x{path="a->b",provider="p\\"q"}') == (
        "x", {"path": "a->b", "provider": 'p"q'})
    with pytest.raises(ValueError, match=r"counter key 'bad name' is not of the form"):
        parse_counter_key("bad name")
    with pytest.raises(ValueError, match=r"cannot parse labels at 'path=unquoted'"):
        parse_counter_key("x{path=unquoted}")


def test_collector_directly_and_bad_arguments() -> None:
    [family] = list(MetricsCollector(lambda: {"total_messages_received": 4}).collect())
    assert (family.name, family.type) == ("total_messages_received", "unknown")
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("total_messages_received", {}, 4.0)]

    async def bad(port: object, counters: object) -> None:
        await start_metrics_server(port, counters=counters)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match=r"metrics port must be an integer 0\.\.65535, not 70000"):
        asyncio.run(bad(70000, {}))
    with pytest.raises(TypeError, match="not int"):
        asyncio.run(bad(0, 3))
