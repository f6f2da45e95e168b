"""vApps: `CreateVApp` on a resource pool (or vApp), and on a vApp `CreateChildVM_Task`,
`PowerOnVApp_Task` / `PowerOffVApp_Task`, `UpdateVAppConfig` and `Destroy_Task`.

A vApp is created as a child pool is (a complete, valid allocation; a name unique among the
pool's children and in its folder) and with a valid VAppConfigSpec: products are only added
(`operation` "add" with their `info`), `entityConfig` names only its members, a child vApp
takes no folder and a root vApp a VM folder (`InvalidArgument` naming the property otherwise).
Powering a vApp on or off powers its VMs and its child vApps' (`NoVmInVApp` when it has none,
`InvalidPowerState` when there is nothing to change). Destroying a vApp destroys its VMs and
child vApps with it, refused (`InvalidPowerState`) while any of them runs; a plain pool inside it
goes to the vApp's parent, as a destroyed pool's children do.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record
from ..inventory import Datacenter, Folder, ResourcePool
from ..memory import admit
from ..tasks import Task
from ..vapp import VirtualApp
from ..vm import VM
from .common import elapse, require_placeable, submit
from .pools import _allocation, _arg, _check_name, _pool, _post, remove_pool
from .power import on_message, power_off_now, power_on_now
from .register import create_in


def _vapp(this: Any) -> VirtualApp:
    if not isinstance(this, VirtualApp):
        raise vmodl.fault.InvalidArgument(msg="not a vApp", invalidProperty="_this")
    return this


def _datacenter_folder(pool: ResourcePool) -> Folder:
    node: Any = pool
    while node is not None and not isinstance(node, Datacenter):
        node = node.parent
    assert isinstance(node, Datacenter)
    return node.vm_folder


def _folder_for(ctx: Ctx, parent: ResourcePool, ref: Any) -> Folder | None:
    """A root vApp's folder (the datacenter's VM folder by default); a child vApp has none."""
    if isinstance(parent, VirtualApp):
        if ref is not None:
            raise vmodl.fault.InvalidArgument(msg="vmFolder must be unset for a child vApp", invalidProperty="vmFolder")
        return None
    if ref is None:
        return _datacenter_folder(parent)
    folder = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(folder, Folder) or "VirtualApp" not in folder.child_type:
        raise vmodl.fault.InvalidArgument(msg="vmFolder is not a VM folder", invalidProperty="vmFolder")
    return folder


def _products(spec: Any, prop: str, current: list[Any]) -> list[Any]:
    """The product list after a VAppConfigSpec's `product` edits (add, edit or remove by key)."""
    out = list(current)
    for i, p in enumerate(spec.product or []):
        where = f"{prop}.product[{i}]"
        op = p.operation
        if op not in ("add", "edit", "remove") or (op != "remove" and p.info is None):
            raise vmodl.fault.InvalidArgument(msg=f"{where}: an add or edit with its info, or a remove",
                                              invalidProperty=where)
        key = p.removeKey if op == "remove" else p.info.key
        found = next((x for x in out if x.key == key), None)
        if (op == "add") == (found is not None) and not (op == "add" and key is None):
            raise vmodl.fault.InvalidArgument(msg=f"{where}: product key {key} "
                                              f"{'already exists' if found else 'not found'}", invalidProperty=where)
        if op != "add":
            out.remove(found)
        if op != "remove":
            info = vim.vApp.ProductInfo(**{f.name: getattr(p.info, f.name) for f in vim.vApp.ProductInfo._propList})
            info.key = key if key is not None else max((x.key for x in out), default=-1) + 1
            out.append(info)
    return out


def _entity_configs(vapp: VirtualApp | None, spec: Any, prop: str) -> dict[str, Any]:
    members = {e.moid for e in [*vapp.vms(), *vapp.pools]} if vapp is not None else set()
    out: dict[str, Any] = {}
    for i, ec in enumerate(spec.entityConfig or []):
        if ec.key is None or ec.key._moId not in members:
            raise vmodl.fault.InvalidArgument(msg=f"{prop}.entityConfig[{i}].key is not in this vApp",
                                              invalidProperty=f"{prop}.entityConfig[{i}].key")
        out[ec.key._moId] = ec
    return out


def _check_spec(spec: Any, prop: str) -> None:
    if spec is None:
        raise vmodl.fault.InvalidArgument(msg=f"{prop} is required", invalidProperty=prop)
    for field in ("property", "ovfSection", "ipAssignment", "eula", "ovfEnvironmentTransport"):
        if getattr(spec, field, None):
            raise vmodl.fault.NotSupported(msg=f"{prop}.{field}: the twin's vApps have no OVF properties or sections")


@method("CreateVApp")
def create_vapp(ctx: Ctx, this: Any, name: str, resSpec: Any, configSpec: Any, vmFolder: Any = None) -> Any:  # noqa: N803
    parent = _pool(this)
    _check_name(parent, name)
    folder = _folder_for(ctx, parent, vmFolder)
    if folder is not None and (dup := folder.entries.named(name)) is not None:
        raise vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=dup.ref)
    if resSpec is None:
        raise vmodl.fault.InvalidArgument(msg="resSpec is required", invalidProperty="resSpec")
    cpu = _allocation(resSpec.cpuAllocation, "cpu", complete=True)
    mem = _allocation(resSpec.memoryAllocation, "memory", complete=True)
    _check_spec(configSpec, "configSpec")
    _entity_configs(None, configSpec, "configSpec")
    products = _products(configSpec, "configSpec", [])
    world = ctx.twin.world
    vapp = VirtualApp(world, world.new_id("resgroup-v"), name, parent, parent.owner, folder)
    vapp.allocation = (cpu, mem)
    vapp.annotation = configSpec.annotation or ""
    vapp.products = products
    world.add(vapp)
    parent.pools.append(vapp)
    world.touch(parent, structural=True)
    if folder is not None:
        folder.entries.append(vapp)
        world.touch(folder, structural=True)
    _post(ctx, vim.event.ResourcePoolCreatedEvent, vapp, f"Created vApp {name} in {parent.name}", parent=_arg(parent))
    return vapp.ref


@method("UpdateVAppConfig")
def update_vapp_config(ctx: Ctx, this: Any, spec: Any) -> None:
    vapp = _vapp(this)
    _check_spec(spec, "spec")
    configs = _entity_configs(vapp, spec, "spec")
    vapp.products = _products(spec, "spec", vapp.products)
    vapp.entity_config.update(configs)
    if spec.annotation is not None:
        vapp.annotation = spec.annotation
    ctx.twin.world.touch(vapp)
    _post(ctx, vim.event.ResourcePoolReconfiguredEvent, vapp, f"Updated configuration for {vapp.name}")


@method("CreateChildVM_Task")
def create_child_vm(ctx: Ctx, this: Any, config: Any, host: Any = None) -> Any:
    vapp = _vapp(this)
    return create_in(ctx, vapp, config, vapp, host, op="VirtualApp.createVm")


def members(vapp: VirtualApp) -> list[VM]:
    """Its VMs and those of its child vApps, in start order."""
    out = list(vapp.vms())
    for child in vapp.pools:
        if isinstance(child, VirtualApp):
            out += members(child)
    return out


def _no_vm(vapp: VirtualApp) -> vim.fault.NoVmInVApp:
    return vim.fault.NoVmInVApp(msg=f"The vApp {vapp.name} contains no virtual machines")


def _invalid(vapp: VirtualApp, requested: str, existing: str) -> vim.fault.InvalidPowerState:
    return vim.fault.InvalidPowerState(msg=f"The attempted operation cannot be performed on vApp {vapp.name} in "
                                       f"its current state ({vapp.state()}).", requestedState=requested,
                                       existingState=existing)


@method("PowerOnVApp_Task")
def power_on_vapp(ctx: Ctx, this: Any) -> Any:
    vapp = _vapp(this)

    async def body(task: Task) -> None:
        await elapse(vapp.world, "power_on")
        vms = members(vapp)
        if not vms:
            raise _no_vm(vapp)
        todo = [v for v in vms if v.power_state != "poweredOn"]
        if not todo:
            raise _invalid(vapp, "poweredOff", "poweredOn")
        for vm in todo:
            require_placeable(vm.host)
            if not admit(vm.host, vm.mem.touched_mb):
                raise vim.fault.InsufficientMemoryResourcesFault(
                    msg=f"Insufficient memory resources on host {vm.host.name}", unreserved=0,
                    requested=vm.mem.touched_mb)
            record(ctx, "VmStartingEvent", vm, f"{on_message(vm)} is starting", task=task)
            power_on_now(vm)
            record(ctx, "VmPoweredOnEvent", vm, f"{on_message(vm)} is powered on", task=task)
        _touch_up(vapp)

    return submit(ctx, vapp, body, op="VirtualApp.powerOn")


@method("PowerOffVApp_Task")
def power_off_vapp(ctx: Ctx, this: Any, force: bool = False) -> Any:
    vapp = _vapp(this)

    async def body(task: Task) -> None:
        await elapse(vapp.world, "power_off")
        vms = members(vapp)
        if not vms:
            raise _no_vm(vapp)
        running = [v for v in vms if v.power_state != "poweredOff"]
        if not running:
            raise _invalid(vapp, "poweredOn", "poweredOff")
        for vm in reversed(running):  # the stop order is the start order reversed
            record(ctx, "VmStoppingEvent", vm, f"{on_message(vm)} is stopping", task=task)
            power_off_now(vm)
            record(ctx, "VmPoweredOffEvent", vm, f"{on_message(vm)} is powered off", task=task)
        _touch_up(vapp)

    return submit(ctx, vapp, body, op="VirtualApp.powerOff")


def _touch_up(vapp: VirtualApp) -> None:
    """Its state (summary.vAppState) and its parent vApps' follow their VMs."""
    node: Any = vapp
    while isinstance(node, VirtualApp):
        vapp.world.touch(node)
        node = node.parent


def destroy_vapp(ctx: Ctx, vapp: VirtualApp) -> Any:
    """Destroy_Task on a vApp: its VMs and child vApps go with it, never while one runs."""
    async def body(task: Task) -> None:
        await elapse(vapp.world, "destroy")
        running = [v for v in members(vapp) if v.power_state != "poweredOff"]
        if running:
            raise vim.fault.InvalidPowerState(
                msg=f"The vApp {vapp.name} cannot be destroyed while {running[0].name} is {running[0].power_state}",
                requestedState="poweredOff", existingState=running[0].power_state)
        remove_vapp(ctx, vapp, task)

    return submit(ctx, vapp, body, op="VirtualApp.destroy")


def remove_vapp(ctx: Ctx, vapp: VirtualApp, task: Task | None) -> None:
    from .destroy import destroy_now

    for child in list(vapp.pools):
        if isinstance(child, VirtualApp):
            remove_vapp(ctx, child, task)
    for vm in vapp.vms():
        record(ctx, "VmRemovedEvent", vm, f"Removed {vm.name} on {vm.host.name}", task=task)
        destroy_now(vm)
    if vapp.parent_folder is not None:
        vapp.parent_folder.detach(vapp)
    remove_pool(ctx, vapp, task)  # plain pools inside go to its parent
