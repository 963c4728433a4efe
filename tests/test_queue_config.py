"""Queue config, egress sources and pools: defaults and validation."""

from __future__ import annotations

import pickle

import pytest

from engine.errors import ConfigError
from engine.queue_config import (
    EgressPool,
    QueueConfig,
    make_egress_pool,
    make_egress_source,
    make_queue_config,
)
from engine.throttle import Throttle


def test_queue_defaults() -> None:
    q = make_queue_config()
    assert (q.retry_interval, q.max_retry_interval, q.max_age) == (1200.0, None, 604800.0)
    assert (q.egress_pool, q.max_message_rate, q.pool) == (None, None, "unspecified")
    assert q == QueueConfig()


def test_queue_values() -> None:
    q = make_queue_config(retry_interval="5min", max_retry_interval="2h", max_age="3d",
                          egress_pool="bulk", max_message_rate="100/min")
    assert (q.retry_interval, q.max_retry_interval, q.max_age) == (300.0, 7200.0, 259200.0)
    assert (q.pool, q.max_message_rate) == ("bulk", Throttle(100, 60.0))
    assert q.to_dict() == {"retry_interval": 300.0, "max_retry_interval": 7200.0,
                           "max_age": 259200.0, "egress_pool": "bulk",
                           "max_message_rate": "100/m"}
    assert q.replace(max_age="1d").max_age == 86400.0
    assert pickle.loads(pickle.dumps(q)) == q


@pytest.mark.parametrize(
    ("keys", "msg"),
    [
        ({"retry_interval": 0}, "retry_interval: 0 is not valid; expected a duration above 0"),
        ({"retry_interval": "soon"}, "retry_interval: 'soon' is not a valid duration"),
        ({"max_age": -1}, "max_age: -1 is not a valid duration"),
        ({"max_retry_interval": "1min"}, "max_retry_interval: 60.0 s is below retry_interval"),
        ({"egress_pool": ""}, "egress_pool: '' is not valid"),
        ({"max_message_rate": "fast"}, "max_message_rate: 'fast' is not a valid throttle"),
        ({"retry_intervl": "1m"}, "unknown key 'retry_intervl'; did you mean 'retry_interval'?"),
    ],
)
def test_queue_errors(keys: dict, msg: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_queue_config(**keys)
    assert msg in str(err.value)


def test_source() -> None:
    s = make_egress_source("ip-1", source_address="2001:DB8::1", ehlo_domain="mta.example.org",
                           remote_port=2525)
    assert (s.name, s.source_address, s.ehlo_domain, s.remote_port) == (
        "ip-1", "2001:db8::1", "mta.example.org", 2525)
    assert make_egress_source().name == "unspecified"
    assert make_egress_source("x").to_dict() == {
        "name": "x", "source_address": None, "ehlo_domain": None, "remote_port": None}


@pytest.mark.parametrize(
    ("args", "keys", "msg"),
    [
        (("",), {}, "name: '' is not valid"),
        (("s",), {"source_address": "10.0.0.300"}, "source_address: '10.0.0.300' is not valid"),
        (("s",), {"ehlo_domain": "a b"}, "ehlo_domain: 'a b' is not valid"),
        (("s",), {"remote_port": 0}, "remote_port: 0 is not valid"),
        (("s",), {"remote_port": True}, "remote_port: True is not valid"),
        (("s",), {"source_adress": "1.2.3.4"}, "did you mean 'source_address'?"),
    ],
)
def test_source_errors(args: tuple, keys: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg.replace("?", r"\?")):
        make_egress_source(*args, **keys)


def test_pool() -> None:
    p = make_egress_pool("bulk", entries=[{"name": "ip-1", "weight": 3}, {"name": "ip-2"}, "ip-3"])
    assert p.entries == (("ip-1", 3), ("ip-2", 1), ("ip-3", 1))
    assert p.total_weight == 5
    assert make_egress_pool() == EgressPool(name="unspecified", entries=(("unspecified", 1),))
    assert make_egress_pool("x").entries == (("unspecified", 1),)
    assert p.to_dict() == {"name": "bulk", "entries": [
        {"name": "ip-1", "weight": 3},
        {"name": "ip-2", "weight": 1},
        {"name": "ip-3", "weight": 1},
    ]}


@pytest.mark.parametrize(
    ("entries", "msg"),
    [
        ([], "entries is empty"),
        ([{"name": "a", "weight": 0}], r"entries\[0\] weight: 0 is not valid; expected an integer"),
        ([{"name": "a", "weight": 1.5}], r"entries\[0\] weight: 1.5 is not valid"),
        ([{"name": "a"}, {"name": "a"}], "source 'a' is listed twice"),
        ([{"nam": "a"}], r"entries\[0\]: \{'nam': 'a'\} is not valid"),
        ("ip-1", "entries: 'ip-1' is not valid; expected a list"),
        ([5], r"entries\[0\]: 5 is not valid"),
    ],
)
def test_pool_errors(entries: object, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        make_egress_pool("bulk", entries=entries)
