"""Real guest programs: `StartProgramInGuest` / `TerminateProcessInGuest` for the twin's Linux guests.

Which programs run for real: every program of a Linux guest but the two the twin understands
itself (`vmware-rpctool` and `forkscale-guest`, whose freeze it simulates: see
`forkscale.sim.ops.guest`); Windows guests' programs are simulated. A real program runs in its
VM's sandbox (`forkscale.sim.sandbox`) with the `ProgramSpec`'s working directory (default: the
user's home) and environment (`envVariables` is the whole environment, as in the API reference;
default: a login's). Its guest pid is the twin's, its exit code and end time are recorded when it
ends. Faults: a program that is not an executable file in the guest → `FileNotFound`; a working
directory that does not exist → `FileNotFound`; no sandbox on this machine (no bubblewrap) →
`GuestOperationsUnavailable`, saying so.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

from pyVmomi import vim, vmodl

from ..guestfs import GuestFsError
from ..sandbox import is_executable
from ..vm import VM

if TYPE_CHECKING:
    from ..guests import GuestProcess, ProcessTable

SIMULATED = ("vmware-rpctool", "vmware-rpctool-twin", "vmware-rpctool.exe", "forkscale-guest")


def runs_for_real(vm: VM, program: str) -> bool:
    return not vm.guest_id.startswith("win") and posixpath.basename(program).lower() not in SIMULATED


def _environment(spec: Any, default: dict[str, str]) -> dict[str, str]:
    if not spec.envVariables:
        return default
    env = {}
    for item in spec.envVariables:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise vmodl.fault.InvalidArgument(msg=f"envVariables: {item!r} is not NAME=value",
                                              invalidProperty="spec.envVariables")
        env[key] = value
    return env


async def start_for_real(vm: VM, table: ProcessTable, owner: str, spec: Any, cmd_line: str, name: str) -> int:
    """Start the program in `vm`'s sandbox as a new process of `table`; returns its guest pid."""
    box = vm.world.sandboxes
    why = box.unavailable()
    if why is not None:
        raise vim.fault.GuestOperationsUnavailable(msg=why)
    fs = box.fs(vm)
    path = str(spec.programPath)
    if not path.startswith("/") or not is_executable(fs, path):
        raise vim.fault.FileNotFound(msg=f"{path}: no such executable file in the guest", file=path)
    env = _environment(spec, box.default_env(vm, owner))
    cwd = str(spec.workingDirectory or env.get("HOME") or "/")
    try:
        with fs.directory(cwd):
            pass
    except GuestFsError:
        raise vim.fault.FileNotFound(msg=f"workingDirectory {cwd}: no such directory in the guest",
                                     file=cwd) from None
    world = vm.world
    proc = table.start(name, owner, cmd_line, world.now())

    def ended(code: int) -> None:
        if proc.end is None:
            proc.end, proc.exit_code = world.now(), code

    try:
        await box.start(vm, proc.pid, path, str(spec.arguments or ""), cwd=cwd, env=env, on_exit=ended)
    except OSError as exc:
        del table.procs[proc.pid]
        raise vim.fault.GuestOperationsUnavailable(msg=f"the twin could not start the program: {exc}") from None
    return proc.pid


async def terminate_for_real(vm: VM, proc: GuestProcess) -> None:
    """SIGTERM the program and wait (briefly) for it to end, so a list right after shows it ended."""
    code = await vm.world.sandboxes.terminate(vm, proc.pid)
    if proc.end is None and code is not None:
        proc.end, proc.exit_code = vm.world.now(), code
