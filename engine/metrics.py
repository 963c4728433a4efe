"""Counters, named as KumoMTA names its metrics.

Totals are kept as plain ints and per-path / per-provider counts in dicts, so
bumping one is a dict operation on the hot path; `snapshot()` flattens them
into one dict only when someone reads ``eng.counters``:

- ``total_messages_delivered``, ``total_messages_transfail``,
  ``total_messages_fail``, ``delayed_due_to_ready_queue_full``,
  ``delayed_due_to_message_rate_throttle`` (a path's or a scheduled queue's
  max_message_rate held messages back), ``delayed_due_to_connection_rate_throttle``
  (a path's max_connection_rate pushed its ready queue back), ``ready_count``,
  ``connection_count`` (sums over paths), ``total_messages_expired``,
  ``total_messages_admin_bounced``, ``total_messages_received``,
  ``total_hook_failures`` (a policy hook raised or returned the wrong type; the
  engine went on, see `engine.lookups`);
- per path: ``name{path="source->site"}`` for ready_count, connection_count and
  the three totals; per provider: ``name{provider="..."}`` for the totals.
"""

from __future__ import annotations

DELIVERED = "total_messages_delivered"
TRANSFAIL = "total_messages_transfail"
FAIL = "total_messages_fail"
READY_FULL = "delayed_due_to_ready_queue_full"
RATE_THROTTLED = "delayed_due_to_message_rate_throttle"
CONN_RATE_THROTTLED = "delayed_due_to_connection_rate_throttle"
EXPIRED = "total_messages_expired"
ADMIN_BOUNCED = "total_messages_admin_bounced"
RECEIVED = "total_messages_received"
HOOK_FAILED = "total_hook_failures"  # a policy hook raised or returned the wrong type

TOTALS = (DELIVERED, TRANSFAIL, FAIL, READY_FULL, RATE_THROTTLED, CONN_RATE_THROTTLED, EXPIRED,
          ADMIN_BOUNCED, RECEIVED, HOOK_FAILED)
BY_PATH = (DELIVERED, TRANSFAIL, FAIL)


class Counters:
    """Mutable counters; ready and connection counts are read from the queues."""

    __slots__ = ("by_path", "by_provider", "totals")

    def __init__(self) -> None:
        self.totals: dict[str, int] = dict.fromkeys(TOTALS, 0)
        self.by_path: dict[tuple[str, str], int] = {}
        self.by_provider: dict[tuple[str, str], int] = {}

    def bump(self, name: str, path: str = "", provider: str | None = None, n: int = 1) -> None:
        """Add `n` to `name`, and to its per-path / per-provider series when given."""
        self.totals[name] += n
        if path:
            key = (name, path)
            self.by_path[key] = self.by_path.get(key, 0) + n
        if provider:
            pkey = (name, provider)
            self.by_provider[pkey] = self.by_provider.get(pkey, 0) + n

    def snapshot(
        self, ready: dict[str, int], connections: dict[str, int]
    ) -> dict[str, int]:
        """One flat dict, keys sorted so two equal engines give equal dicts."""
        out: dict[str, int] = dict(self.totals)
        out["ready_count"] = sum(ready.values())
        out["connection_count"] = sum(connections.values())
        for path, n in ready.items():
            out[f'ready_count{{path="{path}"}}'] = n
        for path, n in connections.items():
            out[f'connection_count{{path="{path}"}}'] = n
        for (name, path), n in self.by_path.items():
            out[f'{name}{{path="{path}"}}'] = n
        for (name, provider), n in self.by_provider.items():
            out[f'{name}{{provider="{provider}"}}'] = n
        return dict(sorted(out.items()))
