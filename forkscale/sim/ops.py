"""VM, snapshot, clone and provisioning-check methods of the twin: the clone physics.

Argument shape errors are raised as method faults straight away (as vCenter does); anything
that depends on the state of the world is checked when the task runs, so a source powered
off while a clone waits in the queue fails that clone with `InvalidState`, like the real thing.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

from .disks import MAX_CHAIN, DiskFile, MiB
from .dispatch import Ctx, method
from .events import record, vm_arg
from .inventory import Datastore, DVPortgroup, Folder, Host, Network, ResourcePool
from .memory import admit
from .mo import MO
from .tasks import Task
from .vm import VM, Disk, Nic, Snapshot, SnapshotNode
from .world import World

MANUAL_MAC_LOW, MANUAL_MAC_HIGH = 0x005056000000, 0x0050563FFFFF
CHECK_RESULTS = VmomiSupport.GetVmodlType("vim.vm.check.Result[]")


async def _sleep(world: World, op: str, task: Task | None = None) -> None:
    delay = world.draw(op) * world.faults.slowdown(op)
    if task is not None:
        task.drawn_s = delay
    await asyncio.sleep(delay)


def _submit(ctx: Ctx, entity: MO, body: Callable[[Task], Awaitable[Any]], *, host: Host | None = None,
            op: str = "") -> Any:
    world = ctx.twin.world

    async def run(task: Task) -> Any:
        world.faults.maybe_fail(ctx.method, entity, task)
        return await body(task)

    return world.tasks.submit(ctx.method, entity, run, host=host.moid if host else None, user=ctx.user,
                              description=op)


def _vm(ctx: Ctx, this: Any) -> VM:
    if not isinstance(this, VM):
        raise vmodl.fault.InvalidArgument(msg="not a virtual machine", invalidProperty="_this")
    return this


def _require_host(vm: VM) -> None:
    if not vm.host.connected:
        raise vmodl.fault.HostNotConnected(msg=f"Host {vm.host.name} is not connected")


def _invalid_power(vm: VM, expected: str) -> vim.fault.InvalidPowerState:
    return vim.fault.InvalidPowerState(msg=f"The attempted operation cannot be performed in the current state "
                                       f"({_state_word(vm.power_state)}).", requestedState=expected,
                                       existingState=vm.power_state)


def _state_word(state: str) -> str:
    return {"poweredOn": "Powered on", "poweredOff": "Powered off", "suspended": "Suspended"}[state]


# power ------------------------------------------------------------------------------------------
def power_on_now(vm: VM, *, boot: bool = True) -> None:
    """Power on immediately. With `boot`, the simulated guest comes up after guest_boot latency."""
    world = vm.world
    vm.power_state = "poweredOn"
    vm.boot_time = world.now()
    for d in vm.disks:
        d.top.thaw(world.sim_seconds(), rate=0.05 * MiB)
    if not boot:
        vm.guest.tools_running = True
        vm.changed()
        return
    vm.guest.tools_running = False
    vm.changed()
    _guest_later(vm, "guest_boot", _guest_booted)


def _guest_later(vm: VM, op: str, fn: Callable[[VM], None]) -> None:
    world = vm.world
    boot_id = vm.boot_time

    async def later() -> None:
        delay = world.draw(op)
        vm.guest_drawn_s = delay
        await asyncio.sleep(delay)
        if vm.alive and vm.power_state == "poweredOn" and vm.boot_time == boot_id:
            fn(vm)

    job = asyncio.get_running_loop().create_task(later())
    world.tasks.background.add(job)
    job.add_done_callback(world.tasks.background.discard)


def _guest_booted(vm: VM) -> None:
    vm.guest.tools_running = True
    if vm.guest.agent == "simulated":
        apply_identity(vm)
    vm.changed()


def apply_identity(vm: VM) -> None:
    """What the guest script does after boot or resume, played by the twin for simulated guests."""
    ident = vm.extra.get("guestinfo.forkscale.id")
    if ident is None:
        return
    vm.guest.hostname = vm.extra.get("guestinfo.forkscale.hostname") or vm.name
    vm.guest.ip = vm.extra.get("guestinfo.forkscale.ip") or None
    vm.extra["guestinfo.forkscale.status"] = "ready"
    vm.extra["guestinfo.forkscale.machine_id"] = uuidlib.UUID(int=vm.world.rng.getrandbits(128)).hex


def power_off_now(vm: VM) -> None:
    world = vm.world
    vm.power_state = "poweredOff"
    vm.frozen = False
    vm.guest.tools_running = False
    vm.boot_time = None
    for d in vm.disks:
        d.top.freeze(world.sim_seconds())
    vm.changed()


@method("PowerOnVM_Task")
def power_on(ctx: Ctx, this: Any, host: Any = None) -> Any:
    vm = _vm(ctx, this)

    async def body(task: Any) -> None:
        await _sleep(vm.world, "power_on")
        _require_host(vm)
        if vm.template:
            raise vim.fault.InvalidState(msg="A template cannot be powered on")
        if vm.power_state == "poweredOn":
            raise _invalid_power(vm, "poweredOff")
        if not admit(vm.host, vm.mem.touched_mb):
            raise vim.fault.InsufficientMemoryResourcesFault(
                msg=f"Insufficient memory resources on host {vm.host.name}", unreserved=0, requested=vm.mem.touched_mb)
        power_on_now(vm)
        record(ctx, "VmPoweredOnEvent", vm, f"{vm.name} on {vm.host.name} is powered on", task=task)

    return _submit(ctx, vm, body, op="VirtualMachine.powerOn")


@method("PowerOffVM_Task")
def power_off(ctx: Ctx, this: Any) -> Any:
    vm = _vm(ctx, this)

    async def body(task: Any) -> None:
        await _sleep(vm.world, "power_off")
        if vm.power_state == "poweredOff":
            raise _invalid_power(vm, "poweredOn")
        power_off_now(vm)
        record(ctx, "VmPoweredOffEvent", vm, f"{vm.name} on {vm.host.name} is powered off", task=task)

    return _submit(ctx, vm, body, op="VirtualMachine.powerOff")


@method("ResetVM_Task")
def reset(ctx: Ctx, this: Any) -> Any:
    vm = _vm(ctx, this)

    async def body(task: Any) -> None:
        await _sleep(vm.world, "power_on")
        if vm.power_state != "poweredOn":
            raise _invalid_power(vm, "poweredOn")
        vm.frozen = False
        record(ctx, "VmResettingEvent", vm, f"{vm.name} on {vm.host.name} is reset", task=task)
        power_on_now(vm)

    return _submit(ctx, vm, body, op="VirtualMachine.reset")


@method("ShutdownGuest")
def shutdown_guest(ctx: Ctx, this: Any) -> None:
    vm = _vm(ctx, this)
    if vm.power_state != "poweredOn":
        raise _invalid_power(vm, "poweredOn")
    if not vm.guest.tools_running or vm.frozen:
        raise vim.fault.ToolsUnavailable(msg="VMware Tools is not running in the guest")
    power_off_now(vm)


@method("MarkAsTemplate")
def mark_as_template(ctx: Ctx, this: Any) -> None:
    vm = _vm(ctx, this)
    if vm.power_state != "poweredOff":
        raise _invalid_power(vm, "poweredOff")
    vm.template = True
    vm.changed()


@method("MarkAsVirtualMachine")
def mark_as_vm(ctx: Ctx, this: Any, pool: Any, host: Any = None) -> None:
    vm = _vm(ctx, this)
    if not vm.template:
        raise vmodl.fault.NotSupported(msg="The VM is not a template")
    vm.template = False
    vm.changed()


# destroy ----------------------------------------------------------------------------------------
def destroy_now(vm: VM) -> None:
    world = vm.world
    for d in vm.disks:
        world.disks.release(d.top)
    for node in _walk(vm.snapshots):
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
        return _destroy_folder(ctx, this)
    vm = _vm(ctx, this)

    async def body(task: Any) -> None:
        await _sleep(vm.world, "destroy")
        if not vm.alive:
            raise vmodl.fault.ManagedObjectNotFound(msg=f"The object '{vm.moid}' has already been deleted", obj=vm.ref)
        if vm.power_state == "poweredOn":
            raise _invalid_power(vm, "poweredOff")
        record(ctx, "VmRemovedEvent", vm, f"Removed {vm.name} on {vm.host.name}", task=task)
        destroy_now(vm)

    return _submit(ctx, vm, body, op="VirtualMachine.destroy")


def _destroy_folder(ctx: Ctx, folder: Folder) -> Any:
    async def body(task: Any) -> None:
        await _sleep(folder.world, "destroy")
        if any(isinstance(e, VM) and e.power_state == "poweredOn" for e in folder.entries):
            raise vim.fault.InvalidState(msg="The folder contains powered-on virtual machines")
        for e in list(folder.entries):
            if isinstance(e, VM):
                record(ctx, "VmRemovedEvent", e, f"Removed {e.name} on {e.host.name}", task=task)
                destroy_now(e)
        if isinstance(folder.parent, Folder):
            folder.parent.detach(folder)
        folder.world.remove(folder)

    return _submit(ctx, folder, body, op="Folder.destroy")


@method("CreateFolder")
def create_folder(ctx: Ctx, this: Any, name: str) -> Any:
    if not isinstance(this, Folder):
        raise vmodl.fault.InvalidArgument(invalidProperty="_this")
    if any(e.name == name for e in this.entries):
        existing = next(e for e in this.entries if e.name == name)
        raise vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=existing.ref)
    world = ctx.twin.world
    f = Folder(world, world.new_id("group-v"), name, this, list(this.child_type))
    world.add(f)
    this.attach(f)
    return f.ref


# reconfigure ------------------------------------------------------------------------------------
def apply_extra(vm: VM, options: list[Any]) -> None:
    for opt in options or []:
        if opt.value is None or opt.value == "":
            vm.extra.pop(opt.key, None)
        else:
            vm.extra[opt.key] = str(opt.value)


def check_nic_edits(vm: VM, changes: list[Any], *, instant: bool) -> None:
    """Only NIC edits (and, for instant clones, file-backed serial/parallel ports) are allowed."""
    for i, ch in enumerate(changes or []):
        dev = ch.device
        path = f"location.deviceChange[{i}]" if instant else f"spec.deviceChange[{i}]"
        if isinstance(dev, (vim.vm.device.VirtualSerialPort, vim.vm.device.VirtualParallelPort)) and instant:
            continue
        if not isinstance(dev, vim.vm.device.VirtualEthernetCard) or (instant and ch.operation != "edit"):
            raise vmodl.fault.InvalidArgument(
                msg=f"{path}: only edits of existing network adapters are supported here", invalidProperty=path)
        if not any(n.key == dev.key for n in vm.nics):
            raise vim.fault.InvalidDeviceSpec(msg=f"{path}: no network adapter with key {dev.key}",
                                              property=f"{path}.device.key", deviceIndex=i)
        if dev.addressType and dev.addressType.lower() == "manual":
            mac = (dev.macAddress or "").lower()
            if not _manual_mac_ok(mac):
                raise vim.fault.InvalidDeviceSpec(
                    msg=f"{path}: MAC address '{dev.macAddress}' is not in the manual range "
                        "00:50:56:00:00:00-00:50:56:3F:FF:FF", property=f"{path}.device.macAddress",
                    deviceIndex=i)


def _manual_mac_ok(mac: str) -> bool:
    try:
        value = int(mac.replace(":", ""), 16)
    except ValueError:
        return False
    return len(mac) == 17 and MANUAL_MAC_LOW <= value <= MANUAL_MAC_HIGH


def _network_for(world: World, backing: Any) -> Network | None:
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        key = backing.port.portgroupKey if backing.port else None
        mo = world.objects.get(key or "")
        if not isinstance(mo, DVPortgroup):
            raise vmodl.fault.InvalidArgument(msg=f"unknown port group key {key}", invalidProperty="backing.port")
        return mo
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
        if backing.network is not None:
            mo = world.objects.get(backing.network._moId)
            if isinstance(mo, Network):
                return mo
        for net in world.instances(Network):
            if net.name == backing.deviceName and not isinstance(net, DVPortgroup):
                return net
        raise vmodl.fault.InvalidArgument(msg=f"unknown network '{backing.deviceName}'", invalidProperty="backing")
    return None


def apply_nic_edits(vm: VM, changes: list[Any], *, instant: bool) -> None:
    """Apply NIC edits to `vm` (already a copy of the source's NICs). MAC collisions fail."""
    world = vm.world
    for ch in changes or []:
        dev = ch.device
        if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
            continue
        nic = next(n for n in vm.nics if n.key == dev.key)
        net = _network_for(world, dev.backing) if dev.backing is not None else None
        if net is not None:
            nic.network = net
        if dev.addressType and dev.addressType.lower() == "manual" and dev.macAddress:
            mac = dev.macAddress.lower()
            owner = world.macs.get(mac)
            if mac != nic.mac and mac in world.macs:
                raise vmodl.fault.InvalidArgument(
                    msg=f"MAC address {mac} is already in use by {owner or 'another VM'}",
                    invalidProperty="deviceChange.device.macAddress")
            world.macs.pop(nic.mac, None)
            nic.mac = mac
            nic.address_type = "manual"
            world.macs[mac] = vm.moid
        conn = dev.connectable
        if conn is not None:
            if instant and conn.migrateConnect:
                nic.connected = conn.migrateConnect != "disconnect"
            elif conn.connected is not None:
                nic.connected = bool(conn.connected)
            if conn.startConnected is not None:
                nic.start_connected = bool(conn.startConnected)


@method("ReconfigVM_Task")
def reconfigure(ctx: Ctx, this: Any, spec: Any) -> Any:
    vm = _vm(ctx, this)
    nic_changes = [c for c in spec.deviceChange or [] if isinstance(c.device, vim.vm.device.VirtualEthernetCard)]
    if len(nic_changes) != len(spec.deviceChange or []):
        raise vmodl.fault.NotSupported(msg="the twin reconfigures network adapters, extraConfig, memory, CPU and annotation only")
    check_nic_edits(vm, nic_changes, instant=False)

    async def body(task: Any) -> None:
        await _sleep(vm.world, "reconfigure")
        if (spec.memoryMB or spec.numCPUs) and vm.power_state == "poweredOn":
            raise _invalid_power(vm, "poweredOff")
        apply_extra(vm, spec.extraConfig)
        apply_nic_edits(vm, nic_changes, instant=False)
        if spec.memoryMB:
            vm.memory_mb = int(spec.memoryMB)
        if spec.numCPUs:
            vm.num_cpu = int(spec.numCPUs)
        if spec.annotation is not None:
            vm.annotation = spec.annotation
        if spec.name:
            vm.name = spec.name
        vm.changed()
        record(ctx, "VmReconfiguredEvent", vm, f"Reconfigured {vm.name} on {vm.host.name}", task=task,
               configSpec=spec)

    return _submit(ctx, vm, body, op="VirtualMachine.reconfigure")


# snapshots --------------------------------------------------------------------------------------
def _walk(nodes: list[SnapshotNode]) -> list[SnapshotNode]:
    out: list[SnapshotNode] = []
    for n in nodes:
        out.append(n)
        out.extend(_walk(n.children))
    return out


def _push_delta(vm: VM, d: Disk, suffix: str | None = None) -> DiskFile:
    """Freeze `d.top` and give the VM a fresh child delta on top of it."""
    world = vm.world
    now = world.sim_seconds()
    old = d.top
    old.freeze(now)
    n = sum(1 for _ in old.chain())
    name = f"[{old.datastore.name}] {vm.name}/{vm.name}-{n:06d}{suffix or ''}.vmdk"
    new = world.disks.create(name, old.datastore, old.capacity, parent=old)
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
        tops[d.key] = d.top
        world.disks.retain(d.top)  # the snapshot keeps its point in the chain
        _push_delta(vm, d)
    node = SnapshotNode(mo=snap, name=name, description=description, created=datetime.now(tz=UTC),
                        disks=tops, power_state=vm.power_state if memory else "poweredOff",
                        parent=vm.current_snapshot, sid=len(_walk(vm.snapshots)) + 1)
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
    vm = _vm(ctx, this)

    async def body(task: Any) -> Any:
        await _sleep(vm.world, "snapshot")
        if vm.frozen:
            raise vim.fault.InvalidState(msg="Cannot snapshot a frozen instant-clone source")
        if any(d.top.depth() + 1 > MAX_CHAIN for d in vm.disks):
            raise vim.fault.SnapshotFault(msg="The maximum number of delta disks (255) has been reached")
        return take_snapshot(vm, name, description or "", memory=bool(memory)).mo.ref

    return _submit(ctx, vm, body, host=vm.host, op="VirtualMachine.createSnapshot")


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
        new = world.disks.create(f"[{base.datastore.name}] {vm.name}/{vm.name}-{n:06d}.vmdk", base.datastore,
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

    async def body(task: Any) -> None:
        await _sleep(snap.world, "snapshot")
        revert_to(snap.vm, snap.node)

    return _submit(ctx, snap.vm, body, op="VirtualMachineSnapshot.revert")


@method("RevertToCurrentSnapshot_Task")
def revert_current(ctx: Ctx, this: Any, host: Any = None, suppressPowerOn: bool | None = None) -> Any:  # noqa: N803
    vm = _vm(ctx, this)
    if vm.current_snapshot is None:
        raise vim.fault.NotFound(msg="The virtual machine has no current snapshot")

    async def body(task: Any) -> None:
        await _sleep(vm.world, "snapshot")
        assert vm.current_snapshot is not None
        revert_to(vm, vm.current_snapshot)

    return _submit(ctx, vm, body, op="VirtualMachine.revert")


def _remove_node(vm: VM, node: SnapshotNode, remove_children: bool) -> None:
    world = vm.world
    siblings = node.parent.children if node.parent else vm.snapshots
    idx = siblings.index(node)
    siblings.pop(idx)
    if remove_children:
        doomed = _walk([node])
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

    async def body(task: Any) -> None:
        await _sleep(snap.world, "snapshot")
        _remove_node(snap.vm, snap.node, bool(removeChildren))

    return _submit(ctx, snap.vm, body, op="VirtualMachineSnapshot.remove")


@method("RemoveAllSnapshots_Task")
def remove_all_snapshots(ctx: Ctx, this: Any, consolidate: bool | None = None, spec: Any = None) -> Any:
    vm = _vm(ctx, this)

    async def body(task: Any) -> None:
        await _sleep(vm.world, "snapshot")
        for node in list(vm.snapshots):
            _remove_node(vm, node, True)

    return _submit(ctx, vm, body, op="VirtualMachine.removeAllSnapshots")


# clones -----------------------------------------------------------------------------------------
def _folder_of(ctx: Ctx, ref: Any, default: Folder) -> Folder:
    if ref is None:
        return default
    mo = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(mo, Folder):
        raise vmodl.fault.InvalidArgument(msg="location.folder is not a folder", invalidProperty="folder")
    return mo


def _placement(ctx: Ctx, src: VM, loc: Any, *, instant: bool) -> tuple[Folder, ResourcePool, Datastore, Host]:
    folder = _folder_of(ctx, loc.folder if loc else None, src.parent)
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
    return folder, pool, ds, host


def _check_name(folder: Folder, name: str) -> None:
    for e in folder.entries:
        if e.name == name and e.alive:
            raise vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=e.ref)


def _new_vm(src: VM, name: str, folder: Folder, pool: ResourcePool, ds: Datastore, host: Host) -> VM:
    from .builder import _mac

    world = src.world
    vm = VM(world, world.new_id("vm"), name, folder, host=host, pool=pool, datastore=ds, memory_mb=src.memory_mb,
            num_cpu=src.num_cpu, guest_id=src.guest_id, guest_full_name=src.guest_full_name)
    vm.extra = dict(src.extra)
    vm.guest.agent = src.guest.agent
    vm.mem.touched_mb = src.mem.touched_mb
    for n in src.nics:
        mac = _mac(world)
        world.macs[mac] = vm.moid
        vm.nics.append(Nic(key=n.key, mac=mac, network=n.network, connected=n.connected,
                           start_connected=n.start_connected, label=n.label))
    return vm


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
    if not src.host.connected:
        faults.append(vmodl.fault.HostNotConnected(msg=f"Host {src.host.name} is not connected"))
    for d in src.disks:
        parent = _fork_point(src, d.key) if (src.frozen and src.source_delta_done) else d.top
        if parent.depth() + 1 > MAX_CHAIN:
            faults.append(_chain_fault(src, parent.depth() + 1))
            break
    if not admit(src.host, src.world.memory.overhead_mb):
        faults.append(vim.fault.InsufficientMemoryResourcesFault(
            msg=f"Insufficient memory resources on host {src.host.name}", unreserved=0, requested=40))
    return faults


def _raise_first(faults: list[vmodl.MethodFault]) -> None:
    if faults:
        raise faults[0]


def _fork_point(vm: VM, key: int) -> DiskFile:
    d = next(d for d in vm.disks if d.key == key)
    return d.top.parent if d.top.parent is not None else d.top


def do_instant_clone(ctx: Ctx, src: VM, spec: Any, placement: tuple[Folder, ResourcePool, Datastore, Host]) -> VM:
    folder, pool, ds, host = placement
    world = src.world
    _check_name(folder, spec.name)
    _raise_first(instant_clone_faults(ctx, src, spec))
    clone = _new_vm(src, spec.name, folder, pool, ds, src.host)
    try:
        apply_nic_edits(clone, spec.location.deviceChange if spec.location else [], instant=True)
    except vmodl.MethodFault:
        for nic in clone.nics:
            world.macs.pop(nic.mac, None)
        clone.host.vms.discard(clone)
        raise
    apply_extra(clone, spec.config)
    if spec.biosUuid:
        clone.uuid = spec.biosUuid
    # disks: one delta per clone; the source gets one delta per clone (running) or once (frozen)
    for d in src.disks:
        if src.frozen:
            if not src.source_delta_done:
                _push_delta(src, d)
            shared = _fork_point(src, d.key)
        else:
            shared = d.top
            _push_delta(src, d)
        n = shared.depth()
        f = world.disks.create(f"[{ds.name}] {clone.name}/{clone.name}-{n:06d}.vmdk", ds, shared.capacity,
                               parent=shared)
        world.disks.retain(f)
        clone.disks.append(Disk(key=d.key, capacity_kb=d.capacity_kb, top=f, unit=d.unit, label=d.label))
    if src.frozen:
        src.source_delta_done = True
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
    src.changed()
    if src.frozen:
        # The clone resumes from the freeze point: its guest continues `instantclone.freeze`.
        clone.guest.tools_running = False
        for hook in list(world.clone_hooks):
            hook(src, clone)
        if clone.guest.agent == "simulated":
            _guest_later(clone, "guest_resume", _guest_booted)
    else:
        # A live clone continues exactly where the running source was; nothing re-identifies it.
        clone.guest.tools_running = True
        clone.guest.ip = src.guest.ip
        clone.guest.hostname = src.guest.hostname
    clone.changed()
    return clone


@method("InstantClone_Task")
def instant_clone(ctx: Ctx, this: Any, spec: Any) -> Any:
    src = _vm(ctx, this)
    if not spec.name:
        raise vmodl.fault.InvalidArgument(msg="spec.name is required", invalidProperty="spec.name")
    if spec.location is None:
        raise vmodl.fault.InvalidArgument(msg="spec.location is required", invalidProperty="spec.location")
    check_nic_edits(src, spec.location.deviceChange, instant=True)
    placement = _placement(ctx, src, spec.location, instant=True)

    async def body(task: Any) -> Any:
        await _sleep(src.world, "instant", task)
        clone = do_instant_clone(ctx, src, spec, placement)
        record(ctx, "VmClonedEvent", clone, f"Instant clone of {src.name} to {clone.name} completed", task=task,
               sourceVm=vm_arg(src))
        return clone.ref

    return _submit(ctx, src, body, host=src.host, op="VirtualMachine.instantClone")


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
    if not host.connected:
        faults.append(vmodl.fault.HostNotConnected(msg=f"Host {host.name} is not connected"))
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
    _check_name(folder, name)
    _raise_first(clone_faults(ctx, src, spec, ds, host))
    clone = _new_vm(src, name, folder, pool, ds, host)
    cfg = spec.config
    if cfg is not None:
        nic_changes = [c for c in cfg.deviceChange or [] if isinstance(c.device, vim.vm.device.VirtualEthernetCard)]
        try:
            check_nic_edits(clone, nic_changes, instant=False)
            apply_nic_edits(clone, nic_changes, instant=False)
        except vmodl.MethodFault:
            for nic in clone.nics:
                world.macs.pop(nic.mac, None)
            clone.host.vms.discard(clone)
            raise
        apply_extra(clone, cfg.extraConfig)
        if cfg.memoryMB:
            clone.memory_mb = int(cfg.memoryMB)
        if cfg.numCPUs:
            clone.num_cpu = int(cfg.numCPUs)
    linked = spec.location is not None and spec.location.diskMoveType == "createNewChildDiskBacking"
    snap = world.objects[spec.snapshot._moId] if spec.snapshot is not None else None
    snap_node = snap.node if isinstance(snap, Snapshot) else None  # (clone_faults checked it is one of src)
    now = world.sim_seconds()
    for d in src.disks:
        base = snap_node.disks[d.key] if snap_node is not None else d.top
        if linked:
            n = base.depth()
            f = world.disks.create(f"[{ds.name}] {name}/{name}-{n:06d}.vmdk", ds, base.capacity, parent=base)
        else:
            size = sum(x.size(now) for x in base.chain())
            f = world.disks.create(f"[{ds.name}] {name}/{name}.vmdk", ds, base.capacity, size=size)
        world.disks.retain(f)
        clone.disks.append(Disk(key=d.key, capacity_kb=d.capacity_kb, top=f, unit=d.unit, label=d.label))
    world.add(clone)
    folder.entries.append(clone)
    world.touch(folder, structural=True)
    if spec.template:
        clone.template = True
    elif spec.powerOn:
        power_on_now(clone)
    clone.changed()
    return clone


@method("CloneVM_Task")
def clone_vm(ctx: Ctx, this: Any, folder: Any, name: str, spec: Any) -> Any:
    src = _vm(ctx, this)
    target = _folder_of(ctx, folder, src.parent)
    if not name:
        raise vmodl.fault.InvalidArgument(msg="name is required", invalidProperty="name")
    _, pool, ds, host = _placement(ctx, src, spec.location, instant=False)
    linked = spec.location is not None and spec.location.diskMoveType == "createNewChildDiskBacking"

    async def body(task: Any) -> Any:
        await _sleep(src.world, "linked" if linked else "full")
        clone = do_clone(ctx, src, target, name, spec, ds, host, pool)
        record(ctx, "VmClonedEvent", clone, f"Clone of {src.name} to {clone.name} completed", task=task,
               sourceVm=vm_arg(src))
        if clone.power_state == "poweredOn":
            record(ctx, "VmPoweredOnEvent", clone, f"{clone.name} on {clone.host.name} is powered on", task=task)
        return clone.ref

    return _submit(ctx, src, body, host=host, op="VirtualMachine.clone")


# provisioning checks -----------------------------------------------------------------------------
@method("CheckInstantClone_Task")
def check_instant_clone(ctx: Ctx, this: Any, vm: Any, spec: Any, testType: list[str] | None = None) -> Any:  # noqa: N803
    src = ctx.twin.resolve(vm, ctx.session)
    if not isinstance(src, VM):
        raise vmodl.fault.InvalidArgument(invalidProperty="vm")
    check_nic_edits(src, spec.location.deviceChange if spec.location else [], instant=True)
    placement = _placement(ctx, src, spec.location, instant=True)

    async def body(task: Any) -> Any:
        await _sleep(src.world, "check")
        faults = instant_clone_faults(ctx, src, spec)
        dup = next((e for e in placement[0].entries if e.name == spec.name), None)
        if dup is not None:
            faults.append(vim.fault.DuplicateName(msg=f"The name '{spec.name}' already exists.", name=spec.name,
                                                  object=dup.ref))
        return CHECK_RESULTS([vim.vm.check.Result(vm=src.ref, host=src.host.ref, error=faults, warning=[])])

    return _submit(ctx, src, body, op="ProvisioningChecker.checkInstantClone")


@method("CheckClone_Task")
def check_clone(ctx: Ctx, this: Any, vm: Any, folder: Any, name: str, spec: Any,
                testType: list[str] | None = None) -> Any:  # noqa: N803
    src = ctx.twin.resolve(vm, ctx.session)
    if not isinstance(src, VM):
        raise vmodl.fault.InvalidArgument(invalidProperty="vm")
    target = _folder_of(ctx, folder, src.parent)
    _, pool, ds, host = _placement(ctx, src, spec.location, instant=False)

    async def body(task: Any) -> Any:
        await _sleep(src.world, "check")
        faults = clone_faults(ctx, src, spec, ds, host)
        dup = next((e for e in target.entries if e.name == name), None)
        if dup is not None:
            faults.append(vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=dup.ref))
        return CHECK_RESULTS([vim.vm.check.Result(vm=src.ref, host=host.ref, error=faults, warning=[])])

    return _submit(ctx, src, body, op="ProvisioningChecker.checkClone")
