"""The make_egress_path keys that the reference page lacks, and KumoMTA's limit grammar.

KumoMTA's current ``EgressPathConfig`` (crates/kumo-api-types/src/
egress_path.rs) has keys the seed page does not describe.  egress parses and
stores each one with KumoMTA's type and default (`NEWER_CHECKS`), so a policy
written for KumoMTA is read, shown and compared correctly.  A key whose
decision the engine does not make yet is *refused* when set to anything but
its default (`refuse_inert`), with a ConfigError that says so: a setting that
would be accepted and then ignored is a silent misconfiguration.  When the
engine acts on one, delete it from `_INERT`; docs/KUMOMTA.md says what each
must do.

`limit_spec` reads KumoMTA's ``LimitSpec`` (crates/throttle/src/lib.rs): an
integer, or a string ``[local:]N`` where N may contain ``,`` or ``_``.  egress
runs every limit in one engine, so ``local:`` (keep the count in this process
rather than in redis) is already what it does; the value is the integer.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from engine.durations import positive_duration
from engine.errors import ConfigError
from engine.keysource import KeySource
from engine.throttle import Throttle, parse_throttle

__all__ = ["INERT_KEYS", "NEWER_CHECKS", "RefreshStrategy", "limit_spec", "refuse_inert"]

Check = Callable[[Any, str], Any]
_LIMIT = re.compile(r"(?:local:)?([0-9][0-9,_]*)")


class RefreshStrategy(enum.StrEnum):
    """KumoMTA's ConfigRefreshStrategy: re-ask the policy when the config's TTL
    (refresh_interval) runs out, or when the configuration epoch changes."""

    Ttl = "Ttl"
    Epoch = "Epoch"


def limit_spec(minimum: int) -> Check:
    """An integer >= `minimum`, or KumoMTA's ``"[local:]N"`` string form."""

    def check(value: Any, key: str) -> int:
        number: Any = value
        if isinstance(value, str):
            m = _LIMIT.fullmatch(value.strip())
            number = int(m.group(1).replace(",", "").replace("_", "")) if m else None
        if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
            raise ConfigError(
                f"{key}: {value!r} is not valid; expected an integer >= {minimum} "
                "or a string such as \"local:20\" or \"1,000\""
            )
        return number

    return check


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not valid; expected true or false (a bool)")
    return value


def _interval(value: Any, key: str) -> float:
    seconds = positive_duration(value, key)
    if seconds is None:
        raise ConfigError(f"{key}: None is not valid; expected a duration above 0")
    return seconds


def _throttle(value: Any, key: str) -> Throttle | None:
    return None if value is None else parse_throttle(value, key=key)


def _throttles(value: Any, key: str) -> Mapping[str, Throttle]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: {value!r} is not valid; expected a mapping of name -> throttle")
    out: dict[str, Throttle] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}: entry name {name!r} is not a non-empty string")
        out[name] = parse_throttle(item, key=f"{key}[{name!r}]")
    return MappingProxyType(out)


def _keysource(value: Any, key: str) -> KeySource | None:
    return None if value is None else KeySource.coerce(value, key=key)


def _refresh_strategy(value: Any, key: str) -> RefreshStrategy:
    try:
        return RefreshStrategy(value)
    except ValueError:
        raise ConfigError(
            f"{key}: {value!r} is not valid; expected one of 'Ttl', 'Epoch'"
        ) from None


#: Checkers of the keys on KumoMTA's EgressPathConfig that the page lacks.
NEWER_CHECKS: dict[str, Check] = {
    "source_selection_rate": _throttle,
    "additional_source_selection_rates": _throttles,
    "try_next_host_on_transport_error": _bool,
    "remember_broken_tls": positive_duration,
    "tls_certificate": _keysource,
    "tls_private_key": _keysource,
    "refresh_interval": _interval,
    "refresh_strategy": _refresh_strategy,
    "dispatcher_progress_watchdog_timeout": positive_duration,
}


# key -> (the default the engine honours, what KumoMTA does that egress does not yet)
_INERT: dict[str, tuple[Any, str]] = {
    "aggressive_connection_opening": (
        False, "opens the connection before taking a message from the ready queue"),
}


#: The keys refused away from their default, in KumoMTA's order.
INERT_KEYS: tuple[str, ...] = tuple(_INERT)


def refuse_inert(values: Mapping[str, Any]) -> None:
    """Refuse a key set to a value egress would accept and then ignore: an
    inert key away from its default, or half a client certificate (KumoMTA
    presents one only when tls_certificate and tls_private_key are both set,
    crates/kumo-tls-helper/src/lib.rs, and would silently send none)."""
    for key, (default, what) in _INERT.items():
        value = values[key]
        if value != default:
            raise ConfigError(
                f"{key}: {_show(value)} is not supported by egress (KumoMTA {what}); "
                f"leave it at its default ({_show(default)}); see docs/KUMOMTA.md"
            )
    cert, private_key = values.get("tls_certificate"), values.get("tls_private_key")
    if (cert is None) != (private_key is None):
        given, missing = (("tls_certificate", "tls_private_key") if private_key is None
                          else ("tls_private_key", "tls_certificate"))
        raise ConfigError(
            f"{given}: {values[given]!r} is set but {missing} is not; a client certificate "
            "needs both (KumoMTA would present none)"
        )


def _show(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return repr(value.value)
    if isinstance(value, Throttle):
        return repr(str(value))
    if isinstance(value, Mapping):
        return repr({k: _show(v) for k, v in value.items()})
    return repr(value)
