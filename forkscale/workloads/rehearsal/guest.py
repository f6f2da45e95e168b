"""How a rehearsal reaches its clone's guest: through guest operations, or over SSH.

Both channels offer the same three things: `ready(deadline)` (wait until the guest can run a
step, or raise `GuestUnreachable` saying what was waited for), `upload(...)` and `run(step)`.

**guestops** (`GuestOpsChannel`) needs no network between forkscale and the clone — the clone's
NICs may be disconnected. Ready means VMware Tools run in the clone and the guest account logs
in: a private work directory is made there (`CreateTemporaryDirectoryInGuest`). A step's command
is uploaded into that directory as a script (so its text, which may carry tokens, never shows in
the guest's process list), and started with `StartProgramInGuest` as
`/bin/sh SCRIPT </dev/null >OUT 2>ERR` (a Linux guest runs the line through its shell, so the
redirections work); `ListProcessesInGuest` gives its exit code and its start and end times; when
the step outlives its timeout, `TerminateProcessInGuest` kills it. Then OUT and ERR come back
with `InitiateFileTransferFromGuest` and an HTTP GET, keeping the head and tail of each.

**ssh** (`SshChannel`) runs the command through the guest user's shell with `forkscale.remote.ssh`
(timeouts kill the remote process group); uploads go through `cat` on the guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.remote import ssh
from forkscale.spec.model import Step, Upload
from forkscale.vsphere.model import GuestLogin
from forkscale.vsphere.ports import GuestOperations, InventoryReader
from forkscale.workloads.rehearsal.report import HeadTail

TOOLS_RUNNING = "guestToolsRunning"
#: a POSIX shell's PATH for guests whose guest-operations environment has none
SCRIPT_PROLOGUE = ': "${PATH:=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"; export PATH\n'


class GuestUnreachable(Exception):
    """The guest could not be reached within the wait; the message says what was seen last."""


class GuestRefused(Exception):
    """The guest refused the login: waiting will not help."""


@dataclass
class StepRun:
    """What one step did in the guest."""

    exit_code: int | None
    stdout: HeadTail
    stderr: HeadTail
    duration_s: float | None = None  # measured in the guest, when the channel knows it
    timed_out: bool = False
    note: str | None = None  # how a timed-out command was stopped, or why the output is missing


class GuestChannel(Protocol):
    def waiting_for(self) -> str: ...

    async def ready(self, deadline: float) -> None: ...

    async def upload(self, item: Upload) -> None: ...

    async def run(self, step: Step, index: int) -> StepRun: ...


class GuestVSphere(InventoryReader, GuestOperations, Protocol):
    """What the guest-operations channel needs of vSphere."""


def _sleep_for(delay: float, deadline: float) -> float:
    """`delay`, cut short so that the last try happens at the deadline."""
    return max(0.0, min(delay, deadline - time.monotonic()))


class GuestOpsChannel:
    """Steps through VMware Tools guest operations (see the module docstring)."""

    def __init__(self, driver: GuestVSphere, vm: str, vm_name: str, login: GuestLogin) -> None:
        self.driver, self.vm, self.vm_name, self.login = driver, vm, vm_name, login
        self.workdir: str | None = None

    def waiting_for(self) -> str:
        return f"VMware Tools in {self.vm_name} to run and to log in as {self.login.user!r}"

    async def ready(self, deadline: float) -> None:
        """Tools running and the login accepted (a work directory made), by `deadline` (monotonic)."""
        delay, last = 0.2, "VMware Tools status not read yet"
        while True:
            try:
                status = (await self.driver.vm_props([self.vm], ["guest.toolsRunningStatus"])).get(self.vm, {}).get(
                    "guest.toolsRunningStatus")
                last = f"toolsRunningStatus is {status or 'unset'}"
                if status == TOOLS_RUNNING:
                    self.workdir = await self.driver.guest_temp_dir(self.vm, self.login, "forkscale-rehearsal-")
                    return
            except PermanentError as exc:
                if exc.fault in ("InvalidGuestLogin", "GuestPermissionDenied", "NotSupported"):
                    raise GuestRefused(f"the guest of {self.vm_name} refused the guest-operations login as "
                                           f"{self.login.user!r} ({exc.fault}): check guestops: in the spec") from None
                raise
            except TemporaryError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise GuestUnreachable(last)
            await asyncio.sleep(_sleep_for(delay, deadline))
            delay = min(delay * 1.5, 3.0)

    async def upload(self, item: Upload) -> None:
        await self.driver.guest_make_dir(self.vm, self.login, posixpath.dirname(item.dest) or "/")
        await self.driver.guest_upload(self.vm, self.login, item.dest, item.src, item.mode)

    async def run(self, step: Step, index: int) -> StepRun:
        assert self.workdir is not None, "ready() first"
        base = f"{self.workdir}/{index:02d}"
        script, out_path, err_path = f"{base}.sh", f"{base}.out", f"{base}.err"
        await self.driver.guest_upload(self.vm, self.login, script, (SCRIPT_PROLOGUE + step.run + "\n").encode(),
                                       0o700)
        args = f"{shlex.quote(script)} </dev/null >{shlex.quote(out_path)} 2>{shlex.quote(err_path)}"
        started = time.monotonic()
        pid = await self.driver.guest_start(self.vm, self.login, "/bin/sh", args, cwd=self.workdir)
        try:
            result = await self._wait_exit(pid, started + step.timeout_s)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # Ctrl-C: the command must not outlive the rehearsal
                await asyncio.shield(asyncio.wait_for(self.driver.guest_terminate(self.vm, self.login, pid), 10))
            raise
        if result.duration_s is None:
            result.duration_s = time.monotonic() - started
        missing = [await self._fetch(out_path, result.stdout), await self._fetch(err_path, result.stderr)]
        result.note = result.note or next((m for m in missing if m), None)
        return result

    async def _wait_exit(self, pid: int, deadline: float) -> StepRun:
        delay = 0.05
        while True:
            procs = await self.driver.guest_processes(self.vm, self.login, [pid])
            proc = next((p for p in procs if p.pid == pid), None)
            if proc is None:
                return StepRun(None, HeadTail(), HeadTail(), note=f"process {pid} vanished from the guest's list")
            if proc.ended:
                took = proc.end - proc.start if proc.end is not None and proc.start is not None else None
                return StepRun(proc.exit_code, HeadTail(), HeadTail(), duration_s=took)
            if time.monotonic() >= deadline:
                killed = await self.driver.guest_terminate(self.vm, self.login, pid)
                note = ("the process was terminated in the guest (TerminateProcessInGuest)" if killed
                        else "the process ended as it was being terminated")
                return StepRun(None, HeadTail(), HeadTail(), timed_out=True, note=note)
            await asyncio.sleep(_sleep_for(delay, deadline))
            delay = min(delay * 1.5, 1.0)

    async def _fetch(self, path: str, sink: Callable[[bytes], None]) -> str | None:
        try:
            await self.driver.guest_download(self.vm, self.login, path, sink)
        except PermanentError as exc:
            return f"could not read {path} from the guest: {exc}"
        return None


class SshChannel:
    """Steps over SSH (see the module docstring)."""

    def __init__(self, target: ssh.SshTarget) -> None:
        self.ssh = target

    def waiting_for(self) -> str:
        return f"the clone's guest to answer over ssh {self.ssh.where}"

    async def ready(self, deadline: float) -> None:
        delay = 0.5
        while True:
            remaining = deadline - time.monotonic()
            try:
                await ssh.run(self.ssh, "true", timeout=max(1.0, min(remaining, 30.0)))
                return
            except PermanentError as exc:  # host key, auth, key file: waiting will not help
                raise GuestRefused(f"cannot log in to the clone's guest: {exc}") from None
            except TemporaryError as exc:
                if time.monotonic() >= deadline:
                    raise GuestUnreachable(str(exc)) from None
            await asyncio.sleep(_sleep_for(delay, deadline))
            delay = min(delay * 1.5, 5.0)

    async def upload(self, item: Upload) -> None:
        dest = shlex.quote(item.dest)
        tmp = shlex.quote(f"{item.dest}.forkscale-upload")
        command = (f"mkdir -p {shlex.quote(posixpath.dirname(item.dest) or '/')} && cat > {tmp} && "
                   f"chmod {item.mode:o} {tmp} && mv -f {tmp} {dest}")
        out = await ssh.run(self.ssh, command, timeout=600.0, input=Path(item.src).read_bytes())
        if out.exit_status != 0:
            why = out.stderr.decode("utf-8", "replace").strip()[-300:]
            raise PermanentError(f"copying {item.src.name} to {item.dest} over ssh failed "
                                 f"(exit {out.exit_status}): {why}", "UploadFailed")

    async def run(self, step: Step, index: int) -> StepRun:
        try:
            out = await ssh.run(self.ssh, step.run, timeout=step.timeout_s)
        except TemporaryError as exc:
            if exc.fault == "SshTimeout":
                return StepRun(None, HeadTail(), HeadTail(), timed_out=True,
                               note="the command's process group was killed on the guest")
            raise
        stdout, stderr = HeadTail(), HeadTail()
        stdout(out.stdout)
        stderr(out.stderr)
        return StepRun(out.exit_status, stdout, stderr)
