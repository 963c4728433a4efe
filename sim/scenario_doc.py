"""docs/SCENARIOS.md, generated: ``python -m sim.scenario_doc [--check] [PATH]``.

The scenario fields come from `sim.scenario_fields` (held against the
readers by tests/test_scenario_doc.py), the `[egress_path]` and `[queue]`
keys from the engine's own config classes (`EgressPathConfig.KEYS` and its
field defaults, `QueueConfig`), so the page cannot list a field the
simulator does not take.  ``--check`` exits 1 when the file on disk differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from sim.scenario_fields import SECTIONS, Field, Section

DOC = Path(__file__).resolve().parent.parent / "docs" / "SCENARIOS.md"

EGRESS_MEANINGS: dict[str, str] = {
    "connection_limit": "connections open at once on the path",
    "consecutive_connection_failures_before_delay": "failed connects in a row before the "
    "ready queue is delayed",
    "ehlo_domain": "the name said in EHLO",
    "enable_tls": "Opportunistic, OpportunisticInsecure, Required, RequiredInsecure or Disabled",
    "enable_mta_sts": "honour the domain's MTA-STS policy",
    "enable_dane": "honour DANE TLSA records",
    "connect_timeout": "how long to wait for the TCP connection",
    "banner_timeout": "how long to wait for the banner",
    "starttls_timeout": "how long to wait for the TLS handshake",
    "ehlo_timeout": "how long to wait for EHLO's reply",
    "mail_from_timeout": "how long to wait for MAIL's reply",
    "rcpt_to_timeout": "how long to wait for a RCPT's reply",
    "data_timeout": "how long to wait for DATA's reply",
    "data_dot_timeout": "how long to wait for the final dot's reply",
    "rset_timeout": "how long to wait for RSET's reply",
    "idle_timeout": "how long an idle connection is kept open",
    "auth_timeout": "how long to wait for AUTH's reply",
    "max_connection_rate": 'throttle on new connections, e.g. "100/min"',
    "max_message_rate": 'throttle on messages sent, e.g. "100/s"',
    "max_deliveries_per_connection": "messages sent on one connection before it is closed",
    "max_ready": "messages the ready queue holds; more are delayed",
    "prohibited_hosts": "CIDR blocks never connected to (the message bounces)",
    "skip_hosts": "CIDR blocks whose MX hosts are skipped",
    "smtp_port": "the remote port",
    "smtp_auth_plain_username": "AUTH PLAIN user name",
    "smtp_auth_plain_password": "AUTH PLAIN password (a key source)",
    "allow_smtp_auth_plain_without_tls": "send AUTH PLAIN in clear",
    "suspended": "the path sends nothing",
    "aggressive_connection_opening": "open before taking a message (refused if true)",
    "tls_prefer_openssl": "use OpenSSL rather than the default TLS stack",
    "openssl_cipher_list": "OpenSSL cipher list (TLS 1.2)",
    "openssl_cipher_suites": "OpenSSL cipher suites (TLS 1.3)",
    "openssl_options": "OpenSSL options",
    "rustls_cipher_suites": "cipher suites of the default TLS stack",
    "enable_pipelining": "pipeline MAIL/RCPT/DATA when offered",
    "enable_rset": "RSET between messages on one connection",
    "max_recipients_per_batch": "recipients per transaction",
    "additional_connection_limits": "further named connection limits shared across paths",
    "additional_message_rate_throttles": "further named message throttles shared across paths",
    "ip_lookup_strategy": "which address families to try, in which order",
    "reconnect_strategy": "TerminateSession, ReconnectSameHost or ConnectNextHost",
    "try_next_host_on_transport_error": "retry a message on the next host at once after a "
    "transport error or 421 mid-transaction",
    "opportunistic_tls_reconnect_on_failed_handshake": "reconnect in clear after a failed "
    "opportunistic handshake",
    "provider_name": "the provider the path counts under",
    "remember_broken_tls": "after a failed handshake, skip STARTTLS on the site this long "
    "(opportunistic modes)",
    "tls_certificate": "client certificate to present (a key source, PEM; with tls_private_key)",
    "tls_private_key": "its private key (a key source, PEM; with tls_certificate)",
    "source_selection_rate": "how often a pool may pick this source for the site "
    "(IP warm-up; spent: the pool's other sources take the message)",
    "additional_source_selection_rates": "further named selection rates shared across paths",
    "refresh_interval": "how often the path's config is asked again (refresh_strategy Ttl)",
    "refresh_strategy": "Ttl (every refresh_interval) or Epoch (only at a policy reload)",
    "dispatcher_progress_watchdog_timeout": "abort a connection that made no progress for "
    "this long",
}
# Examples where the default is none or says nothing; else the default is the example.
EGRESS_EXAMPLES: dict[str, str] = {
    "connection_limit": "8", "max_message_rate": '"100/s"', "max_connection_rate": '"10/s"',
    "enable_tls": '"Required"', "idle_timeout": '"30s"', "max_ready": "5000",
    "ehlo_domain": '"mta.example.org"', "smtp_auth_plain_username": '"user"',
    "smtp_auth_plain_password": '"secret"', "provider_name": '"microsoft"',
    "remember_broken_tls": '"1h"', "tls_certificate": '"/etc/egress/client.pem"',
    "tls_private_key": '"/etc/egress/client.key"',
    "additional_connection_limits": '{ "shared" = 100 }',
    "additional_message_rate_throttles": '{ "shared" = "1000/min" }',
    "source_selection_rate": '"100/day,max_burst=1"',
    "additional_source_selection_rates": '{ "new-ip-overall" = "10,000/day" }',
    "skip_hosts": '["10.0.0.0/8"]', "prohibited_hosts": '["127.0.0.0/8", "::1"]',
    "rustls_cipher_suites": '["TLS13_AES_256_GCM_SHA384"]',
    "openssl_cipher_list": '"ECDHE+AESGCM"', "openssl_cipher_suites": '"TLS_AES_256_GCM_SHA384"',
    "openssl_options": '"NO_TLSV1"', "ip_lookup_strategy": '"Ipv4Only"',
    "reconnect_strategy": '"ReconnectSameHost"', "smtp_port": "2525", "suspended": "true",
    "refresh_strategy": '"Epoch"', "dispatcher_progress_watchdog_timeout": '"5min"',
}
QUEUE_MEANINGS: dict[str, tuple[str, str]] = {
    "retry_interval": ("first retry after a transient failure", '"10min"'),
    "max_retry_interval": ("the retry interval doubles up to this", '"2h"'),
    "max_age": ("a message older than this expires", '"3d"'),
    "egress_pool": ("the pool of egress sources the queue sends from", '"pool-a"'),
    "max_message_rate": ("throttle on the queue's messages", '"1000/h"'),
    "protocol": ("smart hosts tried in order instead of the domain's MX (each a host of "
                 "[hosts], by name or by address)",
                 '{ smtp = { mx_list = ["mx1.example.com"] } }'),
}


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _fields_table(fields: tuple[Field, ...]) -> list[str]:
    out = [_row(("field", "type", "default", "meaning", "example")),
           _row(("---",) * 5)]
    for f in fields:
        out.append(_row((f"`{f.name}`", f.type, f.default, f.meaning, f"`{f.example}`")))
    return out


def _section(s: Section) -> list[str]:
    return [f"## {s.title}", "", s.about, "", *_fields_table(s.fields), ""]


_TYPES = {
    "int": "integer", "float": "duration", "bool": "boolean", "str": "string",
    "Throttle": 'throttle ("100/s", "1,000/hr")', "CidrSet": "array of CIDR blocks",
    "KeySource": "key source (a string, or a table such as { key_data = \"...\" })",
    "tuple[str, ...]": "array of strings", "Mapping[str, int]": "table of name = integer",
    "Mapping[str, Throttle]": "table of name = throttle",
    "EnableTls": "string", "IpLookupStrategy": "string", "ReconnectStrategy": "string",
    "RefreshStrategy": "string",
}


def _type_text(annotation: Any) -> str:
    text = str(annotation)
    optional = text.endswith(" | None")
    base = text.removesuffix(" | None")
    return _TYPES.get(base, base) + (" or none" if optional else "")


def _value_text(value: Any) -> str:
    """A default as it would be written in a scenario."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f'"{value:g}s"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int):
        return str(value)
    if not value:
        return "{}" if hasattr(value, "items") else "[]"
    text = str(value)
    if text.startswith("CidrSet("):
        return "[" + ", ".join(f'"{c}"' for c in text[9:-2].replace("'", "").split(", ")) + "]"
    return text


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return _value_text(f.default)
    return _value_text(f.default_factory())  # type: ignore[misc,operator]


def _meaning(table: dict[str, Any], key: str, name: str) -> Any:
    """The documented meaning of an engine config key; a key added to the engine
    without one is named, with where to write it."""
    try:
        return table[key]
    except KeyError:
        raise KeyError(f"config key {key!r} has no meaning in sim/scenario_doc.py {name}: "
                       "add one, then run python -m sim.scenario_doc") from None


def egress_fields() -> tuple[Field, ...]:
    """Every make_egress_path key a scenario can set, with the engine's type and
    default (the KumoMTA keys refused away from their default are named in a note)."""
    from engine.config import EgressPathConfig

    by_name = {f.name: f for f in dataclasses.fields(EgressPathConfig)}
    return tuple(
        Field(k, _type_text(by_name[k].type), _default_text(by_name[k]),
              _meaning(EGRESS_MEANINGS, k, "EGRESS_MEANINGS"),
              EGRESS_EXAMPLES.get(k) or _default_text(by_name[k]))
        for k in EgressPathConfig.KEYS if k not in _refused()
    )


def _refused() -> tuple[str, ...]:
    from engine.path_keys import INERT_KEYS

    return tuple(k for k in INERT_KEYS if k != "aggressive_connection_opening")


def queue_fields() -> tuple[Field, ...]:
    """Every make_queue_config key, with the engine's type and default."""
    from engine.queue_config import QueueConfig

    by_name = {f.name: f for f in dataclasses.fields(QueueConfig)}
    return tuple(
        Field(k, _type_text(by_name[k].type), _default_text(by_name[k]),
              *_meaning(QUEUE_MEANINGS, k, "QUEUE_MEANINGS"))
        for k in QueueConfig.KEYS
    )


HEAD = """# Scenario files: every field

<!-- Generated by `python -m sim.scenario_doc` from sim/scenario_fields.py and the
engine's config classes; edit those, not this page (tests/test_scenario_doc.py fails
when they differ). -->

A scenario (TOML) describes the traffic, the remote world and the policy of one run;
`egress simulate` runs it on a simulated clock, `egress lab` as real servers on
loopback. Unknown fields anywhere are errors, and each error names the file, the
field's path (such as `hosts."mx1.example.com".outages[0].probability`) and what was
expected. Times are durations of simulated time from the start (0). Probabilities
are numbers from 0 to 1. An SMTP reply is written whole, on one line:
`"451 4.7.1 Try again later"` (code, optional enhanced code, text).

An example: Outlook tempfails 30 % of transactions for an hour, in its own words.

```toml
name = "outlook-pushback"
horizon = "3h"

[[traffic]]
domain = "outlook.com"
rate = "600/min"
duration = "2h"

[domains."outlook.com"]
mx = ["mx1.outlook.com"]

[hosts."mx1.outlook.com"]
max_connections = 20
tempfail_rcpt = { probability = 0.01, reply = "452 4.2.2 Mailbox full" }
outages = [{ start = "30m", end = "1h30m", mode = "tempfail", probability = 0.3,
             reply = "451 4.7.500 Server busy. Please try again later" }]
```

"""


def render() -> str:
    """The whole page."""
    lines = [HEAD.rstrip("\n"), ""]
    for s in SECTIONS:
        lines.extend(_section(s))
    lines.extend(_section(Section(
        "egress_path", "[egress_path]",
        "make_egress_path keys (KumoMTA's names) for every egress path; "
        "`[egress_path.domains.\"NAME\"]` takes the same keys for the path of one domain. "
        "Durations may be written as strings; throttles as \"N/period\". "
        "Also parsed, but refused unless left at KumoMTA's default because egress does not "
        "act on them yet (docs/KUMOMTA.md): " + ", ".join(f"`{k}`" for k in _refused()) + ".",
        egress_fields())))
    lines.extend(_section(Section(
        "queue", "[queue]", "make_queue_config keys for every scheduled queue.",
        queue_fields())))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.scenario_doc",
        description="Write docs/SCENARIOS.md from the scenario schema (or check it).")
    parser.add_argument("path", nargs="?", default=str(DOC), help="where the page goes")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the page on disk differs from the schema")
    args = parser.parse_args(argv)
    path = Path(args.path)
    text = render()
    if args.check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            print(f"{path} differs from the scenario schema: run python -m sim.scenario_doc",
                  file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
