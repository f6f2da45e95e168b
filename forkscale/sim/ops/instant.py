"""Instant clones (VMFork): a clone shares its source's disks and memory at the fork point.

A running source gets a fresh delta per clone and its clone continues exactly where it was; a
frozen source gets one delta, once, and each clone resumes from the freeze point (its guest
continues `instantclone.freeze`, and the world's clone hooks run).
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..disks import MAX_CHAIN, DiskFile, MiB
from ..dispatch import Ctx, method
from ..events import INSTANT_CLONED, record_ex
from ..inventory import Datastore
from ..memory import admit, forked
from ..tasks import Task
from ..vm import VM, Disk
from .common import as_vm, elapse, placement_faults, submit
from .placement import Placement, check_name, discard_new_vm, new_vm, raise_first, resolve_placement
from .power import guest_up_later
from .reconfigure import apply_extra, apply_nic_edits
from .snapshots import push_delta
from .validate import check_instant_spec


def _chain_fault(src: VM, depth: int) -> vmodl.fault.SystemError:
    cause = vim.fault.GenericVmConfigFault(reason="msg.migrate.prepare.failed",
                                           msg=f"Disk chain of {src.name} would reach {depth} levels (limit {MAX_CHAIN})")
    return vmodl.fault.SystemError(msg=f"A general system error occurred: the redo log chain of {src.name} is "
                                       f"too deep ({depth} > {MAX_CHAIN}) (msg.migrate.prepare.failed)",
                                   reason="msg.migrate.prepare.failed", faultCause=cause)


def instant_clone_faults(ctx: Ctx, src: VM, spec: Any) -> list[vmodl.MethodFault]:
    """Every reason this instant clone would fail right now (used by the task and by the checker)."""
    faults: list[vmodl.MethodFault] = []
    if src.power_state != "poweredOn":
        faults.append(vim.fault.InvalidState(msg=f"The source VM {src.name} must be powered on (running or frozen) "
                                                 "to be instant-cloned; it is powered off."))
    if src.template:
        faults.append(vim.fault.InvalidState(msg=f"{src.name} is a template"))
    faults += placement_faults(src.host)
    for d in src.disks:
        if d.independent:
            continue
        parent = fork_point(src, d.key) if (src.frozen and src.source_delta_done) else d.top
        if parent.depth() + 1 > MAX_CHAIN:
            faults.append(_chain_fault(src, parent.depth() + 1))
            break
    if not admit(src.host, src.world.memory.overhead_mb):
        faults.append(vim.fault.InsufficientMemoryResourcesFault(
            msg=f"Insufficient memory resources on host {src.host.name}", unreserved=0, requested=40))
    return faults


def fork_point(vm: VM, key: int) -> DiskFile:
    d = next(d for d in vm.disks if d.key == key)
    return d.top.parent if d.top.parent is not None else d.top


def do_instant_clone(ctx: Ctx, src: VM, spec: Any, placement: Placement) -> VM:
    folder, pool, ds, _ = placement
    world = src.world
    check_name(folder, spec.name)
    raise_first(instant_clone_faults(ctx, src, spec))
    epoch = src.host.mem_epoch
    clone = new_vm(src, spec.name, folder, pool, ds, src.host)
    try:
        apply_nic_edits(clone, spec.location.deviceChange if spec.location else [], instant=True)
    except vmodl.MethodFault:
        discard_new_vm(clone)
        raise
    apply_extra(clone, spec.config)
    if spec.biosUuid:
        clone.uuid = spec.biosUuid
    _fork_disks(src, clone, ds)
    now = world.sim_seconds()
    clone.mem.group = src.mem.group or src.moid
    clone.mem.forked_at = now
    clone.mem.parent = src
    src.fork_kids.add(clone)
    src.last_fork_at = now
    clone.power_state = "poweredOn"
    clone.boot_time = world.now()
    for cd in clone.disks:
        cd.top.thaw(now, rate=0.05 * MiB)
    world.add(clone)
    folder.entries.append(clone)
    world.touch(folder, structural=True)
    forked(src.host, clone, epoch)
    src.changed()
    _continue_guest(src, clone)
    clone.changed()
    return clone


def _fork_disks(src: VM, clone: VM, ds: Datastore) -> None:
    """One delta per clone; the source gets one delta per clone (running) or once (frozen)."""
    world = src.world
    for d in src.disks:
        if d.independent:
            continue  # a user's independent disk stays with its VM: an instant clone gets none
        if src.frozen:
            if not src.source_delta_done:
                push_delta(src, d)
            shared = fork_point(src, d.key)
        else:
            shared = d.top
            push_delta(src, d)
        n = shared.depth()
        f = world.disks.create(f"[{ds.name}] {clone.name}/{clone.name}-{n:06d}.vmdk", ds, shared.capacity,
                               parent=shared)
        world.disks.retain(f)
        clone.disks.append(Disk(key=d.key, capacity_kb=d.capacity_kb, top=f, unit=d.unit, label=d.label))
    if src.frozen:
        src.source_delta_done = True


def _continue_guest(src: VM, clone: VM) -> None:
    if src.frozen:
        # The clone resumes from the freeze point: its guest continues `instantclone.freeze`.
        clone.guest.tools_running = False
        for hook in list(src.world.clone_hooks):
            hook(src, clone)
        if clone.guest.agent == "simulated":
            guest_up_later(clone, "guest_resume")
    else:
        # A live clone continues exactly where the running source was; nothing re-identifies it.
        clone.guest.tools_running = True
        clone.guest.ip = src.guest.ip
        clone.guest.hostname = src.guest.hostname
        src.world.sandboxes.on_clone(src, clone)  # and its disk


@method("InstantClone_Task")
def instant_clone(ctx: Ctx, this: Any, spec: Any) -> Any:
    src = as_vm(this)
    check_instant_spec(src, spec)
    placement = resolve_placement(ctx, src, spec.location, instant=True)

    async def body(task: Task) -> Any:
        await elapse(src.world, "instant", task)
        clone = do_instant_clone(ctx, src, spec, placement)
        record_ex(ctx, INSTANT_CLONED, clone, f"{clone.name} was instantly cloned from {src.name}", task=task,
                  arguments={"sourceVm": src.name})
        return clone.ref

    return submit(ctx, src, body, host=src.host, op="VirtualMachine.instantClone")
