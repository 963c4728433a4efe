"""init.lua's Python twin: the same policy in egress's native spelling.

tests/test_lua_twin.py simulates scenarios/kumomta_policy.toml with init.lua
and with this file and requires identical records and summaries, so the two
show side by side how each KumoMTA call reads in Python.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from engine import (
    Policy,
    make_egress_path,
    make_egress_pool,
    make_egress_source,
    make_queue_config,
)
from engine.shaping_load import load_shaping

policy = Policy()
# init.lua's `shaping:setup_with_automation { no_default_files = true, extra_files =
# { 'shaping.toml' } }`: the same file, its automation rules watching every response
policy.shaping = load_shaping([("shaping.toml",
                                (Path(__file__).parent / "shaping.toml").read_text())])

_DATA = tomllib.loads((Path(__file__).parent / "providers.toml").read_text())
PROVIDERS: dict[str, tuple[str, dict[str, Any]]] = {
    domain: (name, provider["path"])
    for name, provider in _DATA["provider"].items()
    for domain in provider["domains"]
}
SOURCES = {"ip-1": "127.0.0.10", "ip-2": "127.0.0.11"}
TENANTS: dict[str, dict[str, Any]] = {
    "acme": {"egress_pool": "bulk", "retry_interval": "10min", "max_age": "3d"},
    "shop": {"egress_pool": "transactional", "retry_interval": "2min", "max_age": "1d"},
}
CAMPAIGNS: dict[str, dict[str, Any]] = {
    "receipts": {"retry_interval": "1min", "max_retry_interval": "10min"},
    "spring-news": {"max_message_rate": "50/s"},
}


@policy.on("get_egress_source")
def source(source_name: str):
    if source_name in SOURCES:
        return make_egress_source(source_name, source_address=SOURCES[source_name],
                                  ehlo_domain=f"{source_name}.mta.example.org")
    return make_egress_source(source_name)


@policy.on("get_egress_pool")
def pool(pool_name: str):
    if pool_name == "bulk":
        return make_egress_pool("bulk", entries=[{"name": "ip-1", "weight": 3},
                                                 {"name": "ip-2", "weight": 1}])
    return make_egress_pool(pool_name, entries=[{"name": "ip-1", "weight": 1}])


@policy.on("get_queue_config")
def queue(domain: str, tenant: str, campaign: str, routing_domain: str):
    params: dict[str, Any] = {"egress_pool": "bulk", "retry_interval": "20min", "max_age": "7d"}
    params.update(TENANTS.get(tenant, {}))
    params.update(CAMPAIGNS.get(campaign, {}))
    return make_queue_config(**params)


@policy.on("get_egress_path_config")
def path(domain: str, source_name: str, site_name: str):
    params: dict[str, Any] = {"connection_limit": 16, "max_message_rate": "100/s",
                              "enable_tls": "Opportunistic"}
    if domain in PROVIDERS:
        name, keys = PROVIDERS[domain]
        params["provider_name"] = name
        params.update(keys)
    if source_name == "ip-2":
        params["connection_limit"] = max(1, params["connection_limit"] // 2)
    return make_egress_path(**params)
