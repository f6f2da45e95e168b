"""Where a clone goes (folder, pool, datastore, host), and the new VM itself before it has disks."""

from __future__ import annotations

from typing import Any, NamedTuple

from pyVmomi import vim, vmodl

from ..dispatch import Ctx
from ..inventory import Datastore, Folder, Host, ResourcePool
from ..vm import VM, Nic


class Placement(NamedTuple):
    folder: Folder
    pool: ResourcePool
    datastore: Datastore
    host: Host


def folder_of(ctx: Ctx, ref: Any, default: Folder) -> Folder:
    if ref is None:
        return default
    mo = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(mo, Folder):
        raise vmodl.fault.InvalidArgument(msg="location.folder is not a folder", invalidProperty="folder")
    return mo


def resolve_placement(ctx: Ctx, src: VM, loc: Any, *, instant: bool) -> Placement:
    """A RelocateSpec's placement, each part defaulting to the source's."""
    folder = folder_of(ctx, loc.folder if loc else None, src.parent)
    pool, ds, host = src.pool, src.home, src.host
    if loc is not None and loc.pool is not None:
        mo = ctx.twin.resolve(loc.pool, ctx.session)
        if not isinstance(mo, ResourcePool):
            raise vmodl.fault.InvalidArgument(msg="location.pool is not a resource pool", invalidProperty="pool")
        pool = mo
    if loc is not None and loc.datastore is not None:
        mo = ctx.twin.resolve(loc.datastore, ctx.session)
        if not isinstance(mo, Datastore):
            raise vmodl.fault.InvalidArgument(msg="location.datastore is not a datastore", invalidProperty="datastore")
        ds = mo
    if loc is not None and loc.host is not None:
        mo = ctx.twin.resolve(loc.host, ctx.session)
        if not isinstance(mo, Host):
            raise vmodl.fault.InvalidArgument(msg="location.host is not a host", invalidProperty="host")
        if instant and mo is not src.host:
            raise vmodl.fault.InvalidArgument(
                msg=f"an instant clone runs on its source's host ({src.host.name}), not {mo.name}",
                invalidProperty="location.host")
        host = mo
    return Placement(folder, pool, ds, host)


def check_name(folder: Folder, name: str) -> None:
    e = folder.entries.named(name)
    if e is not None:
        raise vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=e.ref)


def new_vm(src: VM, name: str, folder: Folder, pool: ResourcePool, ds: Datastore, host: Host) -> VM:
    """A copy of `src`'s configuration with fresh MACs, not yet in the world (no disks, powered off)."""
    world = src.world
    vm = VM(world, world.new_id("vm"), name, folder, host=host, pool=pool, datastore=ds, memory_mb=src.memory_mb,
            num_cpu=src.num_cpu, guest_id=src.guest_id, guest_full_name=src.guest_full_name)
    vm.extra = dict(src.extra)
    vm.settings = dict(src.settings)
    vm.annotation = src.annotation
    vm.guest.agent = src.guest.agent
    vm.mem.touched_mb = src.mem.touched_mb
    for n in src.nics:
        mac = world.new_mac()
        world.macs[mac] = vm.moid
        vm.nics.append(Nic(key=n.key, mac=mac, network=n.network, connected=n.connected,
                           start_connected=n.start_connected, label=n.label, kind=n.kind))
    return vm


def discard_new_vm(vm: VM) -> None:
    """Undo `new_vm` for a clone that fails before it joins the world."""
    for nic in vm.nics:
        vm.world.macs.pop(nic.mac, None)
    vm.host.vms.discard(vm)


def raise_first(faults: list[vmodl.MethodFault]) -> None:
    if faults:
        raise faults[0]
