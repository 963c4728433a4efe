"""Pushback presets: ILLUSTRATIVE models of large mailbox providers, NOT measurements.

A scenario host may start from one of these (``pushback = { preset =
"yahoo_like" }``) and override any field.  The reply texts follow the
shapes these providers document publicly on their postmaster pages, so that
shaping rules written against real traffic (KumoMTA's shipped shaping.toml
matches such texts) fire on them; every number here (rates, connection
counts, penalties, half-lives) is made up to give each model a plausible
character, not measured from, published by or endorsed by any provider.
Real limits are unpublished, vary per sender and change without notice:
calibrate against your own logs before trusting a plan made with these.

The fields are a host's ``pushback`` fields (`sim.host_pushback`), written as
in a scenario file.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Strict per-IP volume limits, a long memory for complaints.
    "yahoo_like": {
        "message_rate": "300/min",
        "rate_reply": "421 4.7.0 [TS01] Messages from {source} temporarily deferred due to "
                      "unexpected volume or user complaints",
        "connections": 10,
        "connection_reply": "421 4.7.0 [TS02] Too many connections from {source}",
        "over_rate_penalty": 0.001,
        "complaint_rate": 0.002,
        "complaint_penalty": 0.01,
        "recovery": "2h",
        "reputation_deferral": 0.5,
        "reputation_reply": "421 4.7.0 [TSS04] Messages from {source} temporarily deferred "
                            "due to unexpected volume or user complaints",
    },
    # More volume allowed, reputation weighs more than rate.
    "gmail_like": {
        "message_rate": "600/min",
        "rate_reply": "421 4.7.28 Our system has detected an unusual rate of unsolicited mail "
                      "originating from your IP address {source}. Mail sent from it has "
                      "been temporarily rate limited.",
        "connections": 20,
        "connection_reply": "421 4.7.0 Try again later, closing connection.",
        "over_rate_penalty": 0.002,
        "complaint_rate": 0.001,
        "complaint_penalty": 0.1,
        "recovery": "2h",
        "reputation_deferral": 0.5,
        "reputation_reply": "421 4.7.0 This message is suspicious due to the very low "
                            "reputation of the sending IP address {source}.",
    },
    # Generous per-connection volume, quick to forgive, "server busy" texts.
    "outlook_like": {
        "message_rate": "1,200/min",
        "rate_reply": "451 4.7.500 Server busy. Please try again later from [{source}]. "
                      "(S77714)",
        "connections": 30,
        "connection_reply": "421 4.3.2 The maximum number of concurrent connections has "
                            "exceeded a limit, closing transmission channel",
        "over_rate_penalty": 0.002,
        "complaint_rate": 0.001,
        "complaint_penalty": 0.05,
        "recovery": "1h",
        "reputation_deferral": 0.3,
        "reputation_reply": "451 4.7.650 The mail server [{source}] has been temporarily "
                            "rate limited due to IP reputation.",
    },
}
