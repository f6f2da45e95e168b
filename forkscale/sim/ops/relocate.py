"""RelocateVM_Task and MigrateVM_Task: a VM changes host (vMotion), datastore (Storage vMotion),
pool or folder. The disks move as forkscale.sim.ops.diskmove says.

Checked when the task runs, as vCenter does: a frozen instant-clone source cannot move
(`InvalidState`); the target host must be connected and not in maintenance mode
(`HostNotConnected` / `InvalidHostState`), in the cluster of the target pool (`InvalidArgument`),
with memory for a running VM (`InsufficientMemoryResourcesFault`); the target datastores must
have room for what is written there (`NoDiskSpace`). A running VM that changes host or datastore
is hot-migrated (`VmBeingHotMigratedEvent`, `VmMigratedEvent`); otherwise it is relocated
(`VmBeingRelocatedEvent`, `VmRelocatedEvent`). A VM that moves host stops sharing memory pages
with its instant-clone family (P-Share needs one host).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import ds_arg, host_arg, record
from ..inventory import Cluster, Datastore, Folder, Host, ResourcePool
from ..memory import admit
from ..tasks import Task
from ..vm import VM, Disk
from .common import as_vm, invalid_power, placement_faults, submit
from .devices import check_device_changes
from .diskmove import MOVE_TYPES, bytes_to_move, move_disk, need_space
from .placement import folder_of
from .reconfigure import apply_nic_edits

GiB = 1024**3


@dataclass
class Move:
    host: Host
    pool: ResourcePool
    folder: Folder
    home: Datastore
    disks: dict[int, tuple[Datastore, str | None]] = field(default_factory=dict)  # key -> (target, move type)
    nic_changes: list[Any] = field(default_factory=list)


def _resolve(ctx: Ctx, ref: Any, kind: type, what: str) -> Any:
    mo = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(mo, kind):
        raise vmodl.fault.InvalidArgument(msg=f"spec.{what} is not a {kind.__name__}", invalidProperty=what)
    return mo


def plan_move(ctx: Ctx, vm: VM, spec: Any) -> Move:
    """A RelocateSpec as a plan; argument shape errors are raised at once (as vCenter does)."""
    host = _resolve(ctx, spec.host, Host, "host") if spec.host is not None else vm.host
    pool = _resolve(ctx, spec.pool, ResourcePool, "pool") if spec.pool is not None else vm.pool
    folder = folder_of(ctx, spec.folder, vm.parent)
    home = _resolve(ctx, spec.datastore, Datastore, "datastore") if spec.datastore is not None else vm.home
    default_type = spec.diskMoveType
    if default_type is not None and default_type not in MOVE_TYPES:
        raise vmodl.fault.InvalidArgument(msg=f"unknown diskMoveType {default_type}", invalidProperty="diskMoveType")
    move = Move(host=host, pool=pool, folder=folder, home=home)
    if spec.datastore is not None:
        for d in vm.disks:
            move.disks[d.key] = (home, default_type)
    for i, loc in enumerate(spec.disk or []):
        if not any(d.key == loc.diskId for d in vm.disks):
            raise vmodl.fault.InvalidArgument(msg=f"spec.disk[{i}].diskId: no disk with key {loc.diskId}",
                                              invalidProperty=f"disk[{i}].diskId")
        if loc.diskMoveType is not None and loc.diskMoveType not in MOVE_TYPES:
            raise vmodl.fault.InvalidArgument(msg=f"unknown diskMoveType {loc.diskMoveType}",
                                              invalidProperty=f"disk[{i}].diskMoveType")
        target = _resolve(ctx, loc.datastore, Datastore, f"disk[{i}].datastore")
        move.disks[loc.diskId] = (target, loc.diskMoveType or default_type)
    move.nic_changes = list(spec.deviceChange or [])
    check_device_changes(vm, move.nic_changes, "spec.deviceChange", instant=False)
    return move


def _cluster(pool: ResourcePool) -> Cluster | None:
    owner = pool.owner
    return owner if isinstance(owner, Cluster) else None


def move_faults(vm: VM, move: Move) -> list[vmodl.MethodFault]:
    """Why this move cannot happen now (the task's checks, and CheckRelocate_Task's)."""
    faults: list[vmodl.MethodFault] = []
    if vm.frozen:
        faults.append(vim.fault.InvalidState(msg=f"{vm.name} is a frozen instant-clone source: it cannot be "
                                                 "relocated or migrated"))
    cluster = _cluster(move.pool)
    if cluster is not None and move.host not in cluster.hosts:
        faults.append(vmodl.fault.InvalidArgument(msg=f"host {move.host.name} is not in the cluster of pool "
                                                      f"{move.pool.name}", invalidProperty="host"))
    if move.host is not vm.host:
        faults += placement_faults(move.host)
        if vm.power_state == "poweredOn" and not admit(move.host, vm.mem.touched_mb):
            faults.append(vim.fault.InsufficientMemoryResourcesFault(
                msg=f"Insufficient memory resources on host {move.host.name}", unreserved=0,
                requested=vm.mem.touched_mb))
    for ds, nbytes in _writes(vm, move).items():
        try:
            need_space(ds, nbytes)
        except vim.fault.NoDiskSpace as fault:
            faults.append(fault)
    return faults


def _writes(vm: VM, move: Move) -> dict[Datastore, int]:
    now = vm.world.sim_seconds()
    out: dict[Datastore, int] = {}
    for d in vm.disks:
        target = move.disks.get(d.key)
        if target is not None:
            out[target[0]] = out.get(target[0], 0) + bytes_to_move(vm, d, target[0], target[1], now)
    return out


def apply_move(vm: VM, move: Move) -> None:
    world = vm.world
    old_host = vm.host
    for d in list(vm.disks):
        target = move.disks.get(d.key)
        if target is not None:
            move_disk(vm, _disk(vm, d.key), target[0], target[1])
    vm.home = move.home
    if move.host is not vm.host:
        vm.move_host(move.host)
        vm.mem.group = None  # P-Share works within one host: a moved VM keeps its pages to itself
        vm.mem.forked_at = None
        vm.mem.parent = None
        vm.fork_kids = set()
        world.touch(old_host)
        world.touch(move.host)
    moved = move.host is not old_host or move.pool is not vm.pool
    vm.pool = move.pool
    if move.folder is not vm.parent:
        vm.parent.detach(vm)
        move.folder.attach(vm)
    elif moved:
        world.moved(vm)  # views of hosts and pools list their VMs
    apply_nic_edits(vm, move.nic_changes, instant=False)
    vm.changed()


def _disk(vm: VM, key: int) -> Disk:
    return next(d for d in vm.disks if d.key == key)


async def _elapse(vm: VM, move: Move) -> None:
    world = vm.world
    copy = sum(_writes(vm, move).values())
    delay = world.delay("vmotion") if move.host is not vm.host else 0.0
    rate = float(world.latencies.get("disk_copy_gib_s", 1.0)) or 1.0
    await asyncio.sleep(delay + world.latency(copy / GiB / rate))


def run_move(ctx: Ctx, vm: VM, move: Move, *, migrate: bool) -> Any:
    async def body(task: Task) -> None:
        for fault in move_faults(vm, move):
            raise fault
        hot = vm.power_state == "poweredOn"
        dest = {"destHost": host_arg(move.host), "destDatastore": ds_arg(move.home)}
        being = "VmBeingHotMigratedEvent" if hot else ("VmBeingMigratedEvent" if migrate else "VmBeingRelocatedEvent")
        record(ctx, being, vm, f"Migrating {vm.name} from {vm.host.name} to {move.host.name}", task=task, **dest)
        source = {"sourceHost": host_arg(vm.host), "sourceDatastore": ds_arg(vm.home)}
        try:
            await _elapse(vm, move)
            for fault in move_faults(vm, move):
                raise fault
            apply_move(vm, move)
        except vmodl.MethodFault as fault:
            failed = "VmFailedMigrateEvent" if hot or migrate else "VmRelocateFailedEvent"
            record(ctx, failed, vm, f"Failed to migrate {vm.name} to {move.host.name}", task=task, reason=fault,
                   **dest)
            raise
        done = "VmMigratedEvent" if hot or migrate else "VmRelocatedEvent"
        record(ctx, done, vm, f"{vm.name} migrated to {move.host.name}, {move.home.name}", task=task, **source)

    op = "VirtualMachine.migrate" if migrate else "VirtualMachine.relocate"
    return submit(ctx, vm, body, host=vm.host, op=op)


@method("RelocateVM_Task")
def relocate(ctx: Ctx, this: Any, spec: Any, priority: str | None = None) -> Any:
    vm = as_vm(this)
    if spec is None:
        raise vmodl.fault.InvalidArgument(msg="spec is required", invalidProperty="spec")
    return run_move(ctx, vm, plan_move(ctx, vm, spec), migrate=False)


@method("MigrateVM_Task")
def migrate(ctx: Ctx, this: Any, pool: Any = None, host: Any = None, priority: str | None = None,
            state: str | None = None) -> Any:
    vm = as_vm(this)
    if pool is None and host is None:
        raise vmodl.fault.InvalidArgument(msg="MigrateVM_Task needs a pool or a host", invalidProperty="host")
    if state is not None and state != vm.power_state:
        raise invalid_power(vm, state)
    return run_move(ctx, vm, plan_move(ctx, vm, vim.vm.RelocateSpec(pool=pool, host=host)), migrate=True)
