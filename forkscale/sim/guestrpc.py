"""Guest RPC endpoints for the `vmware-rpctool` stand-in (forkscale/sim/rpctool.py).

A real guest talks to its VM over the VMware backdoor; the stand-in talks to the twin over
HTTP(S) instead, under `/forkscale-sim/guest/`, as one VM:

| route | what |
|---|---|
| `POST token` `{"vm": name-or-moid}` | admin basic auth (the twin's user/password): a token for that VM |
| `GET info?key=guestinfo.K` | `info-get`: `{"value": ...}`, 404 when unset |
| `POST info` `{"key", "value"}` | `info-set`: stored in the VM's `config.extraConfig` (version bumped) |
| `POST freeze` | `instantclone.freeze`: the VM gets an external guest agent and freezes; `{"since", "boot"}` |
| `GET clones?since=N&boot=B&wait=S` | long poll: clones made from the VM since N (each with its token), and the VM's state; 503 when the twin shuts down |
| `POST resumed` | a clone's continuation is running: VMware Tools report running |

Every route but `token` takes `Authorization: Bearer <token>`. A token is
`<moid>.<HMAC-SHA256(per-twin secret, moid)>`: it names one VM and cannot be forged without the
secret, which never leaves the twin. Clones get their tokens from the `clones` answer to their
source's blocked freeze call, as a clone inherits its source's backdoor channel. Only
`guestinfo.*` keys are reachable, as from a real guest, and only while the guest is executing
(powered on and not frozen) — except `clones`, which is the source's blocked freeze call itself.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .vm import VM

if TYPE_CHECKING:
    from .service import Twin
    from .world import World

PREFIX = "/forkscale-sim/guest"
MAX_WAIT_S = 60.0
KEEP_CLONES = 10_000


class GuestRPC:
    """Tokens and the record of clones made from frozen sources, for the stand-in's long polls."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._secret = secrets.token_bytes(32)
        self.seq = 0
        self.clones: dict[str, list[tuple[int, str]]] = {}  # source moid -> [(seq, clone moid)]
        self.closing: asyncio.Event | None = None  # set when the server shuts down: long polls end
        world.clone_hooks.append(self.on_clone)

    def token(self, vm: VM) -> str:
        return f"{vm.moid}.{self._mac(vm.moid)}"

    def _mac(self, moid: str) -> str:
        return hmac.new(self._secret, moid.encode(), hashlib.sha256).hexdigest()[:40]

    def vm_for(self, token: str) -> VM | None:
        moid, _, mac = token.rpartition(".")
        if not moid or not secrets.compare_digest(mac, self._mac(moid)):
            return None
        vm = self.world.objects.get(moid)
        return vm if isinstance(vm, VM) else None

    def on_clone(self, source: VM, clone: VM) -> None:
        self.seq += 1
        kids = self.clones.setdefault(source.moid, [])
        kids.append((self.seq, clone.moid))
        del kids[:-KEEP_CLONES]

    def clones_since(self, source: VM, since: int) -> list[dict[str, Any]]:
        out = []
        for seq, moid in self.clones.get(source.moid, []):
            clone = self.world.objects.get(moid)
            if seq > since and isinstance(clone, VM):
                out.append({"seq": seq, "vm": clone.moid, "name": clone.name, "token": self.token(clone)})
        return out


def find_vm(world: World, name_or_moid: str) -> VM | None:
    """A VM by moid, else the first VM with that name."""
    mo = world.objects.get(name_or_moid)
    if isinstance(mo, VM):
        return mo
    return next((vm for vm in world.instances(VM) if vm.name == name_or_moid), None)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _guest_running(vm: VM) -> str | None:
    """Why the guest cannot execute (so cannot run the stand-in), or None."""
    if not vm.alive:
        return "the VM no longer exists"
    if vm.power_state != "poweredOn":
        return f"the VM is {vm.power_state}: its guest is not running"
    if vm.frozen:
        return "the VM is frozen: its guest is not executing"
    return None


def _guestinfo_key(key: Any) -> str | None:
    if not isinstance(key, str) or not key.startswith("guestinfo.") or len(key) <= len("guestinfo.") or len(key) > 256:
        return None
    if any(c.isspace() or c in "\"'" for c in key):
        return None
    return key


Route = Callable[["GuestRoutes", web.Request], Awaitable[web.Response]]
GuestHandler = Callable[["GuestRoutes", web.Request, VM], Awaitable[web.Response]]


def guest_route(*, running: bool = True) -> Callable[[GuestHandler], Route]:
    """A route called by a guest, handed the VM its bearer token names (401 without a valid one),
    and, when `running`, only while that guest is executing (409 otherwise)."""

    def wrap(handler: GuestHandler) -> Route:
        @functools.wraps(handler)
        async def route(self: GuestRoutes, request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return _error(401, "a guest token is required (Authorization: Bearer <token>)")
            vm = self.rpc.vm_for(auth[len("Bearer "):].strip())
            if vm is None:
                return _error(401, "invalid guest token, or the VM no longer exists")
            if running:
                why = _guest_running(vm)
                if why:
                    return _error(409, why)
            return await handler(self, request, vm)

        return route

    return wrap


class GuestRoutes:
    """The stand-in's routes, served under /forkscale-sim/guest/."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.rpc = twin.guest_rpc

    def add_to(self, app: web.Application) -> None:
        app.on_shutdown.append(self.shutdown)
        app.router.add_post(f"{PREFIX}/token", self.token)
        app.router.add_get(f"{PREFIX}/info", self.info_get)
        app.router.add_post(f"{PREFIX}/info", self.info_set)
        app.router.add_post(f"{PREFIX}/freeze", self.freeze)
        app.router.add_get(f"{PREFIX}/clones", self.clones)
        app.router.add_post(f"{PREFIX}/resumed", self.resumed)

    async def shutdown(self, app: web.Application) -> None:
        self.rpc.closing = self.rpc.closing or asyncio.Event()
        self.rpc.closing.set()

    async def token(self, request: web.Request) -> web.Response:
        twin = self.twin
        expected = "Basic " + base64.b64encode(f"{twin.user}:{twin.password}".encode()).decode()
        if not secrets.compare_digest(request.headers.get("Authorization", ""), expected):
            return _error(401, "unauthorized")
        try:
            data = await request.json()
            name = str(data["vm"])
        except (ValueError, KeyError, TypeError):
            return _error(400, 'expected {"vm": "<name or moid>"}')
        vm = find_vm(twin.world, name)
        if vm is None:
            return _error(404, f"no VM {name!r}")
        return web.json_response({"vm": vm.moid, "name": vm.name, "token": self.rpc.token(vm)})

    @guest_route()
    async def info_get(self, request: web.Request, vm: VM) -> web.Response:
        key = _guestinfo_key(request.query.get("key"))
        if key is None:
            return _error(400, "only guestinfo.* keys are readable from the guest")
        value = vm.extra.get(key)
        if value is None:
            return _error(404, "No value found")
        return web.json_response({"value": value})

    @guest_route()
    async def info_set(self, request: web.Request, vm: VM) -> web.Response:
        try:
            data = await request.json()
            key, value = _guestinfo_key(data.get("key")), data.get("value")
        except (ValueError, AttributeError):
            return _error(400, 'expected {"key": "guestinfo.K", "value": "V"}')
        if key is None or not isinstance(value, str):
            return _error(400, "only guestinfo.* keys are writable from the guest, with a string value")
        vm.extra[key] = value
        vm.changed()
        return web.json_response({"ok": True})

    @guest_route()
    async def freeze(self, request: web.Request, vm: VM) -> web.Response:
        from .ops.guest import freeze_later

        vm.guest.agent = "external"
        vm.changed()
        delay = freeze_later(vm)
        return web.json_response({"vm": vm.moid, "since": self.rpc.seq, "boot": vm.boot_time, "freeze_s": delay})

    @guest_route(running=False)  # the source's blocked freeze call itself
    async def clones(self, request: web.Request, vm: VM) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_WAIT_S)
            boot = float(request.query["boot"]) if request.query.get("boot") else None
        except ValueError:
            return _error(400, "since, wait and boot are numbers")
        found = await self._clones_or_cycle(vm, since, boot, time.monotonic() + wait)
        if found is None:
            return _error(503, "the twin is shutting down")
        return web.json_response({
            "clones": found, "next": max([c["seq"] for c in found], default=since),
            "source": {"vm": vm.moid, "alive": vm.alive, "power": vm.power_state, "frozen": vm.frozen,
                       "boot": vm.boot_time}})

    async def _clones_or_cycle(self, vm: VM, since: int, boot: float | None,
                               deadline: float) -> list[dict[str, Any]] | None:
        """Clones of `vm` since `since`, once there are some, the source is power-cycled (or gone) or the
        deadline passes; None if the twin shuts down meanwhile."""
        closing = self.rpc.closing = self.rpc.closing or asyncio.Event()
        while True:
            if closing.is_set():
                return None
            found = self.rpc.clones_since(vm, since)
            cycled = not vm.alive or vm.power_state != "poweredOn" or (boot is not None and vm.boot_time != boot)
            left = deadline - time.monotonic()
            if found or cycled or left <= 0:
                return found
            waits = {asyncio.ensure_future(self.twin.world.changed().wait()), asyncio.ensure_future(closing.wait())}
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the request is cancelled (shutdown): no waiter left pending
                for job in waits:
                    job.cancel()

    @guest_route()
    async def resumed(self, request: web.Request, vm: VM) -> web.Response:
        if not vm.guest.tools_running:
            vm.guest.tools_running = True
            vm.changed()
        return web.json_response({"ok": True})
