"""The twin's guest file manager (`guestOperationsManager.fileManager`), its `/guestFile` transfer
URLs, and `authManager.ValidateCredentialsInGuest` — to the vSphere API reference, for any client.

Files live in each Linux VM's sandbox (`forkscale.sim.sandbox`, resolved by `forkscale.sim.guestfs`):
the same files the VM's guest programs see. Methods: `MakeDirectoryInGuest`, `DeleteFileInGuest`,
`DeleteDirectoryInGuest`, `MoveDirectoryInGuest`, `MoveFileInGuest`, `CreateTemporaryFileInGuest`,
`CreateTemporaryDirectoryInGuest` (default directory `/tmp`), `ListFilesInGuest` (a directory's
entries, `.` and `..` first, or the file itself; `matchPattern` is a regular expression, default
50 results per call with `remaining`), `ChangeFileAttributesInGuest` (permissions, times),
`InitiateFileTransferFromGuest` (`FileTransferInformation`: size, POSIX attributes, URL) and
`InitiateFileTransferToGuest` (a URL).

A transfer URL is `https://*/guestFile?id=N&token=T` (`http` for a twin started with `--http`):
the host `*` means "the server the call was made to", as in the API reference, so clients put the
twin's address in. It serves one GET (the whole file) or one PUT (exactly `fileSize` bytes; the
file appears, with its permissions, only once all of them arrived), needs no session cookie (the
token is the credential), and expires after `TRANSFER_TTL_S` or when the VM is powered off,
reset or destroyed.

Faults as a guest raises them: a missing path `FileNotFound`, an existing one without overwrite
`FileAlreadyExists`, a directory or symlink where a file is needed `NotAFile`, a non-empty
directory `DirectoryNotEmpty`, a read-only system directory `GuestPermissionDenied`; the VM and
login checks are those of the process manager (`InvalidPowerState`, `GuestOperationsUnavailable`,
`InvalidGuestLogin`). Windows guests have no sandbox: `OperationNotSupportedByGuest`.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pyVmomi import vim, vmodl

from .dispatch import Ctx, method
from .guestfs import Entry, GuestFS, GuestFsError
from .guestops import check_auth, guest_vm
from .sandbox import sandboxes
from .service import Twin
from .vm import VM

TRANSFER_TTL_S = 600.0
DEFAULT_LIST = 50
_CHUNK = 256 * 1024
_FAULTS: dict[str, Any] = {
    "FileNotFound": vim.fault.FileNotFound, "FileAlreadyExists": vim.fault.FileAlreadyExists,
    "NotAFile": vim.fault.NotAFile, "NotADirectory": vim.fault.NotADirectory,
    "DirectoryNotEmpty": vim.fault.DirectoryNotEmpty, "CannotAccessFile": vim.fault.CannotAccessFile,
}


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


def transfers(twin: Twin) -> Transfers:
    state = getattr(twin, "guest_transfers", None)
    if state is None:
        state = Transfers()
        twin.guest_transfers = state  # type: ignore[attr-defined]
    return state


# checks -------------------------------------------------------------------------------------------
def _guest_fs(ctx: Ctx, vm: Any, auth: Any) -> tuple[VM, GuestFS]:
    target = guest_vm(ctx, vm)
    check_auth(target, auth)
    if target.guest_id.startswith("win"):
        raise vim.fault.OperationNotSupportedByGuest(msg="the twin's Windows guests have no file system")
    return target, sandboxes(target.world).fs(target)


def _fault(exc: GuestFsError) -> Exception:
    if exc.kind == "GuestPermissionDenied":
        return vim.fault.GuestPermissionDenied(msg=str(exc))
    if exc.kind == "InvalidArgument":
        return vmodl.fault.InvalidArgument(msg=str(exc), invalidProperty=exc.path)
    return _FAULTS.get(exc.kind, vim.fault.CannotAccessFile)(msg=str(exc), file=exc.path)


def _path(value: Any, name: str) -> str:
    if not value or not str(value).startswith("/"):
        raise vmodl.fault.InvalidArgument(msg=f"{name} must be an absolute guest path", invalidProperty=name)
    return str(value)


def _attrs(e: Entry) -> Any:
    dt = datetime.fromtimestamp
    return vim.vm.guest.FileManager.PosixFileAttributes(
        modificationTime=dt(e.mtime, tz=UTC), accessTime=dt(e.atime, tz=UTC), symlinkTarget=e.target,
        ownerId=e.uid, groupId=e.gid, permissions=e.mode)


# handlers -----------------------------------------------------------------------------------------
@method("MakeDirectoryInGuest")
def make_directory(ctx: Ctx, this: Any, vm: Any, auth: Any, directoryPath: str,
                   createParentDirectories: bool = False) -> None:
    _, fs = _guest_fs(ctx, vm, auth)
    try:
        fs.make_dir(_path(directoryPath, "directoryPath"), parents=bool(createParentDirectories))
    except GuestFsError as exc:
        raise _fault(exc) from None


@method("DeleteFileInGuest")
def delete_file(ctx: Ctx, this: Any, vm: Any, auth: Any, filePath: str) -> None:
    _, fs = _guest_fs(ctx, vm, auth)
    try:
        fs.remove_file(_path(filePath, "filePath"))
    except GuestFsError as exc:
        raise _fault(exc) from None


@method("DeleteDirectoryInGuest")
def delete_directory(ctx: Ctx, this: Any, vm: Any, auth: Any, directoryPath: str, recursive: bool = False) -> None:
    _, fs = _guest_fs(ctx, vm, auth)
    try:
        fs.remove_dir(_path(directoryPath, "directoryPath"), recursive=bool(recursive))
    except GuestFsError as exc:
        raise _fault(exc) from None


@method("MoveDirectoryInGuest")
def move_directory(ctx: Ctx, this: Any, vm: Any, auth: Any, srcDirectoryPath: str, dstDirectoryPath: str) -> None:
    _, fs = _guest_fs(ctx, vm, auth)
    try:
        fs.move(_path(srcDirectoryPath, "srcDirectoryPath"), _path(dstDirectoryPath, "dstDirectoryPath"),
                overwrite=False, directory=True)
    except GuestFsError as exc:
        raise _fault(exc) from None


@method("MoveFileInGuest")
def move_file(ctx: Ctx, this: Any, vm: Any, auth: Any, srcFilePath: str, dstFilePath: str,
              overwrite: bool = False) -> None:
    _, fs = _guest_fs(ctx, vm, auth)
    try:
        fs.move(_path(srcFilePath, "srcFilePath"), _path(dstFilePath, "dstFilePath"), overwrite=bool(overwrite),
                directory=False)
    except GuestFsError as exc:
        raise _fault(exc) from None


@method("CreateTemporaryDirectoryInGuest", "CreateTemporaryFileInGuest")
def create_temporary(ctx: Ctx, this: Any, vm: Any, auth: Any, prefix: str = "", suffix: str = "",
                     directoryPath: str | None = None) -> str:
    _, fs = _guest_fs(ctx, vm, auth)
    if "/" in (prefix or "") + (suffix or ""):
        raise vmodl.fault.InvalidArgument(msg="prefix and suffix must not contain '/'", invalidProperty="prefix")
    where = _path(directoryPath, "directoryPath") if directoryPath else "/tmp"
    try:
        if ctx.method == "CreateTemporaryDirectoryInGuest":
            return fs.temp_dir(where, prefix or "", suffix or "")
        return fs.temp_file(where, prefix or "", suffix or "")
    except GuestFsError as exc:
        raise _fault(exc) from None


@method("ListFilesInGuest")
def list_files(ctx: Ctx, this: Any, vm: Any, auth: Any, filePath: str, index: int | None = None,
               maxResults: int | None = None, matchPattern: str | None = None) -> Any:
    _, fs = _guest_fs(ctx, vm, auth)
    try:
        found = fs.list(_path(filePath, "filePath"), matchPattern)
    except GuestFsError as exc:
        raise _fault(exc) from None
    start = max(0, int(index or 0))
    count = int(maxResults) if maxResults else DEFAULT_LIST
    page = found[start:start + count]
    files = [vim.vm.guest.FileManager.FileInfo(path=e.name, type=e.kind, size=e.size, attributes=_attrs(e))
             for e in page]
    return vim.vm.guest.FileManager.ListFileInfo(files=files, remaining=max(0, len(found) - start - len(page)))


@method("ChangeFileAttributesInGuest")
def change_attributes(ctx: Ctx, this: Any, vm: Any, auth: Any, guestFilePath: str, fileAttributes: Any) -> None:
    _, fs = _guest_fs(ctx, vm, auth)
    mode = getattr(fileAttributes, "permissions", None)
    mtime, atime = getattr(fileAttributes, "modificationTime", None), getattr(fileAttributes, "accessTime", None)
    times = None
    if mtime is not None or atime is not None:
        now = time.time()
        times = ((atime or mtime).timestamp() if (atime or mtime) else now, (mtime or atime).timestamp())
    try:
        fs.change(_path(guestFilePath, "guestFilePath"), mode=None if mode is None else int(mode), times=times)
    except GuestFsError as exc:
        raise _fault(exc) from None


@method("InitiateFileTransferFromGuest")
def transfer_from_guest(ctx: Ctx, this: Any, vm: Any, auth: Any, guestFilePath: str) -> Any:
    target, fs = _guest_fs(ctx, vm, auth)
    path = _path(guestFilePath, "guestFilePath")
    try:
        entry = fs.stat(path)
    except GuestFsError as exc:
        raise _fault(exc) from None
    if entry.kind != "file":
        raise vim.fault.NotAFile(msg=f"{path} is a {entry.kind}, not a file", file=path)
    url = transfers(ctx.twin).add(Transfer(vm=target, boot=target.boot_time, path=path, put=False, size=entry.size))
    return vim.vm.guest.FileManager.FileTransferInformation(attributes=_attrs(entry), size=entry.size, url=url)


@method("InitiateFileTransferToGuest")
def transfer_to_guest(ctx: Ctx, this: Any, vm: Any, auth: Any, guestFilePath: str, fileAttributes: Any,
                      fileSize: int, overwrite: bool) -> str:
    target, fs = _guest_fs(ctx, vm, auth)
    path = _path(guestFilePath, "guestFilePath")
    if int(fileSize) < 0:
        raise vmodl.fault.InvalidArgument(msg="fileSize must not be negative", invalidProperty="fileSize")
    try:
        fs.check_writable(path, overwrite=bool(overwrite))
    except GuestFsError as exc:
        raise _fault(exc) from None
    mode = getattr(fileAttributes, "permissions", None)
    return str(transfers(ctx.twin).add(Transfer(vm=target, boot=target.boot_time, path=path, put=True,
                                                size=int(fileSize), mode=0o644 if mode is None else int(mode))))


@method("ValidateCredentialsInGuest")
def validate_credentials(ctx: Ctx, this: Any, vm: Any, auth: Any) -> None:
    check_auth(guest_vm(ctx, vm), auth)


# /guestFile ---------------------------------------------------------------------------------------
def add_routes(app: web.Application, twin: Twin) -> None:
    """Serve `GET` / `PUT /guestFile?id=&token=`."""
    state = transfers(twin)

    async def get(request: web.Request) -> web.StreamResponse:
        ident = request.query.get("id", "")
        found = state.take(ident, request.query.get("token", ""), put=False)
        if isinstance(found, str):
            return web.Response(status=404, text=found)
        ok = False
        try:
            fs = sandboxes(found.vm.world).fs(found.vm)
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
    fs = sandboxes(transfer.vm.world).fs(transfer.vm)
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
