"""The HTTP server of `egress deliver`: metrics and KumoMTA's admin API.

One aiohttp application on the driver's loop (so a request reads the engine
between two events, never while one is half-applied), on every
``--http-listen`` address:

* ``GET /metrics`` (Prometheus text) and ``GET /metrics.json`` (KumoMTA's
  shape: name -> {help, type, value});
* KumoMTA's admin endpoints, with its request and response JSON:
  ``/api/admin/suspend/v1``, ``/api/admin/suspend-ready-q/v1`` and
  ``/api/admin/bounce/v1`` (POST makes an entry -> ``{id}``, GET lists them,
  DELETE ``{id}`` ends one), ``ready-q-states``, ``inspect-message``,
  ``inspect-sched-q``, ``inspect-ready-q``, ``resolve-egress-path`` (all v1,
  GET) and ``POST /api/admin/reload/v1``; egress adds
  ``GET /api/admin/queue-summary/v1`` and ``GET /api/admin/qshape/v1``.

Every change is an input event of the engine (`engine.events.AdminSuspend`
...), journaled before the answer is sent, so a restart or a replay sees it
and an expiry ends at the same moment after a restart.  Request parsing is
`engine.live.admin_requests`; the views are `engine.live.admin_views`.

Access, as KumoMTA's HTTP listener: a client inside `trusted` (127.0.0.1 and
::1 unless replaced) may do anything; any other needs ``Authorization:
Bearer TOKEN`` matching the `token` keysource: none -> 401, a wrong one ->
403.  A malformed request gets 400 with ``{"error": ..., "field": ...}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from engine.cidr import CidrSet
from engine.engine import Engine
from engine.events import AdminCancel, Event
from engine.keysource import KeySource
from engine.live import admin_views as views
from engine.live.admin_requests import (
    BadRequest,
    parse_bounce,
    parse_suspend,
    parse_suspend_ready_q,
)
from engine.live.constraints import resolve_egress_path
from engine.live.keysource_resolve import resolve_keysource
from engine.live.metrics import MetricsCollector

__all__ = ["DEFAULT_TRUSTED", "AdminTarget", "HttpApi"]

log = logging.getLogger("egress.http")

DEFAULT_TRUSTED = ("127.0.0.1", "::1")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminTarget(Protocol):
    """What the API needs of the service (`engine.live.service.Service`)."""

    engine: Engine | None

    async def admin_event(self, event: Event) -> None:
        """Feed `event` to the engine and return once it is journaled."""

    def message_body(self, message_id: str) -> bytes: ...

    async def reload(self) -> str:
        """Re-read the policy; a one-line summary, or ValueError naming the fault."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=None), status=status,
                        content_type="application/json")


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return _json(body, status)


class HttpApi:
    """``HttpApi(target, trusted=None, token=None)``; ``await api.start([(host, port),
    ...])``; `ports` then lists the bound ports (0 picks one); ``await api.close()``."""

    def __init__(self, target: AdminTarget, *, trusted: Iterable[str] | None = None,
                 token: KeySource | str | dict[str, str] | None = None) -> None:
        self.target = target
        self.trusted = CidrSet.coerce(list(trusted) if trusted is not None
                                      else list(DEFAULT_TRUSTED), key="--http-trusted")
        self.token = KeySource.coerce(token, key="--http-token") if token is not None else None
        self.ports: list[int] = []
        self.addresses: list[tuple[str, int]] = []
        self._runner: web.AppRunner | None = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(MetricsCollector(lambda: self._engine().counters))

    def _engine(self) -> Engine:
        eng = self.target.engine
        if eng is None:
            raise web.HTTPServiceUnavailable(text="the engine is not started")
        return eng

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, listen: Iterable[tuple[str, int]]) -> None:
        app = web.Application(middlewares=[self._access])
        get, post, delete = "GET", "POST", "DELETE"
        routes: list[tuple[str, str, Handler]] = [
            (get, "/metrics", self.metrics),
            (get, "/metrics.json", self.metrics_json),
            (get, "/api/check-liveness/v1", self.liveness),
            (post, "/api/admin/suspend/v1", self.suspend),
            (get, "/api/admin/suspend/v1", self.suspend_list),
            (delete, "/api/admin/suspend/v1", self.cancel),
            (post, "/api/admin/suspend-ready-q/v1", self.suspend_ready_q),
            (get, "/api/admin/suspend-ready-q/v1", self.suspend_ready_q_list),
            (delete, "/api/admin/suspend-ready-q/v1", self.cancel),
            (post, "/api/admin/bounce/v1", self.bounce),
            (get, "/api/admin/bounce/v1", self.bounce_list),
            (delete, "/api/admin/bounce/v1", self.cancel),
            (get, "/api/admin/ready-q-states/v1", self.ready_q_states),
            (get, "/api/admin/inspect-message/v1", self.inspect_message),
            (get, "/api/admin/inspect-sched-q/v1", self.inspect_sched_q),
            (get, "/api/admin/inspect-ready-q/v1", self.inspect_ready_q),
            (get, "/api/admin/resolve-egress-path/v1", self.resolve_egress_path),
            (post, "/api/admin/reload/v1", self.reload),
            (get, "/api/admin/queue-summary/v1", self.queue_summary),
            (get, "/api/admin/qshape/v1", self.qshape),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for host, port in listen:
            site = web.TCPSite(self._runner, host, port, reuse_address=True)
            await site.start()
            server = site._server
            assert server is not None
            bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            self.ports.append(bound)
            self.addresses.append((host, bound))

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- access -------------------------------------------------------------------

    @web.middleware
    async def _access(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = (request.remote or "").split("%", 1)[0]
        if peer not in self.trusted:
            auth = request.headers.get("Authorization", "")
            if not auth:
                resp = _error(401, f"{peer} is not a trusted host; send Authorization: "
                                   "Bearer TOKEN")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="egress"'
                return resp
            scheme, _, given = auth.partition(" ")
            try:
                # a file, an environment variable or Vault: off the loop
                expected = await asyncio.to_thread(resolve_keysource, self.token) \
                    if self.token is not None else None
            except Exception as exc:  # an unset variable, an unreadable file: refuse, say why
                log.error("http: the bearer token cannot be read: %s", exc)
                expected = None
            if scheme.lower() != "bearer" or expected is None or not hmac.compare_digest(
                    given.strip().encode(), expected.encode()):
                return _error(403, "the bearer token is not valid here")
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, str(exc), exc.field)
        except web.HTTPException:
            raise
        except Exception as exc:  # a policy hook that raised, a bug: say so, keep serving
            log.exception("http: %s %s failed", request.method, request.path)
            return _error(500, f"{type(exc).__name__}: {exc}")

    # -- metrics --------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def metrics_json(self, request: web.Request) -> web.Response:
        return _json(views.metrics_json(self._engine().counters))

    async def liveness(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    # -- admin entries ----------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}", "body") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object", "body")
        return data

    async def suspend(self, request: web.Request) -> web.Response:
        ev = parse_suspend(await self._body(request), time.time())
        await self.target.admin_event(ev)
        return _json({"id": ev.id})

    async def suspend_ready_q(self, request: web.Request) -> web.Response:
        ev = parse_suspend_ready_q(await self._body(request), time.time())
        await self.target.admin_event(ev)
        return _json({"id": ev.id})

    async def bounce(self, request: web.Request) -> web.Response:
        now = time.time()
        ev = parse_bounce(await self._body(request), now)
        await self.target.admin_event(ev)
        rule = self._engine().admin_rules.rules.get(ev.id)
        bounced = dict(rule.bounced) if rule is not None else {}
        return _json({"id": ev.id, "bounced": bounced, "total_bounced": sum(bounced.values())})

    async def cancel(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        rule_id = data.get("id")
        if not isinstance(rule_id, str) or not rule_id:
            raise BadRequest("id must be the id string a POST returned", "id")
        kind = request.path.split("/")[3]  # suspend | suspend-ready-q | bounce
        rule = self._engine().admin_rules.rules.get(rule_id)
        if rule is None or rule.kind != kind:
            return _error(404, f"{kind} entry {rule_id} not found", "id")
        await self.target.admin_event(AdminCancel(at=time.time(), id=rule_id))
        return web.Response(text=f"removed {rule_id}")

    async def suspend_list(self, request: web.Request) -> web.Response:
        return _json(views.suspend_list(self._engine(), time.time()))

    async def suspend_ready_q_list(self, request: web.Request) -> web.Response:
        return _json(views.suspend_ready_q_list(self._engine(), time.time()))

    async def bounce_list(self, request: web.Request) -> web.Response:
        return _json(views.bounce_list(self._engine(), time.time()))

    # -- views --------------------------------------------------------------------------

    async def ready_q_states(self, request: web.Request) -> web.Response:
        queues = [q for q in request.query.get("queues", "").split(",") if q]
        return _json(views.ready_q_states(self._engine(), time.time(), queues or None))

    async def inspect_message(self, request: web.Request) -> web.Response:
        mid = _required(request, "id")
        body = self.target.message_body if _flag(request, "want_body") else None
        found = views.inspect_message(self._engine(), mid, body)
        if found is None:
            return _error(404, f"message {mid} is not queued", "id")
        return _json(found)

    async def inspect_sched_q(self, request: web.Request) -> web.Response:
        name = _required(request, "queue_name")
        limit = _int(request, "limit")
        body = self.target.message_body if _flag(request, "want_body") else None
        found = views.inspect_sched_q(self._engine(), name, time.time(), limit=limit, body=body)
        if found is None:
            return _error(404, f"no scheduled queue {name!r}", "queue_name")
        return _json(found)

    async def inspect_ready_q(self, request: web.Request) -> web.Response:
        name = _required(request, "queue_name")
        found = views.inspect_ready_q(self._engine(), name, time.time())
        if found is None:
            return _error(404, f"no ready queue {name!r}", "queue_name")
        return _json(found)

    async def resolve_egress_path(self, request: web.Request) -> web.Response:
        domain = _required(request, "domain")
        source = request.query.get("source") or "unspecified"
        tpm = request.query.get("time_per_message")
        per_message = None
        if tpm is not None:
            try:
                per_message = float(tpm)
            except ValueError:
                raise BadRequest(f"time_per_message {tpm!r} is not a number of seconds",
                                 "time_per_message") from None
        return _json(resolve_egress_path(self._engine(), domain, source,
                                         time_per_message=per_message))

    async def queue_summary(self, request: web.Request) -> web.Response:
        return _json(views.queue_summary(self._engine(), time.time()))

    async def qshape(self, request: web.Request) -> web.Response:
        return _json(views.qshape(self._engine(), time.time()))

    async def reload(self, request: web.Request) -> web.Response:
        try:
            summary = await self.target.reload()
        except ValueError as exc:
            return _error(422, str(exc), "policy")
        return _json({"reloaded": True, "detail": summary})


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise BadRequest(f"the query parameter {name} is required", name)
    return value


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def _int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"{name} must be a whole number, not {value!r}", name)
    return int(value)
