"""The controller's HTTP API (aiohttp, JSON), served by `forkscale serve`.

    POST /v1/pools/{pool}/claim    {"user": "alice", "wait_s": 10}
         200 {"vm", "hostname", "ip", "claimed_at", "pool", "user"}
         503 {"error"} + Retry-After when no clone became ready within wait_s (default 0, max 300)
    POST /v1/pools/{pool}/release  {"vm": "vdi-007"}
         202 {"pool", "vm", "action": "kept" | "refreshing", "on_release"}
         404 unknown clone, 409 not claimed
    GET  /v1/pools                 {"pools": [status, ...]}
    GET  /v1/pools/{pool}          status: desired / ready / claimed / spares, sources, policy state,
                                   last decision and its reason, last converge, last errors
    PUT  /v1/pools/{pool}/image    {"snapshot": "patch-06", "source": VM?, "allow_partial": false, "at": TIME?,
                                    "dry_run": false}
         202 the push is recorded and runs in the background (status: GET .../rollout); 200 with
         `dry_run`: the plan's batches; 400 bad snapshot or source; 409 another operation is open
    GET  /v1/pools/{pool}/rollout  current and target image, clones per image, the open (else last)
                                   operation with its steps
    POST /v1/pools/{pool}/rollout  {"action": "pause" | "resume" | "cancel" | "rollback"}  202
    POST /v1/pools/{pool}/refresh  {"vms": ["vdi-007"]} (default: every clone)  202
    PUT  /v1/pools/{pool}/count    {"count": N}
         202 for a `fixed` pool: its count; for a headroom / target-value pool: its floor (`min`)
         -- the policy keeps deciding above it. 409 when N is above the policy's max or the
         pool's address range. Kept in the ledger (every replica, restarts and failovers see
         it) until the spec's own value for it is edited.
    GET  /healthz                  open: {"ok": true, "owns_pools": ..., "owns": [...], "replica": ..., ...}
    GET  /metrics                  open: Prometheus exposition

Every /v1 call needs `Authorization: Bearer <token>` (401 otherwise, compared in constant time).
The token comes from `--token-file` (mode 0600 or stricter, refused otherwise) or
FORKSCALE_API_TOKEN; it is registered with the log redactor and never logged. Errors are JSON
`{"error": "..."}`: 400 bad JSON or fields, 404 unknown pool or route, 405, 409, 503.

Threads: `serve` runs this app on its own thread and event loop (`controller_loop` is then the
controller's). A claim's first attempt (`Controller.try_claim`: a locked ledger transaction) runs
right here, so it does not queue behind the refill's CPU-bound work on the controller's loop
(bench/claim.py, with serve's gc.freeze: p99 ~85-140 ms -> ~13-15 ms); everything else that touches the
controller -- a claim that waits, release, count, status, /metrics -- is run on the controller's
loop (`run_coroutine_threadsafe`), where its state lives.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from forkscale.core.errors import SpecError
from forkscale.core.logs import register_secret
from forkscale.ledger import LedgerError
from forkscale.observe.telemetry import Telemetry, metrics_handler
from forkscale.spec import check_secret_file
from forkscale.workloads.controller import Controller
from forkscale.workloads.runtime import ControllerError

log = logging.getLogger("forkscale.api")

TOKEN_ENV = "FORKSCALE_API_TOKEN"
MIN_TOKEN_LENGTH = 16
MAX_WAIT_S = 300.0
MAX_USER_LENGTH = 256
OPEN_PATHS = frozenset({"/healthz", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_token(token_file: str | os.PathLike[str] | None, *, where: str = "--token-file") -> str:
    """The API token from a 0600 file, else from FORKSCALE_API_TOKEN; SpecError when neither works."""
    if token_file is not None:
        path = Path(token_file).expanduser()
        check_secret_file(path, where)
        token = path.read_text(encoding="utf-8").strip()
        source = str(path)
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        source = TOKEN_ENV
        where = TOKEN_ENV
        if not token:
            raise SpecError(where, f"no API token: set {TOKEN_ENV} or pass --token-file (a file with mode 0600); "
                            "generate one with `openssl rand -hex 32`")
    if len(token) < MIN_TOKEN_LENGTH:
        raise SpecError(where, f"the API token in {source} is shorter than {MIN_TOKEN_LENGTH} characters; "
                        "generate one with `openssl rand -hex 32`")
    if any(c.isspace() for c in token):
        raise SpecError(where, f"the API token in {source} contains whitespace")
    register_secret(token)
    return token


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def make_app(controller: Controller, token: str, telemetry: Telemetry | None = None,
             controller_loop: asyncio.AbstractEventLoop | None = None) -> web.Application:
    """The API app. `controller_loop`: the controller's event loop when this app is served from
    another thread (None: the same loop)."""
    api = _Api(controller, controller_loop)
    app = web.Application(middlewares=[_errors, _auth(f"Bearer {token}".encode())], client_max_size=64 * 1024)
    app["controller"] = controller
    app.router.add_get("/healthz", api.healthz)
    if telemetry is not None:
        render = metrics_handler(telemetry)

        async def metrics(request: web.Request) -> web.StreamResponse:
            return cast(web.StreamResponse, await api.on_controller(render, request))  # the rendering cache lives there

        app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/pools", api.pools)
    app.router.add_get("/v1/pools/{pool}", api.pool)
    app.router.add_post("/v1/pools/{pool}/claim", api.claim)
    app.router.add_post("/v1/pools/{pool}/release", api.release)
    app.router.add_put("/v1/pools/{pool}/count", api.count)
    app.router.add_put("/v1/pools/{pool}/image", api.image)
    app.router.add_get("/v1/pools/{pool}/rollout", api.rollout_status)
    app.router.add_post("/v1/pools/{pool}/rollout", api.rollout)
    app.router.add_post("/v1/pools/{pool}/refresh", api.refresh)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControllerError as exc:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        return _error(exc.status, str(exc), headers)
    except SpecError as exc:  # a day-2 request naming a snapshot, VM or clone that is not there
        return _error(400, str(exc))
    except LedgerError as exc:  # e.g. another operation is open, or none is to pause
        return _error(409, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text
        return _error(exc.status, message, {k: v for k, v in exc.headers.items() if k == "Allow"})


def _auth(expected: bytes) -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        # a raw non-ASCII byte arrives as a surrogate escape: compare it as the bytes it was
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            why = "missing bearer token" if not given else "invalid bearer token"
            return _error(401, f"{why}: send Authorization: Bearer <token>",
                          {"WWW-Authenticate": 'Bearer realm="forkscale"'})
        return await handler(request)

    return auth


class _Api:
    """The request handlers; controller calls run on the controller's loop (`on_controller`)."""

    def __init__(self, controller: Controller, controller_loop: asyncio.AbstractEventLoop | None) -> None:
        self.controller = controller
        self.loop = controller_loop

    async def on_controller(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` (awaited when it is a coroutine) on the controller's loop; its exceptions
        (ControllerError ...) come back here."""
        async def call() -> Any:
            result = fn(*args)
            return await result if inspect.isawaitable(result) else result

        if self.loop is None or self.loop is asyncio.get_running_loop():
            return await call()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), self.loop))

    def known(self, name: str) -> None:
        """404 for an unknown pool, cheaply: status() reads every clone of the pool, which at
        100 claims/s kept the event loop busy (bench/claim.py: p50 ~700 ms -> a few ms)."""
        if name not in self.controller.pools:
            self.controller.status(name)  # raises the controller's 404, naming the pools

    async def healthz(self, request: web.Request) -> web.Response:
        c = self.controller
        doc: dict[str, Any] = {"ok": not c.stopping, "pools": len(c.pools), "dry_run": c.dry_run,
                               "stopping": c.stopping}
        if c.ownership is not None:  # which pools this replica acts on (a standby owns none and is healthy)
            status = c.ownership.status()
            doc.update(owns_pools=bool(status["owns"]), **status)
        return web.json_response(doc)

    async def pools(self, request: web.Request) -> web.Response:
        def all_status() -> list[dict[str, Any]]:
            return [self.controller.status(name) for name in self.controller.pools]

        return web.json_response({"pools": await self.on_controller(all_status)})

    async def pool(self, request: web.Request) -> web.Response:
        return web.json_response(await self.on_controller(self.controller.status, request.match_info["pool"]))

    async def claim(self, request: web.Request) -> web.Response:
        c, name = self.controller, request.match_info["pool"]
        self.known(name)  # 404 before the body is looked at
        body = await _body(request)
        user = _string(body, "user", required=True, limit=MAX_USER_LENGTH)
        wait_s = _number(body, "wait_s", default=0.0, low=0.0, high=MAX_WAIT_S)
        rec = c.try_claim(name, user)  # thread-safe: the warm-spare path never leaves this loop
        if rec is None and wait_s > 0:
            rec = await self.on_controller(c.claim, name, user, wait_s)
        if rec is None:
            retry = await self.on_controller(c.retry_after, name)
            why = "the controller is shutting down" if c.stopping else \
                f"no ready clone in pool {name!r} within {wait_s:g}s"
            return _error(503, f"{why}; retry after {retry}s", {"Retry-After": str(retry)})
        claimed_at = datetime.fromtimestamp(rec.claimed_at or 0, UTC).isoformat(timespec="milliseconds")
        return web.json_response({"vm": rec.name, "hostname": rec.hostname, "ip": rec.ip, "claimed_at": claimed_at,
                                  "pool": rec.pool, "user": rec.claimed_by})

    async def release(self, request: web.Request) -> web.Response:
        name = request.match_info["pool"]
        self.known(name)
        vm = _string(await _body(request), "vm", required=True, limit=256)
        return web.json_response(await self.on_controller(self.controller.release, name, vm), status=202)

    async def count(self, request: web.Request) -> web.Response:
        name = request.match_info["pool"]
        self.known(name)
        raw = (await _body(request)).get("count")
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise web.HTTPBadRequest(text=f"count must be a whole number >= 0, got {json.dumps(raw)}")
        return web.json_response(await self.on_controller(self.controller.set_count, name, raw), status=202)


    async def image(self, request: web.Request) -> web.Response:
        name = request.match_info["pool"]
        self.known(name)
        body = await _body(request)
        for key in ("snapshot", "source", "at"):
            if body.get(key) is not None:
                _string(body, key, required=False, limit=256)
        _string(body, "snapshot", required=True, limit=256)
        doc = await self.on_controller(self.controller.push_image, name, body, "api")
        return web.json_response(doc, status=200 if doc.get("dry_run") else 202)

    async def rollout_status(self, request: web.Request) -> web.Response:
        name = request.match_info["pool"]
        self.known(name)
        return web.json_response(await self.on_controller(self.controller.rollout_status, name))

    async def rollout(self, request: web.Request) -> web.Response:
        name = request.match_info["pool"]
        self.known(name)
        action = _string(await _body(request), "action", required=True, limit=32)
        return web.json_response(await self.on_controller(self.controller.rollout, name, action, "api"), status=202)

    async def refresh(self, request: web.Request) -> web.Response:
        name = request.match_info["pool"]
        self.known(name)
        vms = (await _body(request)).get("vms", [])
        if not isinstance(vms, list) or not all(isinstance(v, str) and v for v in vms) or len(vms) > 10_000:
            raise web.HTTPBadRequest(text="vms must be a list of clone names")
        return web.json_response(await self.on_controller(self.controller.refresh, name, vms, "api"), status=202)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _string(body: dict[str, Any], key: str, *, required: bool, limit: int) -> str:
    value = body.get(key)
    if value is None and required:
        raise web.HTTPBadRequest(text=f"{key} is required")
    if not isinstance(value, str) or not value.strip():
        raise web.HTTPBadRequest(text=f"{key} must be a non-empty string")
    if len(value) > limit:
        raise web.HTTPBadRequest(text=f"{key} is longer than {limit} characters")
    return value.strip()


def _number(body: dict[str, Any], key: str, *, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise web.HTTPBadRequest(text=f"{key} must be a number of seconds, got {json.dumps(value)}")
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{key} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)
