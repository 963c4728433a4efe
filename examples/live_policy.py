"""A policy for trying `egress deliver` on one machine: everything to a local sink.

Two ways to run it (README.md, "Deliver", runs both sessions as scripts):

1. Mail to ``someone@localhost`` (or to a domain literal, ``someone@[127.0.0.1]``)
   goes to whatever SMTP server listens on 127.0.0.1 port 2526, with no DNS:
   the queue config of ``localhost`` names that address as its smart host
   (KumoMTA's ``make_queue_config { protocol = { smtp = { mx_list = ... } } }``),
   and a domain literal is its own address.  Any sink will do::

       python3 -m aiosmtpd -n -l 127.0.0.1:2526
       egress deliver --policy examples/live_policy.py --spool out/spool \\
           --listen 127.0.0.1:2525 --log-dir out/logs
       python3 -c "import smtplib; smtplib.SMTP('127.0.0.1', 2525).sendmail(
           'me@example.com', ['someone@localhost'], 'Subject: hi\\r\\n\\r\\nhello\\r\\n')"

2. Mail to ``someone@local.test`` is routed by its MX, as on the internet: start
   `egress lab` serving examples/local_world.toml (a DNS server on
   127.0.0.1:10053 whose MX for ``local.test`` is ``mx.local.test``,
   127.0.0.10, and an SMTP server there on port 2526) and give `egress
   deliver` ``--resolver 127.0.0.1:10053``.

Either way out/logs holds a ``"type": "Delivery"`` record for the recipient.

KumoMTA's default ``prohibited_hosts`` refuses 127.0.0.0/8 and ::1 (a
public MTA must never deliver to itself), smart hosts included, so a policy
that delivers to a local server has to empty it, as here; a sink's
certificate (the lab's is its own CA's) is not checked
(``OpportunisticInsecure``; give ``--tls-cafile`` with the CA the lab prints
to check it).  Do not use this on the internet.
"""

from __future__ import annotations

from engine import Policy, make_egress_path, make_queue_config

policy = Policy()

LOCAL_SINK = {"smtp": {"mx_list": ["[127.0.0.1]"]}}  # a smart host: no MX lookup


@policy.on("get_egress_path_config")
def path(domain: str, source_name: str, site_name: str):
    return make_egress_path(
        smtp_port=2526,
        prohibited_hosts=[],  # allow loopback: the default refuses 127.0.0.0/8 and ::1
        enable_tls="OpportunisticInsecure",  # a local sink's certificate is self-made
        enable_mta_sts=False,
        connection_limit=8,
        idle_timeout="5s",
    )


@policy.on("get_queue_config")
def queue(domain: str, tenant: str, campaign: str, routing_domain: str):
    return make_queue_config(retry_interval="30s", max_retry_interval="10min", max_age="1d",
                             protocol=LOCAL_SINK if domain == "localhost" else None)
