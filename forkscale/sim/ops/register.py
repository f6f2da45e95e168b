"""VMs leaving and joining the inventory without being cloned: UnregisterVM, RegisterVM_Task and
CreateVM_Task.

An unregistered VM leaves the inventory but not the datastore: its `.vmx`, disks and snapshot
files stay (listed by the datastore browser, served over `/folder`) until it is registered again
from its `.vmx` path — as a new managed object, powered off, with its disks, snapshots and what
its guest wrote. `CreateVM_Task` builds a VM from a ConfigSpec: one SCSI controller, new or
existing disks, network adapters with generated or manual MACs.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record
from ..files import split_ds_path
from ..inventory import Cluster, Datastore, Folder, Host, ResourcePool
from ..tasks import Task
from ..vm import VM, Nic, Snapshot
from .common import as_vm, elapse, invalid_power, placement_faults, submit
from .devices import check_backing, network_for
from .placement import check_name
from .settings import apply_settings
from .snapshots import walk
from .validate import check_new_config
from .vdisks import CONTROLLER_KEY, apply_disk_changes, check_disk_changes, split_changes

DEFAULT_MEMORY_MB, DEFAULT_CPUS = 1024, 1


@method("UnregisterVM")
def unregister(ctx: Ctx, this: Any) -> None:
    vm = as_vm(this)
    if vm.power_state == "poweredOn":
        raise invalid_power(vm, "poweredOff")
    world = vm.world
    record(ctx, "VmRemovedEvent", vm, f"Removed {vm.name} on {vm.host.name} from inventory")
    for node in walk(vm.snapshots):
        world.remove(node.mo)
    for n in vm.nics:
        world.macs.pop(n.mac, None)
    vm.parent.detach(vm)
    vm.host.vms.discard(vm)
    world.remove(vm)
    world.files.unregistered[vm.vmx_path()] = vm


def _pool(ctx: Ctx, ref: Any) -> ResourcePool:
    mo = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(mo, ResourcePool):
        raise vmodl.fault.InvalidArgument(msg="pool is not a resource pool", invalidProperty="pool")
    return mo


def _host_for(ctx: Ctx, ref: Any, pool: ResourcePool | None, prefer: Host | None) -> Host:
    """The host a (re)registered VM lands on: the one asked for, else `prefer`, else the first that takes VMs."""
    cluster = pool.owner if pool is not None and isinstance(pool.owner, Cluster) else None
    if ref is not None:
        mo = ctx.twin.resolve(ref, ctx.session)
        if not isinstance(mo, Host):
            raise vmodl.fault.InvalidArgument(msg="host is not a host", invalidProperty="host")
        if cluster is not None and mo not in cluster.hosts:
            raise vmodl.fault.InvalidArgument(msg=f"host {mo.name} is not in the pool's cluster",
                                              invalidProperty="host")
        return mo
    candidates = list(cluster.hosts) if cluster is not None else ctx.twin.world.instances(Host)
    if prefer is not None and prefer in candidates and not placement_faults(prefer):
        return prefer
    for h in candidates:
        if not placement_faults(h):
            return h
    raise vim.fault.InvalidState(msg="no connected host out of maintenance mode to place the VM on")


def _folder(this: Any) -> Folder:
    if not isinstance(this, Folder) or "VirtualMachine" not in this.child_type:
        raise vmodl.fault.NotSupported(msg="only a VM folder holds virtual machines")
    return this


@method("RegisterVM_Task")
def register(ctx: Ctx, this: Any, path: str, name: str | None = None, asTemplate: bool = False,  # noqa: N803
             pool: Any = None, host: Any = None) -> Any:
    folder = _folder(this)
    split_ds_path(path)
    if asTemplate and (pool is not None or host is None):
        raise vmodl.fault.InvalidArgument(msg="a template is registered on a host, without a pool",
                                          invalidProperty="pool" if pool is not None else "host")
    if not asTemplate and pool is None:
        raise vmodl.fault.InvalidArgument(msg="a virtual machine is registered into a resource pool",
                                          invalidProperty="pool")
    target_pool = _pool(ctx, pool) if pool is not None else None

    async def body(task: Task) -> Any:
        await elapse(folder.world, "register")
        world = folder.world
        if any(v.vmx_path() == path for v in world.instances(VM)):
            raise vim.fault.AlreadyExists(msg=f"The virtual machine {path} is already registered", name=path)
        vm = world.files.unregistered.get(path)
        if vm is None:
            raise vim.fault.NotFound(msg=f"File {path} was not found (the twin registers the VMs it unregistered)")
        check_name(folder, name or vm.name)
        place = _host_for(ctx, host, target_pool, vm.host)
        for fault in placement_faults(place):
            raise fault
        del world.files.unregistered[path]
        _revive(vm, folder, name or vm.name, target_pool or vm.pool, place, bool(asTemplate))
        record(ctx, "VmRegisteredEvent", vm, f"Registered {vm.name} on {place.name}", task=task)
        return vm.ref

    return submit(ctx, folder, body, op="Folder.registerVm")


def _revive(vm: VM, folder: Folder, name: str, pool: ResourcePool, host: Host, template: bool) -> None:
    """An unregistered VM joins the inventory again, as a new managed object."""
    world = vm.world
    moid = world.new_id("vm")
    world.sandboxes.moved(vm.moid, moid)
    vm.moid, vm.ref, vm.alive = moid, vim.VirtualMachine(moid), True
    vm.name, vm.pool, vm.template = name, pool, template
    vm._cache.clear()
    vm.host = host
    host.vms.add(vm)
    for n in vm.nics:
        if n.mac in world.macs:
            n.mac = world.new_mac()  # taken meanwhile: vCenter generates another
        world.macs[n.mac] = moid
    for node in walk(vm.snapshots):
        snap = Snapshot(world, world.new_id("snapshot"), vm)
        snap.node = node
        node.mo = snap
        world.add(snap)
    world.add(vm)
    folder.attach(vm)
    vm.changed()


def _home(ctx: Ctx, config: Any) -> tuple[Datastore, str | None]:
    """The datastore and directory a new VM's files go to (files.vmPathName `[ds]` or `[ds] dir/x.vmx`)."""
    vmx = config.files.vmPathName if config.files is not None else None
    if not vmx:
        raise vmodl.fault.InvalidArgument(msg="config.files.vmPathName is required",
                                          invalidProperty="config.files.vmPathName")
    ds_name, rel = split_ds_path(vmx)
    ds = next((d for d in ctx.twin.world.instances(Datastore) if d.name == ds_name), None)
    if ds is None:
        raise vim.fault.InvalidDatastore(msg=f"Datastore '{ds_name}' not found", name=ds_name)
    return ds, (rel.split("/")[0] if rel else None)


@method("CreateVM_Task")
def create_vm(ctx: Ctx, this: Any, config: Any, pool: Any, host: Any = None) -> Any:
    folder = _folder(this)
    check_new_config(config, "config")
    home, stem = _home(ctx, config)
    target_pool = _pool(ctx, pool)
    nics, disks, controllers = split_changes(config, "CreateVM_Task")
    if len(controllers) > 1:
        raise vmodl.fault.NotSupported(msg="CreateVM_Task: the twin's VMs have one SCSI controller")
    keys = {CONTROLLER_KEY} | {c.device.key for _, c in controllers}
    for _, ch in disks:
        if ch.device.controllerKey in keys:
            ch.device.controllerKey = CONTROLLER_KEY
    for i, ch in enumerate(nics):
        if ch.operation != "add":
            raise vim.fault.InvalidDeviceSpec(msg=f"a new VM's network adapter {i} must be added", property="operation",
                                              deviceIndex=i)
        if ch.device.backing is not None:  # the same backing rules as an edit (deviceName required...)
            at = config.deviceChange.index(ch)
            check_backing(folder.world, ch.device.backing, f"config.deviceChange[{at}].device.backing", at)

    async def body(task: Task) -> Any:
        await elapse(folder.world, "create")
        check_name(folder, config.name)
        place = _host_for(ctx, host, target_pool, None)
        for fault in placement_faults(place):
            raise fault
        vm = _new_vm(ctx, folder, config, target_pool, home, place, stem)
        record(ctx, "VmBeingCreatedEvent", vm, f"Creating {vm.name} on {place.name}", task=task, configSpec=config)
        try:
            check_disk_changes(vm, disks, {CONTROLLER_KEY})
            apply_disk_changes(vm, disks)
            _add_nics(vm, nics)
        except vmodl.MethodFault:
            for n in vm.nics:
                vm.world.macs.pop(n.mac, None)
            place.vms.discard(vm)
            raise
        vm.world.add(vm)
        folder.attach(vm)
        record(ctx, "VmCreatedEvent", vm, f"Created virtual machine {vm.name} on {place.name}", task=task)
        return vm.ref

    return submit(ctx, folder, body, op="Folder.createVm")


def _new_vm(ctx: Ctx, folder: Folder, config: Any, pool: ResourcePool, home: Datastore, host: Host,
            stem: str | None) -> VM:
    world = ctx.twin.world
    guest_id = config.guestId or "otherGuest"
    vm = VM(world, world.new_id("vm"), config.name, folder, host=host, pool=pool, datastore=home,
            memory_mb=int(config.memoryMB or DEFAULT_MEMORY_MB), num_cpu=int(config.numCPUs or DEFAULT_CPUS),
            guest_id=guest_id, guest_full_name=guest_id)
    vm.stem = stem or config.name
    taken = {v.stem for v in world.instances(VM) if v.home is home and v is not vm}
    taken |= {v.stem for v in world.files.unregistered.values() if v.home is home}
    n = 1
    base = vm.stem
    while vm.stem in taken or world.disks.by_name(f"[{home.name}] {vm.stem}/{vm.stem}.vmdk") is not None:
        vm.stem = f"{base}_{n}"
        n += 1
    vm.annotation = config.annotation or ""
    apply_settings(vm, config)  # tools, boot options, allocations... kept as a reconfiguration keeps them
    for opt in config.extraConfig or []:
        if opt.value not in (None, ""):
            vm.extra[opt.key] = str(opt.value)
    vm.guest.agent = "simulated"
    return vm


def _add_nics(vm: VM, changes: list[Any]) -> None:
    world = vm.world
    for i, ch in enumerate(changes):
        dev = ch.device
        net = network_for(world, dev.backing) if dev.backing is not None else None
        if net is None:
            raise vim.fault.InvalidDeviceSpec(msg=f"network adapter {i} needs a network backing",
                                              property="backing", deviceIndex=i)
        manual = (dev.addressType or "").lower() == "manual" and dev.macAddress
        mac = dev.macAddress.lower() if manual else world.new_mac()
        if manual and mac in world.macs:
            raise vmodl.fault.InvalidArgument(msg=f"MAC address {mac} is already in use",
                                              invalidProperty="deviceChange.device.macAddress")
        world.macs[mac] = vm.moid
        vm.nics.append(Nic(key=4000 + i, mac=mac, network=net, address_type="manual" if manual else "assigned",
                           label=f"Network adapter {i + 1}"))
