"""The twin's guest file manager (`guestOperationsManager.fileManager`) and
`authManager.ValidateCredentialsInGuest` — to the vSphere API reference, for any client.

Files live in each Linux VM's sandbox (`forkscale.sim.sandbox`, resolved by `forkscale.sim.guestfs`):
the same files the VM's guest programs see. Methods: `MakeDirectoryInGuest`, `DeleteFileInGuest`,
`DeleteDirectoryInGuest`, `MoveDirectoryInGuest`, `MoveFileInGuest`, `CreateTemporaryFileInGuest`,
`CreateTemporaryDirectoryInGuest` (default directory `/tmp`), `ListFilesInGuest` (a directory's
entries, `.` and `..` first, or the file itself; `matchPattern` is a regular expression, default
50 results per call with `remaining`), `ChangeFileAttributesInGuest` (permissions, times),
`InitiateFileTransferFromGuest` (`FileTransferInformation`: size, POSIX attributes, URL) and
`InitiateFileTransferToGuest` (a URL).

The transfer URLs are one-shot `/guestFile` URLs served by the twin's HTTPS server
(`forkscale.sim.transfers`).

Faults as a guest raises them: a missing path `FileNotFound`, an existing one without overwrite
`FileAlreadyExists`, a directory or symlink where a file is needed `NotAFile`, a non-empty
directory `DirectoryNotEmpty`, a read-only system directory `GuestPermissionDenied`; the VM and
login checks are those of the process manager (`InvalidPowerState`, `GuestOperationsUnavailable`,
`InvalidGuestLogin`). Windows guests have no sandbox: `OperationNotSupportedByGuest`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..guestfs import Entry, GuestFS, GuestFsError
from ..transfers import Transfer
from ..vm import VM
from .guest import check_auth, guest_vm

DEFAULT_LIST = 50
_FAULTS: dict[str, Any] = {
    "FileNotFound": vim.fault.FileNotFound, "FileAlreadyExists": vim.fault.FileAlreadyExists,
    "NotAFile": vim.fault.NotAFile, "NotADirectory": vim.fault.NotADirectory,
    "DirectoryNotEmpty": vim.fault.DirectoryNotEmpty, "CannotAccessFile": vim.fault.CannotAccessFile,
}


# checks -------------------------------------------------------------------------------------------
def _guest_fs(ctx: Ctx, vm: Any, auth: Any) -> tuple[VM, GuestFS]:
    target = guest_vm(ctx, vm)
    check_auth(target, auth)
    if target.guest_id.startswith("win"):
        raise vim.fault.OperationNotSupportedByGuest(msg="the twin's Windows guests have no file system")
    return target, target.world.sandboxes.fs(target)


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
    mtime: Any = getattr(fileAttributes, "modificationTime", None)
    atime: Any = getattr(fileAttributes, "accessTime", None) or mtime  # the one not given takes the other's
    times = None if atime is None else (atime.timestamp(), (mtime or atime).timestamp())
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
    url = ctx.twin.guest_transfers.add(Transfer(vm=target, boot=target.boot_time, path=path, put=False, size=entry.size))
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
    return str(ctx.twin.guest_transfers.add(Transfer(vm=target, boot=target.boot_time, path=path, put=True,
                                                size=int(fileSize), mode=0o644 if mode is None else int(mode))))


@method("ValidateCredentialsInGuest")
def validate_credentials(ctx: Ctx, this: Any, vm: Any, auth: Any) -> None:
    check_auth(guest_vm(ctx, vm), auth)
