"""Serve the twin over HTTP(S): `/sdk` (SOAP), `/sdk/vimServiceVersions.xml`, and an admin API.

`start_in_thread()` is the one documented call for running it in-process (demo, tests): it
returns a `SimHandle` with the URL, credentials and CA file, and stops cleanly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from aiohttp import web

from . import builder
from .admin import ADMIN, admin_action
from .certs import certificates, make_certificates  # noqa: F401  (make_certificates: tests make their own CAs)
from .folderhttp import FolderRoutes
from .guestrpc import GuestRoutes
from .keeper import Keeper
from .service import COOKIE, Twin
from .soap import API_VERSION
from .transfers import add_routes as add_transfer_routes

VERSIONS_XML = f"""<?xml version="1.0" encoding="UTF-8" ?>
<namespaces version="1.0">
 <namespace>
  <name>urn:vim25</name>
  <version>{API_VERSION}</version>
  <priorVersions>
   <version>8.0.2.0</version><version>8.0.1.0</version><version>8.0.0.0</version><version>7.0.3.0</version>
   <version>7.0.2.0</version><version>7.0.1.0</version><version>7.0</version><version>6.7.3</version>
   <version>6.7</version><version>6.5</version><version>6.0</version><version>5.5</version>
  </priorVersions>
 </namespace>
</namespaces>
"""
DEFAULT_USER = "administrator@vsphere.local"


@dataclass
class SimHandle:
    """A running twin: where it listens and how to log in."""

    url: str
    user: str
    password: str
    ca_file: str | None
    twin: Twin
    loop: asyncio.AbstractEventLoop
    _stop: Any = field(repr=False, default=None)

    def as_json(self) -> dict[str, Any]:
        return {"url": self.url, "user": self.user, "password": self.password, "ca_file": self.ca_file}

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(twin, ...)` on the twin's event loop (thread-safe) and return its result."""

        async def run() -> Any:
            result = fn(self.twin, *args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def admin(self, action: str, **kwargs: Any) -> Any:
        return self.call(lambda twin: admin_action(twin, action, kwargs))

    def stop(self) -> None:
        """A clean stop: with a state directory, the world is saved once more."""
        if self._stop is not None:
            self._stop()
            self._stop = None

    def kill(self) -> None:
        """Stop as if killed (SIGKILL): no last save; a restart finds the world as last saved."""
        if self._stop is not None and self.twin.keeper is not None:
            self.twin.keeper.crashed = True
        self.stop()

    def wait_saved(self, timeout: float = 30.0) -> None:
        """Wait until the world as it is now is saved in the state directory (tests, before `kill`)."""
        target = self.call(lambda twin: twin.world.seq)
        deadline = time.monotonic() + timeout
        while self.call(lambda twin: twin.keeper.saved_seq if twin.keeper else target) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the twin's world was not saved within {timeout} s")
            time.sleep(0.05)


def make_app(twin: Twin, password: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def sdk(request: web.Request) -> web.Response:
        body = await request.read()
        cookie = _session_cookie(request)
        if b"<Fetch " in body[:2000] or b"<Fetch>" in body[:2000]:
            status, out = await twin.fetch(body, cookie)
            return web.Response(status=status, body=out, content_type="text/xml", charset="utf-8")
        status, out, new_session = await twin.handle(body, cookie, request.remote or "",
                                                     request.headers.get("User-Agent", ""))
        resp = web.Response(status=status, body=out, content_type="text/xml", charset="utf-8")
        if new_session:
            resp.headers["Set-Cookie"] = f'{COOKIE}="{new_session}"; Path=/; HttpOnly; Secure'
        return resp

    async def versions(request: web.Request) -> web.Response:
        return web.Response(text=VERSIONS_XML, content_type="text/xml")

    async def admin(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{twin.user}:{password}".encode()).decode()
        if not secrets.compare_digest(auth, expected):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            data = await request.json() if request.method == "POST" else {"action": "stats"}
            result = admin_action(twin, data.pop("action"), data)
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    app.router.add_post("/sdk", sdk)
    app.router.add_post("/sdk/", sdk)
    app.router.add_get("/sdk/vimServiceVersions.xml", versions)
    app.router.add_get(ADMIN, admin)
    app.router.add_post(ADMIN, admin)
    GuestRoutes(twin).add_to(app)
    FolderRoutes(twin, _session_cookie).add_to(app)
    add_transfer_routes(app, twin.guest_transfers)
    return app


def _session_cookie(request: web.Request) -> str | None:
    raw = request.headers.get("Cookie")
    if raw:
        try:
            jar = SimpleCookie()
            jar.load(raw)
            if COOKIE in jar:
                return jar[COOKIE].value.strip('"')
        except Exception:
            return None
    vc = request.headers.get("vmware_soap_session")
    return vc.strip('"') if vc else None


@dataclass
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 8989
    world: str | None = None
    time_scale: float = 1.0
    seed: int = 0
    http: bool = False
    user: str = DEFAULT_USER
    password: str | None = None
    state_dir: str | None = None
    persist: bool = False  # keep the world in state_dir across restarts
    fresh: bool = False  # with persist: start from the world file, replacing the saved world


def _state_dir(opts: SimOptions) -> Path:
    return Path(opts.state_dir or os.environ.get("FORKSCALE_SIM_DIR") or Path.home() / ".forkscale" / "sim")


async def serve(opts: SimOptions, ready: Any = None) -> None:
    """Run until cancelled. `ready(handle_parts)` is called once listening."""
    password = opts.password or os.environ.get("FORKSCALE_SIM_PASSWORD")
    spec = builder.load_world(opts.world)
    twin = builder.build(spec, user=opts.user, password=password or secrets.token_urlsafe(12),
                         time_scale=opts.time_scale, seed=opts.seed)
    directory = _state_dir(opts)
    keeper = _keep(twin, directory, opts, password) if opts.persist else None
    if keeper is not None and keeper.saved_seq < 0:
        await keeper.save()  # a new world (its password) is on disk before anyone can log in to it
    saver = asyncio.get_running_loop().create_task(keeper.run()) if keeper is not None else None
    runner: web.AppRunner | None = None
    try:
        app = make_app(twin, twin.password)
        twin.guest_transfers.scheme = "http" if opts.http else "https"
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        ssl_ctx = None
        ca_file = None
        if not opts.http:
            ca, cert, key = certificates(directory)
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(cert, key)
            ca_file = str(ca)
        site = web.TCPSite(runner, opts.host, opts.port, ssl_context=ssl_ctx, backlog=1024, reuse_address=True)
        await site.start()
        port = int(runner.addresses[0][1])  # the bound one, when opts.port is 0
        scheme = "http" if opts.http else "https"
        host = f"[{opts.host}]" if ":" in opts.host else opts.host
        if ready is not None:
            ready(f"{scheme}://{host}:{port}/sdk", opts.user, twin.password, ca_file, twin)
        await asyncio.Event().wait()
    finally:
        if saver is not None:
            saver.cancel()
        for job in list(twin.world.tasks.background):
            job.cancel()  # tasks in flight are lost, as on a vCenter that stops
        if runner is not None:
            await runner.cleanup()
        if keeper is not None:
            await keeper.close()
        twin.world.sandboxes.close()  # the guests' programs (and, without a state directory, files) go


def _keep(twin: Twin, directory: Path, opts: SimOptions, password: str | None) -> Keeper:
    """The keeper of the twin's state directory, with the saved world (if any) in place."""
    keeper = Keeper(twin, directory)
    keeper.lock()
    try:
        restored = not opts.fresh and keeper.load()
    except BaseException:
        keeper.release()
        raise
    if password is not None or not restored:  # an explicit password wins; else the saved one stays
        twin.password = password or twin.password
    twin.keeper = keeper
    sandboxes = twin.world.sandboxes
    sandboxes.keep(directory / "guests")  # the guests' files are their disks: they stay too
    return keeper


def start_in_thread(*, world: str | None = None, time_scale: float = 0.01, seed: int = 0, http: bool = False,
                    password: str | None = None, port: int = 0, state_dir: str | None = None,
                    persist: bool = False, fresh: bool = False) -> SimHandle:
    """Start a twin on its own thread and event loop; returns once it accepts connections.

    `state_dir` holds the CA and certificate; with `persist` it keeps the world too: a twin
    started again on the same directory (and `port`) finds the world as it was saved.
    """
    opts = SimOptions(port=port, world=world, time_scale=time_scale, seed=seed, http=http,
                      password=password or (None if persist else secrets.token_urlsafe(12)),
                      state_dir=state_dir, persist=persist, fresh=fresh)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def ready(url: str, user: str, pw: str, ca: str | None, twin: Twin) -> None:
        box.update(url=url, user=user, password=pw, ca_file=ca, twin=twin)
        started.set()

    main: asyncio.Task[None] | None = None

    def run() -> None:
        nonlocal main
        asyncio.set_event_loop(loop)
        main = loop.create_task(serve(opts, ready))
        try:
            loop.run_until_complete(main)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # surface start-up errors to the caller
            box["error"] = exc
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="forkscale-twin", daemon=True)
    thread.start()
    started.wait(timeout=60)
    if "error" in box:
        raise RuntimeError(f"the twin failed to start: {box['error']}") from box["error"]
    if "url" not in box:
        raise RuntimeError("the twin did not start within 60 s")

    def stop() -> None:
        if main is not None and not loop.is_closed():
            loop.call_soon_threadsafe(main.cancel)
        thread.join(timeout=10)

    return SimHandle(url=box["url"], user=box["user"], password=box["password"], ca_file=box["ca_file"],
                     twin=box["twin"], loop=loop, _stop=stop)


def print_banner(url: str, user: str, password: str, ca_file: str | None) -> None:
    print(f"url: {url}")
    print(f"user: {user}")
    print(f"password: {password}")
    print(f"ca_file: {ca_file or ''}")
    print(json.dumps({"url": url, "user": user, "password": password, "ca_file": ca_file}), flush=True)
