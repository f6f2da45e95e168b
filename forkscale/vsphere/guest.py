"""Guest operations: programs and files inside a guest through VMware Tools, with no network to it.

`GuestOps` is mixed into the driver and implements `forkscale.vsphere.ports.GuestOperations`:

* programs: `StartProgramInGuest` (a Linux guest runs `programPath arguments` through its shell,
  so stdio redirection works), `ListProcessesInGuest` for the exit code and the start and end
  times, `TerminateProcessInGuest`;
* files: `CreateTemporaryDirectoryInGuest`, `MakeDirectoryInGuest`, `DeleteDirectoryInGuest`,
  and `InitiateFileTransferToGuest` / `FromGuest`, whose answer is a one-shot URL (`/guestFile?
  id=..&token=..`) for one HTTP PUT or GET. Its host is `*` when it is the server the call went to
  (the vSphere API reference, FileTransferInformation.url): then it is replaced by the SOAP
  endpoint's host and port. The transfer goes over the SOAP connection's HTTP client, so TLS is
  verified exactly like the SOAP connection (the same CA, or the same loud `insecure`).

Faults: `GuestOperationsUnavailable` (VMware Tools not running yet, or restarting) is a
TemporaryError; a refused guest login (`InvalidGuestLogin`), a missing file, a denied permission
are PermanentErrors. The guest password is never part of a message.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from pyVmomi import vim, vmodl

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.vsphere.faults import map_fault
from forkscale.vsphere.model import GuestLogin, GuestProcess
from forkscale.vsphere.reads import retrieve_one
from forkscale.vsphere.transport import Soap

#: faults that say "VMware Tools cannot take the call right now": worth retrying
GUEST_TEMPORARY = {"GuestOperationsUnavailable", "ToolsUnavailable"}
_CHUNK = 64 * 1024
_TRANSFER_TIMEOUT_S = 600.0


def _auth(login: GuestLogin) -> Any:
    return vim.vm.guest.NamePasswordAuthentication(username=login.user, password=login.password,
                                                   interactiveSession=False)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def guest_fault(exc: BaseException, what: str) -> Exception:
    """A guest-operations fault as a PermanentError / TemporaryError (Tools not running: temporary)."""
    err = map_fault(exc, what)
    name = getattr(err, "fault", "")
    if name in GUEST_TEMPORARY and isinstance(err, PermanentError):
        return TemporaryError(str(err), name, delay=2.0)
    return err


def transfer_url(url: str, soap_url: str) -> str:
    """The URL to send the PUT/GET to: `*` as host means the server the SOAP call went to."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname != "*":
        return url
    soap = urllib.parse.urlsplit(soap_url)
    return urllib.parse.urlunsplit((parts.scheme or soap.scheme, soap.netloc, parts.path, parts.query, ""))


class GuestOps:
    """The driver's guest operations (see the module docstring); needs `self.soap` and an empty
    `self._guest_managers` dict."""

    soap: Soap
    _guest_managers: dict[str, Any]

    async def _manager(self, which: str) -> Any:
        """guestOperationsManager.processManager / .fileManager, read once."""
        cache = self._guest_managers
        if which not in cache:
            gom = self.soap.content.guestOperationsManager
            try:
                mgr = None if gom is None else await retrieve_one(self.soap, gom,
                                                                  vim.vm.guest.GuestOperationsManager, which)
            except vmodl.MethodFault as exc:
                raise map_fault(exc, f"read guestOperationsManager.{which}") from None
            if mgr is None:
                raise PermanentError(f"this vCenter has no guestOperationsManager.{which}", "NotSupported")
            cache[which] = mgr
        return cache[which]

    async def _guest_call(self, which: str, method: str, vm: str, login: GuestLogin, *args: Any, what: str) -> Any:
        mgr = await self._manager(which)
        try:
            return await self.soap.invoke(mgr, method, vim.VirtualMachine(vm), _auth(login), *args)
        except vmodl.MethodFault as exc:
            raise guest_fault(exc, what) from None

    # programs -------------------------------------------------------------------------------
    async def guest_start(self, vm: str, login: GuestLogin, program: str, args: str, *,
                          cwd: str | None = None) -> int:
        """Start `program args` in the guest (through its shell on Linux); returns the pid."""
        spec = vim.vm.guest.ProcessManager.ProgramSpec(programPath=program, arguments=args, workingDirectory=cwd)
        pid = await self._guest_call("processManager", "StartProgramInGuest", vm, login, spec,
                                     what=f"start a program in {vm}")
        return int(pid)

    async def guest_processes(self, vm: str, login: GuestLogin, pids: list[int]) -> list[GuestProcess]:
        """The processes `pids` (recently ended ones included, with their exit codes)."""
        infos = await self._guest_call("processManager", "ListProcessesInGuest", vm, login, pids,
                                       what=f"list processes in {vm}")
        return [GuestProcess(pid=int(p.pid), name=str(p.name or ""), start=_epoch(p.startTime),
                             end=_epoch(p.endTime), exit_code=None if p.exitCode is None else int(p.exitCode))
                for p in infos or []]

    async def guest_terminate(self, vm: str, login: GuestLogin, pid: int) -> bool:
        """Kill process `pid` in the guest; False when it had already ended (GuestProcessNotFound)."""
        try:
            await self._guest_call("processManager", "TerminateProcessInGuest", vm, login, pid,
                                   what=f"terminate process {pid} in {vm}")
        except PermanentError as exc:
            if exc.fault == "GuestProcessNotFound":
                return False
            raise
        return True

    # directories ----------------------------------------------------------------------------
    async def guest_temp_dir(self, vm: str, login: GuestLogin, prefix: str) -> str:
        """A new private directory in the guest's temporary directory."""
        path = await self._guest_call("fileManager", "CreateTemporaryDirectoryInGuest", vm, login, prefix, "", None,
                                      what=f"create a temporary directory in {vm}")
        return str(path)

    async def guest_make_dir(self, vm: str, login: GuestLogin, path: str) -> None:
        """`mkdir -p path` in the guest (an existing directory is fine)."""
        try:
            await self._guest_call("fileManager", "MakeDirectoryInGuest", vm, login, path, True,
                                   what=f"make directory {path} in {vm}")
        except PermanentError as exc:
            if exc.fault != "FileAlreadyExists":
                raise

    async def guest_remove_dir(self, vm: str, login: GuestLogin, path: str) -> None:
        """`rm -r path` in the guest."""
        await self._guest_call("fileManager", "DeleteDirectoryInGuest", vm, login, path, True,
                               what=f"delete directory {path} in {vm}")

    # transfers ------------------------------------------------------------------------------
    async def guest_upload(self, vm: str, login: GuestLogin, path: str, data: bytes | Path, mode: int) -> None:
        """Copy `data` (bytes, or a local file streamed) to `path` in the guest, overwriting it, with
        permission bits `mode`."""
        size = len(data) if isinstance(data, bytes) else os.stat(data).st_size
        attrs = vim.vm.guest.FileManager.PosixFileAttributes(permissions=mode)
        url = await self._guest_call("fileManager", "InitiateFileTransferToGuest", vm, login, path, attrs, size, True,
                                     what=f"copy a file to {path} in {vm}")
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        if isinstance(data, bytes):
            await self._transfer("PUT", str(url), f"upload to {path} in {vm}", data=data, headers=headers)
            return
        with open(data, "rb") as fh:
            await self._transfer("PUT", str(url), f"upload to {path} in {vm}", data=fh, headers=headers)

    async def guest_download(self, vm: str, login: GuestLogin, path: str, sink: Callable[[bytes], None]) -> int:
        """Stream the guest file `path` into `sink`, chunk by chunk; returns its size in bytes."""
        info = await self._guest_call("fileManager", "InitiateFileTransferFromGuest", vm, login, path,
                                      what=f"read {path} in {vm}")
        return await self._transfer("GET", str(info.url), f"download {path} from {vm}", sink=sink)

    async def _transfer(self, method: str, url: str, what: str, *, sink: Callable[[bytes], None] | None = None,
                        **kwargs: Any) -> int:
        http = self.soap.http
        assert http is not None, "open the driver first"
        target = transfer_url(url, self.soap.url)
        total = 0
        try:
            async with http.request(method, target, timeout=aiohttp.ClientTimeout(total=_TRANSFER_TIMEOUT_S),
                                    **kwargs) as resp:
                if resp.status != 200:
                    body = (await resp.content.read(300)).decode("utf-8", "replace").strip()
                    raise PermanentError(f"{what}: HTTP {resp.status} {resp.reason or ''} {body}".rstrip(),
                                         f"HTTP{resp.status}")
                if sink is not None:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        total += len(chunk)
                        sink(chunk)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PermanentError(f"{what}: TLS verification of {urllib.parse.urlsplit(target).netloc} failed: "
                                 f"{exc.certificate_error}", "SSLError") from exc
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            raise TemporaryError(f"{what}: {type(exc).__name__}: {exc}", "ConnectionError", delay=2.0) from exc
        return total

