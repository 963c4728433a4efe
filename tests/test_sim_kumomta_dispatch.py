"""KumoMTA's dispatcher rules in simulation (docs/KUMOMTA.md row 9a)."""

from __future__ import annotations

from typing import Any

from sim.result import run
from sim.scenario import Scenario

HOST = {"connect_latency": "5ms", "command_latency": "2ms", "data_latency": "10ms"}


def _scenario(traffic: dict[str, Any], egress: dict[str, Any]) -> Scenario:
    return Scenario.from_dict({
        "name": "t", "seed": 1, "horizon": "1h",
        "traffic": [{"domain": "example.com", "at": "0s", **traffic}],
        "domains": {"example.com": {"mx": [{"host": "mx.example.com", "preference": 10}]}},
        "hosts": {"mx.example.com": HOST},
        "egress_path": {"enable_tls": "Disabled", **egress},
    })


def test_recipients_past_the_batch_limit_are_sent_at_once_without_a_record() -> None:
    """crates/kumod/src/smtp_dispatcher.rs (``retry_immediately``): five
    recipients a message, two a batch: every recipient delivered on the first
    try, no TransientFailure, nothing retried."""
    result = run(_scenario({"messages": 4, "recipients": 5},
                           {"max_recipients_per_batch": 2, "connection_limit": 1}))
    kinds = [r["type"] for r in result.records]
    assert "TransientFailure" not in kinds
    delivered = [r for r in result.records if r["type"] == "Delivery"]
    rcpts = [x for r in delivered
             for x in (r["recipient"] if isinstance(r["recipient"], list) else [r["recipient"]])]
    assert len(rcpts) == len(set(rcpts)) == 20
    assert {r["num_attempts"] for r in delivered} == {0}
    assert result.summary["delivered"] == 20  # recipients
