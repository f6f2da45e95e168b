"""Snapshots of the twin's VMs: taken, reverted to and removed, each pinning its point in the disk chains."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim, vmodl

from ..disks import MAX_CHAIN, DiskFile, MiB
from ..dispatch import Ctx, method
from ..events import record_ex
from ..inventory import Datastore
from ..tasks import Task
from ..vm import VM, Disk, Snapshot, SnapshotNode
from .common import as_vm, elapse, submit
from .power import power_off_now

REVERTED = "com.vmware.vc.vm.VmStateRevertedToSnapshot"  # the EventEx vCenter posts after a revert


def walk(nodes: list[SnapshotNode]) -> list[SnapshotNode]:
    out: list[SnapshotNode] = []
    for n in nodes:
        out.append(n)
        out.extend(walk(n.children))
    return out


def push_delta(vm: VM, d: Disk, suffix: str | None = None, on: Datastore | None = None) -> DiskFile:
    """Freeze `d.top` and give the VM a fresh child delta on top of it (on `on`, else beside it)."""
    world = vm.world
    now = world.sim_seconds()
    old = d.top
    old.freeze(now)
    n = sum(1 for _ in old.chain())
    ds = on or old.datastore
    name = f"[{ds.name}] {vm.stem}/{vm.stem}-{n:06d}{suffix or ''}.vmdk"
    new = world.disks.create(name, ds, old.capacity, parent=old)
    world.disks.retain(new)
    world.disks.release(old)  # the VM's own ref moves to the new top
    d.top = new
    if vm.power_state == "poweredOn":
        new.thaw(now, rate=0.05 * MiB)
    return new


def take_snapshot(vm: VM, name: str, description: str, *, memory: bool) -> SnapshotNode:
    world = vm.world
    snap = Snapshot(world, world.new_id("snapshot"), vm)
    tops = {}
    for d in vm.disks:
        if d.independent:
            continue  # an independent disk is not part of a snapshot: it keeps its one file
        tops[d.key] = d.top
        world.disks.retain(d.top)  # the snapshot keeps its point in the chain
        push_delta(vm, d)
    node = SnapshotNode(mo=snap, name=name, description=description, created=datetime.now(tz=UTC),
                        disks=tops, power_state=vm.power_state if memory else "poweredOff",
                        parent=vm.current_snapshot, sid=len(walk(vm.snapshots)) + 1)
    snap.node = node
    world.add(snap)
    if vm.current_snapshot is None:
        vm.snapshots.append(node)
    else:
        vm.current_snapshot.children.append(node)
    vm.current_snapshot = node
    vm.changed()
    return node


@method("CreateSnapshot_Task")
def create_snapshot(ctx: Ctx, this: Any, name: str, description: str | None = None, memory: bool = False,
                    quiesce: bool = False) -> Any:
    vm = as_vm(this)

    async def body(task: Task) -> Any:
        await elapse(vm.world, "snapshot")
        if vm.frozen:
            raise vim.fault.InvalidState(msg="Cannot snapshot a frozen instant-clone source")
        if any(d.top.depth() + 1 > MAX_CHAIN for d in vm.disks):
            raise vim.fault.SnapshotFault(msg="The maximum number of delta disks (255) has been reached")
        return take_snapshot(vm, name, description or "", memory=bool(memory)).mo.ref

    return submit(ctx, vm, body, host=vm.host, op="VirtualMachine.createSnapshot")


def _snap(this: Any) -> Snapshot:
    if not isinstance(this, Snapshot):
        raise vmodl.fault.InvalidArgument(invalidProperty="_this")
    return this


def revert_to(vm: VM, node: SnapshotNode) -> None:
    world = vm.world
    for d in vm.disks:
        base = node.disks.get(d.key)
        if base is None:
            continue
        world.disks.release(d.top)
        n = base.depth()
        new = world.disks.create(f"[{base.datastore.name}] {vm.stem}/{vm.stem}-{n:06d}.vmdk", base.datastore,
                                 base.capacity, parent=base)
        world.disks.retain(new)
        d.top = new
    vm.current_snapshot = node
    if node.power_state == "poweredOff" and vm.power_state == "poweredOn":
        power_off_now(vm)
    vm.changed()


@method("RevertToSnapshot_Task")
def revert_snapshot(ctx: Ctx, this: Any, host: Any = None, suppressPowerOn: bool | None = None) -> Any:  # noqa: N803
    snap = _snap(this)

    async def body(task: Task) -> None:
        await elapse(snap.world, "snapshot")
        revert_to(snap.vm, snap.node)
        reverted(ctx, snap.vm, snap.node, task)

    return submit(ctx, snap.vm, body, op="VirtualMachineSnapshot.revert")


def reverted(ctx: Ctx, vm: VM, node: SnapshotNode, task: Task) -> None:
    record_ex(ctx, REVERTED, vm, f"{vm.name} has been reverted to the state of snapshot {node.name}, with ID "
              f"{node.sid}", task=task, arguments={"vmName": vm.name, "snapshotName": node.name,
                                                     "snapshotId": str(node.sid)})


@method("RenameSnapshot")
def rename_snapshot(ctx: Ctx, this: Any, name: str | None = None, description: str | None = None) -> None:
    snap = _snap(this)
    if name is not None:
        if not name:
            raise vmodl.fault.InvalidArgument(msg="name must not be empty", invalidProperty="name")
        snap.node.name = name
    if description is not None:
        snap.node.description = description
    snap.world.touch(snap)
    snap.vm.changed()


@method("RevertToCurrentSnapshot_Task")
def revert_current(ctx: Ctx, this: Any, host: Any = None, suppressPowerOn: bool | None = None) -> Any:  # noqa: N803
    vm = as_vm(this)
    if vm.current_snapshot is None:
        raise vim.fault.NotFound(msg="The virtual machine has no current snapshot")

    async def body(task: Task) -> None:
        await elapse(vm.world, "snapshot")
        assert vm.current_snapshot is not None
        node = vm.current_snapshot
        revert_to(vm, node)
        reverted(ctx, vm, node, task)

    return submit(ctx, vm, body, op="VirtualMachine.revert")


def _remove_node(vm: VM, node: SnapshotNode, remove_children: bool) -> None:
    world = vm.world
    siblings = node.parent.children if node.parent else vm.snapshots
    idx = siblings.index(node)
    siblings.pop(idx)
    if remove_children:
        doomed = walk([node])
    else:
        doomed = [node]
        for c in node.children:
            c.parent = node.parent
        siblings[idx:idx] = node.children
    for n in doomed:
        for f in n.disks.values():
            world.disks.release(f)
        world.remove(n.mo)
        if vm.current_snapshot is n:
            vm.current_snapshot = node.parent
    vm.changed()


@method("RemoveSnapshot_Task")
def remove_snapshot(ctx: Ctx, this: Any, removeChildren: bool, consolidate: bool | None = None) -> Any:  # noqa: N803
    snap = _snap(this)

    async def body(task: Task) -> None:
        await elapse(snap.world, "snapshot")
        _remove_node(snap.vm, snap.node, bool(removeChildren))

    return submit(ctx, snap.vm, body, op="VirtualMachineSnapshot.remove")


@method("RemoveAllSnapshots_Task")
def remove_all_snapshots(ctx: Ctx, this: Any, consolidate: bool | None = None, spec: Any = None) -> Any:
    vm = as_vm(this)

    async def body(task: Task) -> None:
        await elapse(vm.world, "snapshot")
        for node in list(vm.snapshots):
            _remove_node(vm, node, True)

    return submit(ctx, vm, body, op="VirtualMachine.removeAllSnapshots")
