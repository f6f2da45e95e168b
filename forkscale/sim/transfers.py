"""One-shot `/guestFile` transfer URLs of the twin's guest file manager (see `forkscale.sim.ops.guestfiles`).

A URL is `https://*/guestFile?id=N&token=T` (`http` for a twin started with `--http`): the host
`*` means "the server the call was made to", as in the vSphere API reference
(FileTransferInformation.url), so clients put the twin's address in. It serves one GET (the
whole file) or one PUT (exactly `fileSize` bytes; the file appears, with its permissions, only
once all of them arrived), needs no session cookie (the token is the credential), and expires
after `TRANSFER_TTL_S` or when the VM is powered off, reset or destroyed.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

from .guestfs import GuestFsError
from .vm import VM

TRANSFER_TTL_S = 600.0
_CHUNK = 256 * 1024


@dataclass
class Transfer:
    vm: VM
    boot: float | None
    path: str
    put: bool
    size: int = 0
    mode: int = 0o644
    expires: float = field(default_factory=lambda: time.monotonic() + TRANSFER_TTL_S)
    busy: bool = False


class Transfers:
    """The twin's pending `/guestFile` transfers (one-shot, by id and token)."""

    def __init__(self) -> None:
        self.scheme = "https"
        self.items: dict[str, tuple[str, Transfer]] = {}
        self._next = 0

    def add(self, transfer: Transfer) -> str:
        now = time.monotonic()
        for key in [k for k, (_, t) in self.items.items() if t.expires < now]:
            del self.items[key]
        self._next += 1
        ident, token = str(self._next), secrets.token_urlsafe(24)
        self.items[ident] = (token, transfer)
        return f"{self.scheme}://*/guestFile?id={ident}&token={token}"

    def take(self, ident: str, token: str, *, put: bool) -> Transfer | str:
        """The transfer for a request, or why there is none (the URL is used up, expired, or wrong)."""
        found = self.items.get(ident)
        if found is None or not secrets.compare_digest(found[0], token) or found[1].put != put:
            return "no such transfer (the URL was used already, expired, or is not for this method)"
        transfer = found[1]
        if transfer.expires < time.monotonic():
            del self.items[ident]
            return "the transfer URL expired"
        if transfer.busy:
            return "a transfer of this URL is already in progress"
        vm = transfer.vm
        if not vm.alive or vm.power_state != "poweredOn" or vm.boot_time != transfer.boot:
            del self.items[ident]
            return "the VM was powered off, reset or destroyed"
        transfer.busy = True
        return transfer

    def done(self, ident: str, *, ok: bool) -> None:
        found = self.items.get(ident)
        if found is None:
            return
        if ok:
            del self.items[ident]
        else:
            found[1].busy = False


def add_routes(app: web.Application, state: Transfers) -> None:
    """Serve `GET` / `PUT /guestFile?id=&token=`."""

    async def get(request: web.Request) -> web.StreamResponse:
        ident = request.query.get("id", "")
        found = state.take(ident, request.query.get("token", ""), put=False)
        if isinstance(found, str):
            return web.Response(status=404, text=found)
        ok = False
        try:
            fs = found.vm.world.sandboxes.fs(found.vm)
            try:
                fd = fs.open_read(found.path)
            except GuestFsError as exc:
                return web.Response(status=404, text=str(exc))
            try:
                size = os.fstat(fd).st_size
                resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                                   "Content-Length": str(size)})
                await resp.prepare(request)
                left = size
                while left > 0:
                    chunk = os.read(fd, min(_CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    await resp.write(chunk)
                await resp.write_eof()
                ok = True
                return resp
            finally:
                os.close(fd)
        finally:
            state.done(ident, ok=ok)

    async def put(request: web.Request) -> web.Response:
        ident = request.query.get("id", "")
        found = state.take(ident, request.query.get("token", ""), put=True)
        if isinstance(found, str):
            return web.Response(status=404, text=found)
        ok = False
        try:
            ok, status, text = await _receive(request, found)
            return web.Response(status=status, text=text)
        finally:
            state.done(ident, ok=ok)

    app.router.add_get("/guestFile", get)
    app.router.add_put("/guestFile", put)


async def _receive(request: web.Request, transfer: Transfer) -> tuple[bool, int, str]:
    """Write the PUT body to the guest file (all of it, or nothing)."""
    fs = transfer.vm.world.sandboxes.fs(transfer.vm)
    try:
        fd, tmp = fs.begin_write(transfer.path, transfer.mode)
    except GuestFsError as exc:
        return False, 403 if exc.kind == "GuestPermissionDenied" else 404, str(exc)
    written, ok = 0, False
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            written += len(chunk)
            if written > transfer.size:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        ok = written == transfer.size
    finally:
        os.close(fd)
        try:
            fs.finish_write(transfer.path, tmp, transfer.mode, ok=ok)
        except GuestFsError:
            ok = False
    if not ok:
        return False, 400, f"expected {transfer.size} bytes (fileSize), received {written} or more"
    return True, 200, ""
