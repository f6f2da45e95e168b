"""Host maintenance mode: EnterMaintenanceMode_Task and ExitMaintenanceMode_Task.

The twin's cluster has no DRS: nothing moves VMs off a host for you. Entering waits, as
vCenter does, until no powered-on VM is left on the host (with `evacuatePoweredOffVms`, no VM at
all: "the task will not succeed unless all powered-off virtual machines have been manually
reregistered" in a cluster without DRS); a `timeout` (simulated seconds) that passes first fails
the task with `Timedout`. With no timeout (`<= 0`, "wait forever" on vCenter) the twin refuses at
once with `InvalidState` naming the VMs still there, rather than leave a task running that only
the caller can finish. A host in maintenance mode takes no new VM (power-on, clone, relocate,
register, create: `InvalidHostState`); VMs can still be moved off it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record_host
from ..inventory import Host
from ..tasks import Task
from ..vm import VM
from .common import elapse, submit


def _host(this: Any) -> Host:
    if not isinstance(this, Host):
        raise vmodl.fault.InvalidArgument(msg="not a host", invalidProperty="_this")
    return this


def blockers(host: Host, evacuate_off: bool) -> list[VM]:
    """The VMs that keep `host` from entering maintenance mode."""
    return sorted((vm for vm in host.vms if vm.alive and (evacuate_off or vm.power_state == "poweredOn")),
                  key=lambda v: v.name)


def _names(vms: list[VM]) -> str:
    shown = ", ".join(v.name for v in vms[:10])
    return shown + (f" and {len(vms) - 10} more" if len(vms) > 10 else "")


async def _wait_empty(host: Host, evacuate_off: bool, timeout_s: int) -> None:
    world = host.world
    if not blockers(host, evacuate_off):
        return
    if timeout_s <= 0:
        there = blockers(host, evacuate_off)
        raise vim.fault.InvalidState(msg=f"Host {host.name} cannot enter maintenance mode: {len(there)} virtual "
                                         f"machine(s) must be powered off or moved first ({_names(there)}); the twin's "
                                         "cluster has no DRS to move them")
    deadline = time.monotonic() + timeout_s * max(world.time_scale, 0.0)
    while blockers(host, evacuate_off):
        left = deadline - time.monotonic()
        if left <= 0:
            raise vim.fault.Timedout(msg=f"Host {host.name} did not enter maintenance mode within {timeout_s} s: "
                                        f"{_names(blockers(host, evacuate_off))} still there")
        try:
            await asyncio.wait_for(world.changed().wait(), timeout=left)
        except TimeoutError:
            continue


@method("EnterMaintenanceMode_Task")
def enter_maintenance(ctx: Ctx, this: Any, timeout: int, evacuatePoweredOffVms: bool | None = None,  # noqa: N803
                      maintenanceSpec: Any = None) -> Any:  # noqa: N803
    host = _host(this)

    async def body(task: Task) -> None:
        if host.in_maintenance:
            raise vim.fault.InvalidState(msg=f"Host {host.name} is already in maintenance mode")
        if not host.connected:
            raise vmodl.fault.HostNotConnected(msg=f"Host {host.name} is not connected")
        record_host(ctx, "EnteringMaintenanceModeEvent", host, f"Host {host.name} is entering maintenance mode",
                    task=task)
        await elapse(host.world, "maintenance")
        await _wait_empty(host, bool(evacuatePoweredOffVms), int(timeout or 0))
        host.in_maintenance = True
        host.world.touch(host)
        record_host(ctx, "EnteredMaintenanceModeEvent", host, f"Host {host.name} has entered maintenance mode",
                    task=task)

    return submit(ctx, host, body, op="HostSystem.enterMaintenanceMode")


@method("ExitMaintenanceMode_Task")
def exit_maintenance(ctx: Ctx, this: Any, timeout: int) -> Any:
    host = _host(this)

    async def body(task: Task) -> None:
        if not host.in_maintenance:
            raise vim.fault.InvalidState(msg=f"Host {host.name} is not in maintenance mode")
        await elapse(host.world, "maintenance")
        host.in_maintenance = False
        host.world.touch(host)
        record_host(ctx, "ExitMaintenanceModeEvent", host, f"Host {host.name} has exited maintenance mode",
                    task=task)

    return submit(ctx, host, body, op="HostSystem.exitMaintenanceMode")
