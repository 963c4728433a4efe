"""egress: an outbound-mail queue engine on KumoMTA's egress-path model.

The public names are re-exported here.  They are loaded lazily so that
``import engine`` stays cheap for the command line, and so a module's import
error names that module rather than this one.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # errors
    "EgressError": "engine.errors",
    "ConfigError": "engine.errors",
    "PolicyError": "engine.errors",
    "ProtocolError": "engine.errors",
    "ReplyParseError": "engine.errors",
    "JournalError": "engine.errors",
    # values
    "Reply": "engine.reply",
    "EnhancedCode": "engine.reply",
    "parse_duration": "engine.durations",
    "format_duration": "engine.durations",
    "parse_throttle": "engine.throttle",
    "format_throttle": "engine.throttle",
    "Throttle": "engine.throttle",
    "ThrottleState": "engine.throttle",
    "CidrSet": "engine.cidr",
    "KeySource": "engine.keysource",
    # configuration and policy
    "EnableTls": "engine.config",
    "EgressPathConfig": "engine.config",
    "make_egress_path": "engine.config",
    "QueueConfig": "engine.queue_config",
    "make_queue_config": "engine.queue_config",
    "EgressSource": "engine.queue_config",
    "make_egress_source": "engine.queue_config",
    "EgressPool": "engine.queue_config",
    "make_egress_pool": "engine.queue_config",
    "Policy": "engine.policy",
    "mx_matches": "engine.mta_sts_match",
    # the machine
    "Engine": "engine.engine",
    "Session": "engine.session",
    "TxnMessage": "engine.session",
    # the SMTP wire format
    "ReplyParser": "engine.wire",
    "encode_command": "engine.wire",
    "encode_auth_plain": "engine.wire",
    "encode_body": "engine.wire",
    # the journal codec
    "encode_event": "engine.codec",
    "decode_event": "engine.codec",
    "encode_events": "engine.codec",
    "decode_events": "engine.codec",
    "iter_decode": "engine.codec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
