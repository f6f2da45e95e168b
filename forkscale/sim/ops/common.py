"""What every VM operation of the twin shares: its task, its latency, and the usual faults."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pyVmomi import vim, vmodl

from ..tasks import CURRENT_TASK
from ..vm import VM

if TYPE_CHECKING:
    from ..dispatch import Ctx
    from ..inventory import Host
    from ..mo import MO
    from ..tasks import Task
    from ..world import World


async def elapse(world: World, op: str, task: Task | None = None) -> None:
    """Let `op`'s latency pass (drawn from the world file, slowed by injected faults); the task
    running it (by default the one whose body this is) reports its progress meanwhile."""
    delay = world.delay(op)
    task = task or CURRENT_TASK.get()
    if task is None:
        await asyncio.sleep(delay)
        return
    task.drawn_s = delay
    await task.run_for(delay)


def submit(ctx: Ctx, entity: MO, body: Callable[[Task], Awaitable[Any]], *, host: Host | None = None,
           op: str = "") -> Any:
    """Queue `body` as the task of this call; injected faults fail it when it starts."""
    world = ctx.twin.world

    async def run(task: Task) -> Any:
        world.faults.maybe_fail(ctx.method, entity, task)
        return await body(task)

    return world.tasks.submit(ctx.method, entity, run, host=host.moid if host else None, user=ctx.user,
                              description=op)


def as_vm(this: Any) -> VM:
    if not isinstance(this, VM):
        raise vmodl.fault.InvalidArgument(msg="not a virtual machine", invalidProperty="_this")
    return this


def require_host(vm: VM) -> None:
    if not vm.host.connected:
        raise vmodl.fault.HostNotConnected(msg=f"Host {vm.host.name} is not connected")


def placement_faults(host: Host) -> list[vmodl.MethodFault]:
    """Why a VM cannot be started or placed on `host` now: not connected, or in maintenance mode."""
    if not host.connected:
        return [vmodl.fault.HostNotConnected(msg=f"Host {host.name} is not connected")]
    if host.in_maintenance:
        return [vim.fault.InvalidHostState(msg=f"Host {host.name} is in maintenance mode", host=host.ref)]
    return []


def require_placeable(host: Host) -> None:
    for fault in placement_faults(host):
        raise fault


def invalid_power(vm: VM, expected: str) -> vim.fault.InvalidPowerState:
    word = {"poweredOn": "Powered on", "poweredOff": "Powered off", "suspended": "Suspended"}[vm.power_state]
    return vim.fault.InvalidPowerState(msg=f"The attempted operation cannot be performed in the current state "
                                       f"({word}).", requestedState=expected, existingState=vm.power_state)


def guest_later(vm: VM, delay: float, fn: Callable[[VM], None]) -> None:
    """Run `fn(vm)` after `delay` real seconds if the VM is still in the same boot, powered on."""
    world = vm.world
    boot = vm.boot_time

    async def later() -> None:
        await asyncio.sleep(delay)
        if vm.alive and vm.power_state == "poweredOn" and vm.boot_time == boot:
            fn(vm)

    job = asyncio.get_running_loop().create_task(later())
    world.tasks.background.add(job)
    job.add_done_callback(world.tasks.background.discard)
