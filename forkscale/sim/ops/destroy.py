"""Inventory changes of the twin: VMs and folders destroyed (with what only they used), folders created."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record
from ..inventory import Folder, ResourcePool
from ..tasks import Task
from ..vm import VM
from .common import as_vm, elapse, invalid_power, submit
from .pools import destroy_pool
from .snapshots import walk


def destroy_now(vm: VM) -> None:
    world = vm.world
    for d in vm.disks:
        world.disks.release(d.top)
    for node in walk(vm.snapshots):
        for f in node.disks.values():
            world.disks.release(f)
        world.remove(node.mo)
    for n in vm.nics:
        world.macs.pop(n.mac, None)
    parent = vm.parent
    if isinstance(parent, Folder):
        parent.detach(vm)
    vm.host.vms.discard(vm)
    world.remove(vm)


@method("Destroy_Task")
def destroy(ctx: Ctx, this: Any) -> Any:
    if isinstance(this, Folder):
        return destroy_folder(ctx, this)
    if isinstance(this, ResourcePool):
        return destroy_pool(ctx, this)
    vm = as_vm(this)

    async def body(task: Task) -> None:
        await elapse(vm.world, "destroy")
        if not vm.alive:
            raise vmodl.fault.ManagedObjectNotFound(msg=f"The object '{vm.moid}' has already been deleted", obj=vm.ref)
        if vm.power_state == "poweredOn":
            raise invalid_power(vm, "poweredOff")
        record(ctx, "VmRemovedEvent", vm, f"Removed {vm.name} on {vm.host.name}", task=task)
        destroy_now(vm)

    return submit(ctx, vm, body, op="VirtualMachine.destroy")


@method("CreateFolder")
def create_folder(ctx: Ctx, this: Any, name: str) -> Any:
    if not isinstance(this, Folder):
        raise vmodl.fault.InvalidArgument(invalidProperty="_this")
    existing = this.entries.named(name)
    if existing is not None:
        raise vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=existing.ref)
    world = ctx.twin.world
    f = Folder(world, world.new_id("group-v"), name, this, list(this.child_type))
    world.add(f)
    this.attach(f)
    return f.ref


def destroy_folder(ctx: Ctx, folder: Folder) -> Any:
    async def body(task: Task) -> None:
        await elapse(folder.world, "destroy")
        if any(isinstance(e, VM) and e.power_state == "poweredOn" for e in folder.entries):
            raise vim.fault.InvalidState(msg="The folder contains powered-on virtual machines")
        for e in list(folder.entries):
            if isinstance(e, VM):
                record(ctx, "VmRemovedEvent", e, f"Removed {e.name} on {e.host.name}", task=task)
                destroy_now(e)
        if isinstance(folder.parent, Folder):
            folder.parent.detach(folder)
        folder.world.remove(folder)

    return submit(ctx, folder, body, op="Folder.destroy")
