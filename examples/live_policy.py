"""A policy for trying `egress deliver` on one machine: everything to a local sink.

The sink is `egress lab` serving examples/local_world.toml: a DNS server on
127.0.0.1:10053 whose MX for ``local.test`` is ``mx.local.test`` (127.0.0.10),
and an SMTP server there on port 2526 that accepts everything.  In three
terminals (README.md, "Deliver", runs the same session in one script):

    egress lab examples/local_world.toml --dns-port 10053 --port 2526
    egress deliver --policy examples/live_policy.py --spool out/spool \\
        --listen 127.0.0.1:2525 --resolver 127.0.0.1:10053 --log-dir out/logs
    python3 -c "import smtplib; smtplib.SMTP('127.0.0.1', 2525).sendmail(
        'me@example.com', ['someone@local.test'], 'Subject: hi\\r\\n\\r\\nhello\\r\\n')"

and out/logs holds a ``"type": "Delivery"`` record for someone@local.test.

KumoMTA's default ``prohibited_hosts`` refuses 127.0.0.0/8 and ::1 (a
public MTA must never deliver to itself), so a policy that delivers to a
local server has to empty it, as here; the lab's certificate is its own CA's,
so STARTTLS is used without checking it (``OpportunisticInsecure``; give
``--tls-cafile`` with the CA the lab prints to check it).  Do not use this
on the internet.
"""

from __future__ import annotations

from engine import Policy, make_egress_path, make_queue_config

policy = Policy()


@policy.on("get_egress_path_config")
def path(domain: str, source_name: str, site_name: str):
    return make_egress_path(
        smtp_port=2526,
        prohibited_hosts=[],  # allow loopback: the default refuses 127.0.0.0/8 and ::1
        enable_tls="OpportunisticInsecure",  # the lab's certificate is self-made
        enable_mta_sts=False,
        connection_limit=8,
        idle_timeout="5s",
    )


@policy.on("get_queue_config")
def queue(domain: str, tenant: str, campaign: str, routing_domain: str):
    return make_queue_config(retry_interval="30s", max_retry_interval="10min", max_age="1d")
