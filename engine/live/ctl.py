"""`egress ctl`: a thin client of a running `egress deliver`'s admin HTTP API.

The verbs are kcli's (KumoMTA's command line), spoken to the same endpoints:
``queue-summary``, ``suspend``, ``suspend-list``, ``suspend-ready-q``,
``resume`` (kcli's suspend-cancel and suspend-ready-q-cancel in one),
``bounce``, ``bounce-list``, ``bounce-cancel``, ``inspect-message``,
``inspect-sched-q``, ``inspect-ready-q``, ``resolve-egress-path``,
``qshape`` (scheduled messages by domain and age, as Postfix's qshape),
``top`` (a live table) and ``reload``; plus ``hash-password`` for
``--auth-file`` lines.  Each prints a table, or with
``--json`` the server's JSON as it came.

Nothing here knows the engine: it is HTTP (stdlib urllib) and rich tables
(it lives in engine/live because it does I/O and reads the clock for `top`),
so it runs anywhere the API is reachable.  ``--endpoint`` defaults to
``$EGRESS_ENDPOINT`` or http://127.0.0.1:8000; ``--token`` (or
``$EGRESS_TOKEN``) is sent as a bearer token for a host that is not trusted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from engine.errors import EgressError

__all__ = ["add_parser", "request"]

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"


class CtlError(EgressError):
    """The API answered with an error, or could not be reached."""


def request(endpoint: str, method: str, path: str, body: Any = None, *,
            token: str | None = None, query: dict[str, str | None] | None = None) -> Any:
    """One API call; the decoded JSON (or text) answer, or CtlError naming the fault."""
    import urllib.error
    import urllib.parse
    import urllib.request

    url = endpoint.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read().decode()
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            detail = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            detail = text.strip()
        raise CtlError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(f"cannot reach {endpoint}: {reason}") from None
    return json.loads(raw) if "json" in ctype else raw


# -- the verbs -----------------------------------------------------------------------


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None,
          query: dict[str, str | None] | None = None) -> Any:
    return request(args.endpoint, method, f"/api/admin/{path}", body, token=args.token,
                   query=query)


def _criteria(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": args.reason}
    for key in ("domain", "tenant", "campaign", *extra):
        value = getattr(args, key, None)
        if value:
            body[key] = value
    if args.queue:
        body["queue_names"] = args.queue
    if args.duration:
        body["duration"] = args.duration
    return body


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c in _NUMERIC else "left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


_NUMERIC = {"conns", "ready", "in flight", "delivered", "transfail", "failed", "scheduled",
            "total", "bounced", "held"}


def cmd_queue_summary(args: argparse.Namespace) -> Any:
    data = _call(args, "GET", "queue-summary/v1")
    if not args.json:
        _summary_tables(data)
    return data


def _summary_tables(data: dict[str, Any]) -> None:
    _table("ready queues", ["queue", "source", "site", "conns", "ready", "in flight", "state",
                            "delivered", "transfail", "failed"],
           [[q["name"], q["source"], q["site"], q["connections"], q["ready"], q["in_flight"],
             ",".join(q["state"]) or "-", q["delivered"], q["transfail"], q["failed"]]
            for q in data["ready_queues"]])
    _table("scheduled queues", ["queue", "domain", "tenant", "campaign", "scheduled"],
           [[q["name"], q["domain"], q["tenant"], q["campaign"], q["scheduled"]]
            for q in data["scheduled_queues"]])


def cmd_suspend(args: argparse.Namespace) -> Any:
    data = _call(args, "POST", "suspend/v1", _criteria(args))
    if not args.json:
        print(data["id"])
    return data


def cmd_suspend_list(args: argparse.Namespace) -> Any:
    data = _call(args, "GET", "suspend/v1")
    data_rq = _call(args, "GET", "suspend-ready-q/v1")
    if not args.json:
        _table("suspensions", ["id", "domain", "tenant", "campaign", "held", "reason", "left"],
               [[e["id"], e["domain"], e["tenant"], e["campaign"], e["held"], e["reason"],
                 e["duration"]] for e in data])
        _table("ready queue suspensions", ["id", "name", "reason", "left"],
               [[e["id"], e["name"], e["reason"], e["duration"]] for e in data_rq])
    return {"suspend": data, "suspend_ready_q": data_rq}


def cmd_suspend_ready_q(args: argparse.Namespace) -> Any:
    body = {"name": args.name, "reason": args.reason}
    if args.duration:
        body["duration"] = args.duration
    data = _call(args, "POST", "suspend-ready-q/v1", body)
    if not args.json:
        print(data["id"])
    return data


def cmd_resume(args: argparse.Namespace) -> Any:
    """kcli's suspend-cancel, or suspend-ready-q-cancel when the id is one of those."""
    try:
        text = _call(args, "DELETE", "suspend/v1", {"id": args.id})
    except CtlError as exc:
        if "HTTP 404" not in str(exc):
            raise
        text = _call(args, "DELETE", "suspend-ready-q/v1", {"id": args.id})
    if not args.json:
        print(text)
    return {"removed": args.id}


def cmd_bounce(args: argparse.Namespace) -> Any:
    body = _criteria(args, "routing_domain")
    if args.suppress_logging:
        body["suppress_logging"] = True
    data = _call(args, "POST", "bounce/v1", body)
    if not args.json:
        print(f"{data['id']}: bounced {data['total_bounced']} now"
              + "".join(f"\n  {q}: {n}" for q, n in sorted(data["bounced"].items())))
    return data


def cmd_bounce_list(args: argparse.Namespace) -> Any:
    data = _call(args, "GET", "bounce/v1")
    if not args.json:
        _table("bounces", ["id", "domain", "tenant", "campaign", "bounced", "reason", "left"],
               [[e["id"], e["domain"], e["tenant"], e["campaign"], e["total_bounced"],
                 e["reason"], e["duration"]] for e in data])
    return data


def cmd_bounce_cancel(args: argparse.Namespace) -> Any:
    text = _call(args, "DELETE", "bounce/v1", {"id": args.id})
    if not args.json:
        print(text)
    return {"removed": args.id}


def cmd_inspect_message(args: argparse.Namespace) -> Any:
    data = _call(args, "GET", "inspect-message/v1",
                 query={"id": args.id, "want_body": "true" if args.want_body else None})
    if not args.json:
        print(json.dumps(data, indent=2))
    return data


def cmd_inspect_sched_q(args: argparse.Namespace) -> Any:
    data = _call(args, "GET", "inspect-sched-q/v1",
                 query={"queue_name": args.queue_name,
                        "limit": None if args.limit is None else str(args.limit)})
    if not args.json:
        print(json.dumps(data, indent=2))
    return data


def cmd_inspect_ready_q(args: argparse.Namespace) -> Any:
    data = _call(args, "GET", "inspect-ready-q/v1", query={"queue_name": args.queue_name})
    if not args.json:
        print(json.dumps(data, indent=2))
    return data


def cmd_resolve_egress_path(args: argparse.Namespace) -> Any:
    query = {"domain": args.domain, "source": args.source,
             "time_per_message": None if args.time_per_message is None
             else str(args.time_per_message)}
    data = _call(args, "GET", "resolve-egress-path/v1", query=query)
    if not args.json:
        rows = []
        for axis, c in data["constraints"].items():
            if isinstance(c, dict):
                rows.append([axis, f"{c['value']:g}", c["display"], _source(c["source"])])
        if "connection_ceiling" in data:
            c = data["connection_ceiling"]
            rows.append(["connection_ceiling", f"{c['value']:g}", c["display"],
                         _source(c["source"])])
        _table(f"{data['queue_name']} (domain {data['domain']})",
               ["axis", "value", "display", "set by"], rows)
        if data.get("shaping", {}).get("in_force"):
            from engine.shaping_rules import describe

            for entry in data["shaping"]["in_force"]:
                print("shaping in force: " + describe(entry))
        drain = data["drain_estimate"]
        if drain["seconds"] is not None:
            print(f"backlog {drain['backlog']}: drains in at least {drain['seconds']:.0f}s "
                  f"at the tightest ceiling ({_source(drain['limited_by'])}; an estimate)")
    return data


def _source(src: dict[str, Any]) -> str:
    return src["kind"] + (f" ({src['name']})" if "name" in src else "")


def cmd_qshape(args: argparse.Namespace) -> Any:
    data = _call(args, "GET", "qshape/v1")
    if not args.json:
        _table("scheduled messages by age (minutes)", ["domain", "total", *data["buckets"]],
               [[r["domain"], r["total"], *r["counts"]] for r in data["rows"]])
    return data


def cmd_reload(args: argparse.Namespace) -> Any:
    data = _call(args, "POST", "reload/v1", {})
    if not args.json:
        print(data["detail"])
    return data


def cmd_top(args: argparse.Namespace) -> Any:
    """The queue summary, refreshed every --interval seconds (--count times)."""
    import time

    from rich.console import Group
    from rich.live import Live
    from rich.table import Table

    def render(data: dict[str, Any]) -> Group:
        t = Table(title=f"egress top  {args.endpoint}  {time.strftime('%H:%M:%S')}")
        for c in ("ready queue", "conns", "ready", "in flight", "delivered", "transfail",
                  "state"):
            t.add_column(c, justify="left" if c in ("ready queue", "state") else "right")
        for q in data["ready_queues"]:
            t.add_row(q["name"], str(q["connections"]), str(q["ready"]), str(q["in_flight"]),
                      str(q["delivered"]), str(q["transfail"]), ",".join(q["state"]) or "-")
        s = Table(title="scheduled")
        s.add_column("queue")
        s.add_column("scheduled", justify="right")
        for q in data["scheduled_queues"][:20]:
            s.add_row(q["name"], str(q["scheduled"]))
        return Group(t, s)

    data = _call(args, "GET", "queue-summary/v1")
    if args.json:
        return data
    n = 1
    with Live(render(data), refresh_per_second=4, screen=False) as live:
        while args.count is None or n < args.count:
            time.sleep(args.interval)
            data = _call(args, "GET", "queue-summary/v1")
            live.update(render(data))
            n += 1
    return None


def cmd_hash_password(args: argparse.Namespace) -> Any:
    import getpass

    from engine.live.authfile import hash_password

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else \
        getpass.getpass(f"password for {args.user}: ")
    if not password:
        raise CtlError("an empty password is not allowed")
    print(f"{args.user}:{hash_password(password)}")
    return None


# -- the parser ----------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    data = args.verb(args)
    if args.json and data is not None:
        json.dump(data, sys.stdout, indent=2)
        print()
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``egress ctl [--endpoint URL] [--token T] VERB [--json] ...``."""
    p = sub.add_parser("ctl", help="operate a running `egress deliver` through its HTTP API",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--endpoint", default=os.environ.get("EGRESS_ENDPOINT", DEFAULT_ENDPOINT),
                   help="the admin API (default $EGRESS_ENDPOINT or http://127.0.0.1:8000)")
    p.add_argument("--token", default=os.environ.get("EGRESS_TOKEN"),
                   help="bearer token (default $EGRESS_TOKEN)")
    verbs = p.add_subparsers(dest="ctl_verb", metavar="VERB", required=True)

    def verb(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help_)
        v.add_argument("--json", action="store_true", help="print the API's JSON")
        v.set_defaults(func=_run, verb=func)
        return v

    def criteria(v: argparse.ArgumentParser, routing: bool = False) -> None:
        v.add_argument("--domain")
        v.add_argument("--tenant")
        v.add_argument("--campaign")
        if routing:
            v.add_argument("--routing-domain", dest="routing_domain")
        v.add_argument("--queue", action="append", help="a scheduled queue name (repeatable)")
        v.add_argument("--reason", required=True)
        v.add_argument("--duration", help="how long (e.g. 20m, 2h; KumoMTA's default 5m)")

    verb("queue-summary", cmd_queue_summary, "ready and scheduled queues")
    criteria(verb("suspend", cmd_suspend, "hold scheduled queues (domain/tenant/campaign)"))
    verb("suspend-list", cmd_suspend_list, "suspensions in force")
    v = verb("suspend-ready-q", cmd_suspend_ready_q, "suspend one ready queue")
    v.add_argument("--name", required=True, help="the ready queue, source->site")
    v.add_argument("--reason", required=True)
    v.add_argument("--duration")
    verb("resume", cmd_resume, "end a suspension").add_argument("--id", required=True)
    v = verb("bounce", cmd_bounce, "bounce matching mail now and until it expires")
    criteria(v, routing=True)
    v.add_argument("--suppress-logging", action="store_true")
    verb("bounce-list", cmd_bounce_list, "bounces in force")
    verb("bounce-cancel", cmd_bounce_cancel, "end a bounce").add_argument("--id", required=True)
    v = verb("inspect-message", cmd_inspect_message, "one queued message")
    v.add_argument("id")
    v.add_argument("--want-body", action="store_true")
    v = verb("inspect-sched-q", cmd_inspect_sched_q, "one scheduled queue and its messages")
    v.add_argument("queue_name")
    v.add_argument("--limit", type=int)
    verb("inspect-ready-q", cmd_inspect_ready_q, "one ready queue: state, config, ceilings"
         ).add_argument("queue_name")
    v = verb("resolve-egress-path", cmd_resolve_egress_path,
             "a path's effective config and throughput ceilings")
    v.add_argument("--domain", required=True)
    v.add_argument("--source", default="unspecified")
    v.add_argument("--time-per-message", type=float, metavar="SECONDS",
                   help="seconds one message takes on a connection (adds its ceiling)")
    verb("qshape", cmd_qshape, "scheduled messages by domain and age")
    v = verb("top", cmd_top, "a live queue table")
    v.add_argument("--interval", type=float, default=2.0)
    v.add_argument("--count", type=int, help="stop after this many refreshes")
    verb("reload", cmd_reload, "re-read the policy file")
    v = verb("hash-password", cmd_hash_password, "a USER:HASH line for --auth-file")
    v.add_argument("user")
    v.add_argument("--password-stdin", action="store_true")
