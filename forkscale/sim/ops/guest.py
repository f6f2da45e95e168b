"""Guest operations of the twin: `GuestOperationsManager.processManager` and the freeze.

A program started with `StartProgramInGuest` in a Linux guest runs for real in the VM's sandbox
(`forkscale.sim.ops.guestexec`, `forkscale.sim.sandbox`): its pid shows in `ListProcessesInGuest`
with its real exit code when it ends. The `vmware-rpctool` and `forkscale-guest` programs below,
and every program of a Windows guest, are simulated instead: they end with exit code 0 after the
`guest_program` latency (1 for a program named `false`; `sleep N` runs N simulated seconds). Two
programs are understood:

* `vmware-rpctool` (any path ending in it, also `vmware-rpctool-twin`) whose arguments contain
  `instantclone.freeze`, and
* `forkscale-guest` (any path ending in it, e.g. `/usr/local/sbin/forkscale-guest`) whose first
  argument is `freeze` — the guest script of `guest/linux`, which sets
  `guestinfo.forkscale.status=frozen` and then calls `vmware-rpctool "instantclone.freeze"`.

Either one freezes the guest after the `freeze` latency: `runtime.instantCloneFrozen` becomes
true and VMware Tools are reported not running (so further guest operations fail with
`GuestOperationsUnavailable`, as on a real frozen source). The freeze process never ends in the
source; in every instant clone of it the call returns, so a clone's process list shows the same
process ended with exit code 0. A power cycle starts a new boot with an empty process table.

Faults, as vCenter raises them: a powered-off or suspended VM → `InvalidPowerState`; VMware Tools
not running (booting, frozen, host down) → `GuestOperationsUnavailable`; wrong guest credentials
(`world.guest_credentials`, `root`/`forkscale` by default) → `InvalidGuestLogin`; an
authentication other than `NamePasswordAuthentication` → `InvalidArgument` (the twin's guests
only know passwords); an unknown pid for `TerminateProcessInGuest` → `GuestProcessNotFound`.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..vm import VM
from .common import guest_later, invalid_power
from .guestexec import runs_for_real, start_for_real, terminate_for_real

RPCTOOL_NAMES = ("vmware-rpctool", "vmware-rpctool-twin", "vmware-rpctool.exe")
GUEST_SCRIPT = "forkscale-guest"
FREEZE_COMMAND = "instantclone.freeze"


def freeze_later(vm: VM) -> float:
    """The guest called `instantclone.freeze`: the VM freezes after the `freeze` latency. Returns the delay."""

    def freeze(v: VM) -> None:
        if not v.frozen:
            v.frozen = True
            v.changed()

    delay = vm.world.delay("freeze")
    guest_later(vm, delay, freeze)
    return delay


def is_freeze(program: str, arguments: str) -> bool:
    """Whether this program line is the freeze (see the module docstring for the rule)."""
    base = posixpath.basename(program.replace("\\", "/")).lower()
    try:
        args = shlex.split(arguments or "")
    except ValueError:
        args = (arguments or "").split()
    words = [w for a in args for w in a.split()]
    if base in RPCTOOL_NAMES:
        return FREEZE_COMMAND in words
    if base == GUEST_SCRIPT:
        return bool(args) and args[0] == "freeze"
    return False


# checks -----------------------------------------------------------------------------------------
def guest_vm(ctx: Ctx, ref: Any) -> VM:
    """The target VM of a guest operation, if its guest agent can be reached."""
    if ref is None:
        raise vmodl.fault.InvalidArgument(msg="vm is required", invalidProperty="vm")
    vm = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(vm, VM):
        raise vmodl.fault.InvalidArgument(msg="vm is not a virtual machine", invalidProperty="vm")
    if vm.power_state != "poweredOn":
        raise invalid_power(vm, "poweredOn")
    if not vm.host.connected or vm.frozen or not vm.guest.tools_running:
        raise vim.fault.GuestOperationsUnavailable(msg="The guest operations agent could not be contacted.")
    return vm


def check_auth(vm: VM, auth: Any) -> str:
    """The guest user name, if `auth` logs in to the guest."""
    if not isinstance(auth, vim.vm.guest.NamePasswordAuthentication):
        raise vmodl.fault.InvalidArgument(msg="the twin's guests accept NamePasswordAuthentication only",
                                          invalidProperty="auth")
    user, password = vm.world.guest_credentials
    if not (secrets.compare_digest(auth.username or "", user)
            and secrets.compare_digest(auth.password or "", password)):
        raise vim.fault.InvalidGuestLogin(
            msg="Failed to authenticate with the guest operating system using the supplied credentials.")
    return str(auth.username)


# handlers -------------------------------------------------------------------------------------
@method("StartProgramInGuest")
async def start_program(ctx: Ctx, this: Any, vm: Any, auth: Any, spec: Any) -> int:
    target = guest_vm(ctx, vm)
    owner = check_auth(target, auth)
    if spec is None or not spec.programPath:
        raise vmodl.fault.InvalidArgument(msg="spec.programPath is required", invalidProperty="spec.programPath")
    path, args = str(spec.programPath), str(spec.arguments or "")
    world = target.world
    table = ctx.twin.guests.table(target)
    cmd_line = f'"{path}" {args}'.rstrip()
    name = posixpath.basename(path.replace("\\", "/"))
    if is_freeze(path, args):
        proc = table.start(name, owner, cmd_line, world.now(), freeze=True)
        if posixpath.basename(path) == GUEST_SCRIPT:
            # what the script does before it calls `vmware-rpctool "instantclone.freeze"`
            target.extra["guestinfo.forkscale.status"] = "frozen"
            target.changed()
        freeze_later(target)
        return proc.pid
    if runs_for_real(target, path):
        return await start_for_real(target, table, owner, spec, cmd_line, name)
    proc = table.start(name, owner, cmd_line, world.now())
    code = 1 if name in ("false", "false.exe") else 0
    delay = world.delay("guest_program", 0.5)
    if name == "sleep":
        try:
            delay = max(0.0, float(shlex.split(args)[0])) * world.time_scale
        except (ValueError, IndexError):
            code = 1

    def finish(v: VM) -> None:
        if proc.end is None and table is ctx.twin.guests.tables.get(v.moid):
            proc.end, proc.exit_code = world.now(), code

    guest_later(target, delay, finish)
    return proc.pid


@method("ListProcessesInGuest")
def list_processes(ctx: Ctx, this: Any, vm: Any, auth: Any, pids: list[int] | None = None) -> list[Any]:
    target = guest_vm(ctx, vm)
    check_auth(target, auth)
    table = ctx.twin.guests.table(target)
    wanted = {int(p) for p in pids or []}
    return [p.info() for pid, p in sorted(table.procs.items()) if not wanted or pid in wanted]


@method("TerminateProcessInGuest")
async def terminate_process(ctx: Ctx, this: Any, vm: Any, auth: Any, pid: int) -> None:
    target = guest_vm(ctx, vm)
    check_auth(target, auth)
    proc = ctx.twin.guests.table(target).procs.get(int(pid))
    if proc is None or proc.end is not None:
        raise vim.fault.GuestProcessNotFound(msg=f"The process {pid} was not found in the guest", pid=int(pid))
    if target.world.sandboxes.is_running(target, proc.pid):
        await terminate_for_real(target, proc)
        return
    proc.end, proc.exit_code = target.world.now(), 143  # SIGTERM


@method("ReadEnvironmentVariableInGuest")
def read_environment(ctx: Ctx, this: Any, vm: Any, auth: Any, names: list[str] | None = None) -> list[str]:
    target = guest_vm(ctx, vm)
    user = check_auth(target, auth)
    home = "/root" if user == "root" else f"/home/{user}"
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home, "USER": user,
           "LOGNAME": user, "SHELL": "/bin/bash", "LANG": "C.UTF-8", "HOSTNAME": target.guest.hostname or target.name}
    wanted = list(names or [])
    return [f"{k}={v}" for k, v in env.items() if not wanted or k in wanted]
