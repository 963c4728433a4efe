"""Every field a scenario file may hold: its type, default, meaning and an example.

This is the scenario format's reference, as data: `sim.scenario_doc` renders
it into docs/SCENARIOS.md, and tests/test_scenario_doc.py holds it against
the readers (`sim.scenario`, `sim.scenario_world`, `sim.traffic`): every
field a reader accepts is declared here, every field declared here is read,
and every example is a valid value.  The `[egress_path]` and `[queue]` keys
are the engine's own and are listed from its config classes, so they are
not repeated here.

A section's `path` is the table's path with ``<name>`` for a name the user
chooses and ``[]`` for an element of an array of tables, the shape the tests
reduce a real path to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Field:
    """One field: `example` is a TOML value, as written in a file."""

    name: str
    type: str
    default: str
    meaning: str
    example: str


@dataclass(frozen=True, slots=True)
class Section:
    """One table of the format and its fields."""

    path: str
    title: str
    about: str
    fields: tuple[Field, ...]


DURATION = 'duration (30, "250ms", "2min", "1h30m")'
LATENCY = 'duration, or {median, p99} (lognormal) or {min, max} (uniform)'
FAULT = "probability, or {probability, reply}"

_LATENCY_WHY = {
    "connect_latency": "TCP connect and the banner: time from the attempt to the 220",
    "command_latency": "time to answer a command, or one pipelined batch of them",
    "data_latency": "time to answer the final dot (plus size / data_bandwidth)",
    "tls_latency": "the TLS handshake after STARTTLS",
}
_LATENCY_DEFAULT = {"connect_latency": "20ms", "command_latency": "10ms",
                    "data_latency": "50ms", "tls_latency": "20ms"}

_FAULTS = (
    ("tempfail_mail", "MAIL is answered 451 4.3.0", "0.02"),
    ("tempfail_rcpt", "a RCPT is answered 450 4.2.1",
     '{ probability = 0.02, reply = "452 4.2.2 Mailbox full" }'),
    ("permfail_rcpt", "a RCPT is answered 550 5.1.1 (with tempfail_rcpt at most 1)", "0.005"),
    ("tempfail_data", "the dot is answered 451 4.3.0", "0.01"),
    ("permfail_data", "the dot is answered 554 5.7.1 (with tempfail_data at most 1)",
     '{ probability = 0.001, reply = "550 5.7.1 Message looks like spam" }'),
)

HOST_FIELDS: tuple[Field, ...] = (
    Field("address", "IP address", "one made up (192.0.2.0/24, ...)",
          "the host's address in DNS answers (not with addresses)", '"192.0.2.10"'),
    Field("addresses", "array of IP addresses", "one made up",
          "several A/AAAA addresses for the host (not with address)",
          '["192.0.2.10", "2001:db8::10"]'),
    *(Field(k, LATENCY, f'"{_LATENCY_DEFAULT[k]}"', _LATENCY_WHY[k],
            '{ median = "20ms", p99 = "200ms" }' if k == "connect_latency" else '"15ms"')
      for k in ("connect_latency", "command_latency", "data_latency", "tls_latency")),
    Field("data_bandwidth", 'bytes per second (12500000, "10MB/s")', "none (not modelled)",
          "how fast the host reads a message body", '"10MB/s"'),
    Field("max_connections", "integer >= 1", "none (unlimited)",
          "connections held at once; beyond it the banner is 421 4.7.0", "50"),
    Field("refuse_connections", "probability (0 to 1)", "0",
          "chance that a connection attempt is refused", "0.01"),
    *(Field(k, FAULT, "0", f"chance that {why}; a table gives the reply too", ex)
      for k, why, ex in _FAULTS),
    Field("starttls", "boolean", "true", "the host offers STARTTLS", "false"),
    Field("tls_failure", "probability (0 to 1)", "0",
          "chance that a TLS handshake fails", "0.05"),
    Field("pipelining", "boolean", "true",
          "the host offers PIPELINING (else one round trip per command)", "false"),
    Field("auth", "boolean", "false", "the host offers AUTH PLAIN LOGIN", "true"),
    Field("outages", "array of outage tables", "[]",
          "windows in which the host misbehaves (below)",
          '[{ start = "10m", end = "25m", mode = "refuse" }]'),
    Field("pushback", "pushback table", "none (no per-source limits)",
          "per source address: a message rate, a connection count and a reputation the "
          "host enforces (below)", '{ preset = "yahoo_like", message_rate = "100/min" }'),
)

_REPUTATION_WHY = "lost reputation raises the chance of a deferral"
PUSHBACK_FIELDS: tuple[Field, ...] = (
    Field("preset", '"yahoo_like", "gmail_like" or "outlook_like"', "none",
          "start from an ILLUSTRATIVE provider model (sim/pushback_presets.py; made-up "
          "numbers, not measured); the table's other fields override it", '"gmail_like"'),
    Field("message_rate", 'throttle ("300/min", "10/s,max_burst=50")', "none (no limit)",
          "MAILs accepted per source address (a GCRA, as the engine throttles); one over "
          "it is answered rate_reply", '"300/min"'),
    Field("rate_reply", "4xx SMTP reply; {source} is the source address",
          '"421 4.7.0 [TS01] Messages from {source} temporarily deferred due to unexpected '
          'volume or user complaints"', "the reply to a MAIL over message_rate",
          '"421 4.7.0 [TS01] Messages from {source} temporarily deferred"'),
    Field("connections", "integer >= 1", "none (no limit)",
          "connections one source address may hold; beyond it the banner is "
          "connection_reply", "10"),
    Field("connection_reply", "4xx SMTP reply; {source} is the source address",
          '"421 4.7.0 Too many concurrent connections from {source}"',
          "the banner beyond connections", '"421 4.7.0 [TS02] Too many connections"'),
    Field("reputation", "number 0 to 1", "1",
          "each source address's reputation when the host first sees it", "0.9"),
    Field("over_rate_penalty", "number 0 to 1", "0",
          "reputation lost per MAIL over message_rate", "0.005"),
    Field("complaint_rate", "number 0 to 1", "0",
          "complaints per delivered message (their expected cost is taken; no draw)", "0.002"),
    Field("complaint_penalty", "number 0 to 1", "0", "reputation lost per complaint", "0.05"),
    Field("recovery", DURATION + ", above 0", '"1h"',
          "half-life of lost reputation: half of it comes back in this long", '"4h"'),
    Field("reputation_deferral", "probability (0 to 1)", "0",
          f"chance a MAIL within the rate is deferred at reputation 0, in proportion to "
          f"the reputation lost ({_REPUTATION_WHY})", "0.8"),
    Field("reputation_reply", "4xx SMTP reply; {source} is the source address",
          '"421 4.7.0 [TSS04] Messages from {source} temporarily deferred due to user '
          'complaints"', "the reply to a MAIL deferred for reputation",
          '"421 4.7.0 [TSS04] Messages from {source} temporarily deferred"'),
)

SECTIONS: tuple[Section, ...] = (
    Section("", "Top level", "The scenario's name, seed and clock, and its tables.", (
        Field("name", "string", "the file's name without .toml",
              "the run's name in summaries and plots", '"black-friday"'),
        Field("description", "string", '""', "what the scenario is about, for people",
              '"Outlook tempfails 30 % for an hour"'),
        Field("seed", "integer >= 0", "1",
              "every random draw of the run comes from it: same seed, same run", "7"),
        Field("horizon", DURATION, '"1d"', "simulated time limit", '"6h"'),
        Field("nodes", "integer >= 1", "1",
              "MTA nodes sharing every connection limit and throttle (not written local:) "
              "through one store, as `egress deliver --redis` does; traffic is dealt to "
              "them in turn; the summary gives each node's share", "4"),
        Field("start_epoch", "number (Unix seconds)", "1767225600 (2026-01-01T00:00:00Z)",
              "the Unix time that simulated time 0 is in the records", "1767225600"),
        Field("sample_interval", DURATION, "horizon / 1000, at least 1s",
              "how often the series (queue depths, connections) are sampled", '"5s"'),
        Field("policy", "string (a path)", "none",
              "a policy file as `egress deliver` takes, relative to the scenario's "
              "directory; not with [egress_path] or [queue]", '"policy.py"'),
        Field("shaping", "array of strings (paths)", "[] (no shaping)",
              "KumoMTA shaping.toml files, relative to the scenario's directory, merged in "
              "order over the policy's egress paths, with their automation rules",
              '["shaping.toml"]'),
        Field("traffic", "array of traffic tables", "[] (no messages)",
              "the message streams ([[traffic]], below)",
              '[{ domain = "example.com", messages = 1000 }]'),
        Field("domains", "table of domain tables", "{}",
              "how each destination domain resolves ([domains.\"NAME\"], below)",
              '{ "example.com" = { mx = ["mx1.example.com"] } }'),
        Field("hosts", "table of host tables", "{}",
              "how each remote SMTP server behaves ([hosts.\"NAME\"], below)",
              '{ "mx1.example.com" = { max_connections = 50 } }'),
        Field("host_defaults", "host table", "none",
              "defaults for every host; with it, undeclared domains and hosts are allowed",
              '{ command_latency = "20ms" }'),
        Field("client", "client table", "none (no client overhead)",
              "the sending side's own costs ([client], below)",
              '{ round_trip_overhead = "0.5ms" }'),
        Field("egress_path", "egress path table", "make_egress_path's defaults",
              "make_egress_path keys for every path ([egress_path], below)",
              "{ connection_limit = 32 }"),
        Field("queue", "queue table", "make_queue_config's defaults",
              "make_queue_config keys for every queue ([queue], below)",
              '{ retry_interval = "20min" }'),
    )),
    Section("traffic[]", "[[traffic]]",
            "One stream of messages: bulk (messages at one time) or Poisson (a rate).", (
        Field("name", "string", '"traffic[N]"', "the stream's label", '"newsletter"'),
        Field("messages", "integer >= 0", "none (give messages or rate)",
              "a bulk stream: this many messages at `at`", "10000"),
        Field("at", DURATION, '"0s"', "when a bulk stream submits", '"10m"'),
        Field("over", DURATION, '"0s"', "spread a bulk stream evenly over this long",
              '"1h"'),
        Field("rate", 'rate (a number per second, or "600/min")',
              "none (give messages or rate)", "a Poisson stream: mean arrivals per second",
              '"600/min"'),
        Field("duration", DURATION, "required with rate", "how long a Poisson stream runs",
              '"1h"'),
        Field("start", DURATION, '"0s"', "when a Poisson stream starts", '"5m"'),
        Field("domain", "domain name", "none (give domain or domains)",
              "the recipients' domain", '"example.com"'),
        Field("domains", "table of domain = weight, or array of domains",
              "none (give domain or domains)", "several domains, chosen by weight",
              '{ "gmail.com" = 3, "yahoo.com" = 1 }'),
        Field("tenant", "string", '""', "the messages' tenant (queue name part)", '"acme"'),
        Field("campaign", "string", '""', "the messages' campaign (queue name part)",
              '"spring-sale"'),
        Field("sender", "address", '"sender@egress.example"', "the envelope sender",
              '"news@example.org"'),
        Field("recipients", "integer 1 to 1000", "1", "recipients per message", "2"),
        Field("size", 'size ("10KB", 2048), or {median, p99} or {min, max}', '"10KB"',
              "message size in bytes (KB = 1000, KiB = 1024)",
              '{ median = "20KB", p99 = "400KB" }'),
    )),
    Section("domains.<name>", '[domains."NAME"]',
            "How one destination domain resolves. At most one of mx, null_mx, nxdomain, "
            "servfail; none of them is an implicit MX (the domain is its own host).", (
        Field("mx", "array of {host, preference} or host names", "[] (implicit MX)",
              "the MX records; each host must be in [hosts] (or [host_defaults] given)",
              '[{ host = "mx1.example.com", preference = 10 }, "mx2.example.com"]'),
        Field("null_mx", "boolean", "false", "a null MX (RFC 7505): mail bounces", "true"),
        Field("nxdomain", "boolean", "false", "the domain does not exist", "true"),
        Field("servfail", "boolean", "false", "every lookup fails with SERVFAIL", "true"),
        Field("dns_outages", "array of DNS outage tables", "[]",
              "windows in which lookups fail (below)",
              '[{ start = "10m", end = "20m", kind = "SERVFAIL" }]'),
        Field("mta_sts", "MTA-STS table", "none", "the domain's MTA-STS policy (below)",
              '{ mode = "enforce", mx = ["*.example.com"] }'),
        Field("ttl", DURATION, '"300s"', "the MX answer's time to live", '"1h"'),
    )),
    Section("domains.<name>.mx[]", "mx entries", "One MX record (or just the host's name).", (
        Field("host", "host name", "required", "the MX host", '"mx1.example.com"'),
        Field("preference", "integer 0 to 65535", "10", "lower is tried first", "20"),
    )),
    Section("domains.<name>.dns_outages[]", "dns_outages entries",
            "A window [start, end) of simulated time in which the domain's lookups fail.", (
        Field("start", DURATION, "required", "when the window opens", '"10m"'),
        Field("end", DURATION, "required", "when it closes (after start)", '"20m"'),
        Field("kind", '"SERVFAIL", "TIMEOUT" or "NXDOMAIN"', '"SERVFAIL"',
              "how lookups fail", '"TIMEOUT"'),
    )),
    Section("domains.<name>.mta_sts", "mta_sts", "The domain's MTA-STS policy (RFC 8461).", (
        Field("mode", '"enforce", "testing" or "none"', "required", "the policy mode",
              '"enforce"'),
        Field("mx", "array of MX patterns", "[]", "the MX hosts the policy allows",
              '["*.example.com"]'),
        Field("max_age", DURATION, '"1d"', "how long the policy is cached", '"7d"'),
    )),
    Section("hosts.<name>", '[hosts."NAME"]',
            "How one simulated SMTP server behaves (the lab realises the same).", HOST_FIELDS),
    Section("hosts.<name>.<fault>", "faults as tables",
            "tempfail_mail, tempfail_rcpt, permfail_rcpt, tempfail_data and permfail_data "
            "may be tables, to give the reply a fault answers with.", (
        Field("probability", "probability (0 to 1)", "required", "chance of the fault",
              "0.3"),
        Field("reply", "SMTP reply (4xx for tempfail_*, 5xx for permfail_*)",
              "the fault's reply above", "the whole reply the fault answers with",
              '"452 4.2.2 Mailbox full"'),
    )),
    Section("hosts.<name>.outages[]", "outages entries",
            "A window [start, end) of simulated time (lab time in the lab) in which the "
            "host misbehaves; the first window in force decides.", (
        Field("start", DURATION, "required", "when the window opens", '"10m"'),
        Field("end", DURATION, "required", "when it closes (after start)", '"1h10m"'),
        Field("mode", '"refuse", "tempfail" or "blackhole"', '"refuse"',
              "refuse: new connections are refused; blackhole: new connections hear "
              "nothing; tempfail: MAIL is answered 451 4.3.0 (open sessions carry on)",
              '"tempfail"'),
        Field("probability", "probability (0 to 1)", "1",
              "chance that the outage hits each transaction in the window (a connection "
              "attempt for refuse and blackhole, a MAIL for tempfail)", "0.3"),
        Field("reply", "4xx SMTP reply (tempfail only)",
              '"451 4.3.0 Service temporarily unavailable (outage); try again later"',
              "the whole reply MAIL gets instead",
              '"451 4.7.500 Server busy. Please try again later"'),
    )),
    Section("hosts.<name>.pushback", "pushback",
            "A receiver that pushes back: what one host enforces per source address (the "
            "connection's source_address; 127.0.0.1, what the lab sees, when it has none). "
            "Simulator and lab push back alike (sim/host_pushback.py).", PUSHBACK_FIELDS),
    Section("host_defaults", "[host_defaults]",
            "Every [hosts.\"NAME\"] field except address and addresses, as defaults for all "
            "hosts; a host that an MX list names without declaring it takes these whole.",
            tuple(f for f in HOST_FIELDS if f.name not in ("address", "addresses"))),
    Section("client", "[client]", "The sending side's own costs; the lab measures both.", (
        Field("round_trip_overhead", "duration, at most 1s", "0",
              "the client's own time per round trip, added to every reply's wait",
              '"0.5ms"'),
        Field("connect_overhead", "duration, at most 1s", "0",
              "the client's own cost of opening a connection", '"1ms"'),
    )),
)
