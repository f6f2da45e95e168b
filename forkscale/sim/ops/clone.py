"""Full and linked clones (CloneVM_Task): a flat copy of the source's disks, or a child delta of a snapshot's."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import folder_arg, host_arg, record, vm_arg
from ..inventory import Datastore, Folder, Host, ResourcePool
from ..memory import admit
from ..tasks import Task
from ..vm import VM, Disk, Snapshot
from .common import as_vm, elapse, placement_faults, submit
from .placement import check_name, discard_new_vm, folder_of, new_vm, raise_first, resolve_placement
from .power import power_on_now
from .reconfigure import apply_config, apply_nic_edits
from .validate import check_clone_spec


def clone_faults(ctx: Ctx, src: VM, spec: Any, ds: Datastore, host: Host) -> list[vmodl.MethodFault]:
    faults: list[vmodl.MethodFault] = []
    loc = spec.location
    move = loc.diskMoveType if loc else None
    if move == "createNewChildDiskBacking":
        if spec.snapshot is None:
            faults.append(vmodl.fault.InvalidArgument(
                msg="A linked clone (diskMoveType createNewChildDiskBacking) needs spec.snapshot",
                invalidProperty="spec.snapshot"))
    if spec.snapshot is not None:
        snap = ctx.twin.world.objects.get(spec.snapshot._moId)
        if not isinstance(snap, Snapshot) or snap.vm is not src:
            faults.append(vmodl.fault.InvalidArgument(msg="spec.snapshot is not a snapshot of the source",
                                                      invalidProperty="spec.snapshot"))
    faults += placement_faults(host)
    if move != "createNewChildDiskBacking":
        need = sum(f.size(ctx.twin.world.sim_seconds()) for d in src.disks for f in d.top.chain())
        if ds.free() < need:
            faults.append(vim.fault.NoDiskSpace(msg=f"There is not enough space on datastore {ds.name}",
                                                datastore=ds.name))
    if spec.powerOn and not admit(host, src.mem.touched_mb):
        faults.append(vim.fault.InsufficientMemoryResourcesFault(
            msg=f"Insufficient memory resources on host {host.name}", unreserved=0, requested=src.mem.touched_mb))
    return faults


def do_clone(ctx: Ctx, src: VM, folder: Folder, name: str, spec: Any, ds: Datastore, host: Host,
             pool: ResourcePool) -> VM:
    world = src.world
    check_name(folder, name)
    raise_first(clone_faults(ctx, src, spec, ds, host))
    clone = new_vm(src, name, folder, pool, ds, host)
    try:
        # location.deviceChange, then spec.config: vCenter applies both to the clone
        apply_nic_edits(clone, spec.location.deviceChange if spec.location else [], instant=False)
        if spec.config is not None:
            apply_config(clone, spec.config)
    except vmodl.MethodFault:
        discard_new_vm(clone)
        raise
    _copy_disks(src, clone, spec, ds)
    world.add(clone)
    folder.entries.append(clone)
    world.touch(folder, structural=True)
    if spec.template:
        clone.template = True
    elif spec.powerOn:
        power_on_now(clone)
    clone.changed()
    return clone


def _copy_disks(src: VM, clone: VM, spec: Any, ds: Datastore) -> None:
    """A linked clone gets a child delta of the snapshot's files; a full clone flat copies."""
    world = src.world
    name = clone.name
    linked = spec.location is not None and spec.location.diskMoveType == "createNewChildDiskBacking"
    snap = world.objects[spec.snapshot._moId] if spec.snapshot is not None else None
    snap_node = snap.node if isinstance(snap, Snapshot) else None  # (clone_faults checked it is one of src)
    now = world.sim_seconds()
    for d in src.disks:
        if d.independent and linked:
            continue  # no snapshot point to link to: a linked clone leaves independent disks out
        base = snap_node.disks.get(d.key, d.top) if snap_node is not None else d.top
        if linked:
            n = base.depth()
            f = world.disks.create(f"[{ds.name}] {name}/{name}-{n:06d}.vmdk", ds, base.capacity, parent=base)
        else:
            size = sum(x.size(now) for x in base.chain())
            stem = name if d.unit == 0 else f"{name}_{d.unit}"
            f = world.disks.create(f"[{ds.name}] {name}/{stem}.vmdk", ds, base.capacity, size=size)
            f.content = base.merged_content()
        world.disks.retain(f)
        clone.disks.append(Disk(key=d.key, capacity_kb=d.capacity_kb, top=f, unit=d.unit, label=d.label,
                                mode=d.mode))


@method("CloneVM_Task")
def clone_vm(ctx: Ctx, this: Any, folder: Any, name: str, spec: Any) -> Any:
    src = as_vm(this)
    target = folder_of(ctx, folder, src.parent)
    check_clone_spec(ctx, src, name, spec)
    _, pool, ds, host = resolve_placement(ctx, src, spec.location, instant=False)
    linked = spec.location is not None and spec.location.diskMoveType == "createNewChildDiskBacking"

    async def body(task: Task) -> Any:
        dest = {"destFolder": folder_arg(target), "destName": name, "destHost": host_arg(host)}
        record(ctx, "VmBeingClonedEvent", src, f"Cloning {src.name} on host {src.host.name} to {name} on host "
               f"{host.name}", task=task, **dest)
        await elapse(src.world, "linked" if linked else "full")
        try:
            clone = do_clone(ctx, src, target, name, spec, ds, host, pool)
        except vmodl.MethodFault as fault:
            record(ctx, "VmCloneFailedEvent", src, f"Failed to clone {src.name} to {name}", task=task,
                   reason=fault, **dest)
            raise
        record(ctx, "VmClonedEvent", clone, f"Clone of {src.name} to {clone.name} completed", task=task,
               sourceVm=vm_arg(src))
        if clone.power_state == "poweredOn":
            record(ctx, "VmPoweredOnEvent", clone, f"{clone.name} on {clone.host.name} is powered on", task=task)
        return clone.ref

    return submit(ctx, src, body, host=host, op="VirtualMachine.clone")
