"""The policy of scenarios/ip_warmup.toml: one pool of a new and a warm IP.

The warm-up schedule itself is data in shaping.toml beside this file; the
policy only says which sources share the pool (1:1, so ip-new would take half
the mail if its caps let it).
"""

from __future__ import annotations

from typing import Any

from engine import (
    Policy,
    make_egress_path,
    make_egress_pool,
    make_egress_source,
    make_queue_config,
)

policy = Policy()


@policy.on("get_egress_source")
def source(name: str) -> Any:
    return make_egress_source(name, ehlo_domain=f"{name}.mta.example.org")


@policy.on("get_egress_pool")
def pool(name: str) -> Any:
    return make_egress_pool(name, entries=[{"name": "ip-new", "weight": 1},
                                           {"name": "ip-warm", "weight": 1}])


@policy.on("get_queue_config")
def queue(domain: str, tenant: str, campaign: str, routing_domain: str) -> Any:
    return make_queue_config(egress_pool="warming", retry_interval="20min", max_age="4d")


@policy.on("get_egress_path_config")
def path(domain: str, source_name: str, site_name: str) -> Any:
    return make_egress_path(connection_limit=4, enable_mta_sts=False)
