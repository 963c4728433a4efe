"""A policy for trying `egress deliver` on one machine: everything to a local sink.

Start any SMTP server on 127.0.0.1:2526 (for instance ``python -m aiosmtpd -n
-l 127.0.0.1:2526``; aiosmtpd comes with the ``test`` extra), then:

    egress deliver --policy examples/live_policy.py --spool /tmp/egress-spool \\
        --listen 127.0.0.1:2525 --log-dir /tmp/egress-logs
    swaks --server 127.0.0.1:2525 --to someone@localhost

KumoMTA's default ``prohibited_hosts`` refuses 127.0.0.0/8 and ::1 (a
public MTA must never deliver to itself), so a policy that delivers to a
local server has to empty it, as here.  Do not use this on the internet.
"""

from __future__ import annotations

from engine import Policy, make_egress_path, make_queue_config

policy = Policy()


@policy.on("get_egress_path_config")
def path(domain: str, source_name: str, site_name: str):
    return make_egress_path(
        smtp_port=2526,
        prohibited_hosts=[],  # allow loopback: the default refuses 127.0.0.0/8 and ::1
        enable_tls="Opportunistic",
        enable_mta_sts=False,
        connection_limit=8,
        idle_timeout="5s",
    )


@policy.on("get_queue_config")
def queue(domain: str, tenant: str, campaign: str, routing_domain: str):
    return make_queue_config(retry_interval="30s", max_retry_interval="10min", max_age="1d")
