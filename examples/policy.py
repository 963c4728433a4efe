"""An example egress policy: per-provider limits, a weighted egress pool, AUTH.

Check what it gives for a few domains (nothing is sent, no DNS is queried):

    egress check examples/policy.py --domain gmail.com --domain example.com

The egress sources bind loopback addresses (127.0.0.10 and .11) so the
example is safe to run anywhere; on a sending server, put the public
addresses of your own machine there.
"""

from __future__ import annotations

from engine import (
    Policy,
    make_egress_path,
    make_egress_pool,
    make_egress_source,
    make_queue_config,
)

policy = Policy()

# What each big mailbox provider tolerates from one IP, roughly: fewer, slower
# connections for the strict ones.  Keyed by destination domain.
PROVIDERS: dict[str, dict[str, object]] = {
    "gmail.com": {
        "provider_name": "google",
        "connection_limit": 10,
        "max_message_rate": "3,000/hr",
        "max_deliveries_per_connection": 100,
        "enable_tls": "Required",
    },
    "yahoo.com": {
        "provider_name": "yahoo",
        "connection_limit": 5,
        "max_connection_rate": "60/min",
        "max_message_rate": "1,000/hr,max_burst=50",
        "max_deliveries_per_connection": 20,
    },
    "outlook.com": {
        "provider_name": "microsoft",
        "connection_limit": 8,
        "max_message_rate": "50/min",
        "idle_timeout": "30s",
    },
}
PROVIDERS["googlemail.com"] = PROVIDERS["gmail.com"]
PROVIDERS["hotmail.com"] = PROVIDERS["outlook.com"]

# Mail for this domain goes through a partner's relay that wants SMTP AUTH.
# The password is read from the environment when a connection needs it.
RELAY_DOMAIN = "partner.example.net"


@policy.on("get_egress_source")
def source(source_name: str):
    addresses = {"ip-1": "127.0.0.10", "ip-2": "127.0.0.11"}
    if source_name in addresses:
        return make_egress_source(
            source_name,
            source_address=addresses[source_name],
            ehlo_domain=f"{source_name}.mta.example.org",
        )
    return make_egress_source(source_name)


@policy.on("get_egress_pool")
def pool(pool_name: str):
    if pool_name == "bulk":
        # ip-2 is still warming up: it takes a quarter of the traffic.
        return make_egress_pool(
            "bulk", entries=[{"name": "ip-1", "weight": 3}, {"name": "ip-2", "weight": 1}]
        )
    return make_egress_pool(pool_name)


@policy.on("get_queue_config")
def queue(domain: str, tenant: str, campaign: str, routing_domain: str):
    return make_queue_config(
        egress_pool="bulk",
        retry_interval="10min",
        max_retry_interval="2h",
        max_age="3d",
    )


@policy.on("get_egress_path_config")
def path(domain: str, source_name: str, site_name: str):
    if domain == RELAY_DOMAIN:
        return make_egress_path(
            enable_tls="Required",
            smtp_port=587,
            smtp_auth_plain_username="egress",
            smtp_auth_plain_password={"env": "EGRESS_RELAY_PASSWORD"},
        )
    keys = dict(PROVIDERS.get(domain.lower(), {}))
    keys.setdefault("connection_limit", 32)
    keys.setdefault("max_message_rate", "100/s")
    return make_egress_path(**keys)
