"""PromoteDisks_Task: a linked clone's disks stop depending on what they were cloned from.

With `unlink`, each disk's shared backings are copied into the VM's own (without snapshots, the
whole chain becomes one flat file: chain depth 1, the full size consumed, and the parent no
longer counts the clone among its users); without, the VM's own unshared, unpinned deltas are
merged into their children. A frozen source cannot be promoted (`InvalidState`).
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record_ex
from ..tasks import Task
from ..vm import VM, Disk
from .common import as_vm, elapse, submit
from .diskmove import need_space, promote, shared_files

CONSOLIDATED = "com.vmware.vc.VmDiskConsolidatedEvent"


def _chosen(vm: VM, disks: list[Any] | None) -> list[Disk]:
    if not disks:
        return list(vm.disks)
    out = []
    for i, dev in enumerate(disks):
        d = next((d for d in vm.disks if d.key == dev.key), None)
        if d is None:
            raise vmodl.fault.InvalidArgument(msg=f"disks[{i}]: no virtual disk with key {dev.key}",
                                              invalidProperty=f"disks[{i}]")
        out.append(d)
    return out


@method("PromoteDisks_Task")
def promote_disks(ctx: Ctx, this: Any, unlink: bool, disks: list[Any] | None = None) -> Any:
    vm = as_vm(this)
    chosen = _chosen(vm, disks)

    async def body(task: Task) -> None:
        await elapse(vm.world, "promote")
        if vm.frozen:
            raise vim.fault.InvalidState(msg=f"{vm.name} is a frozen instant-clone source: its disks cannot be "
                                             "promoted")
        if unlink:
            now = vm.world.sim_seconds()
            for d in chosen:
                need_space(d.top.datastore, sum(f.size(now) for f in shared_files(vm, d)))
        for d in chosen:
            if d in vm.disks:
                promote(vm, d, bool(unlink))
        vm.changed()
        record_ex(ctx, CONSOLIDATED, vm, f"Virtual machine {vm.name} disks consolidated successfully on "
                  f"{vm.host.name}", task=task)

    return submit(ctx, vm, body, host=vm.host, op="VirtualMachine.promoteDisks")
