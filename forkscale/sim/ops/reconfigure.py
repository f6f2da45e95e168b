"""Reconfiguring the twin's VMs (ReconfigVM_Task), and the ConfigSpec changes clones apply the same way.

Specs are validated before the task is queued (forkscale.sim.ops.validate); what depends on the
VM's state when the task runs (its power state, a changeVersion that moved meanwhile, a MAC taken
by another VM since) fails the task.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record
from ..tasks import Task
from ..vm import VM
from .common import as_vm, elapse, invalid_power, submit
from .devices import NIC, network_for
from .settings import apply_settings
from .validate import check_config
from .vdisks import CONTROLLER_KEY, apply_disk_changes, check_disk_changes, faults_for_vm, split_changes


def apply_extra(vm: VM, options: list[Any]) -> None:
    for opt in options or []:
        if opt.value is None or opt.value == "":
            vm.extra.pop(opt.key, None)
        else:
            vm.extra[opt.key] = str(opt.value)


def apply_nic_edits(vm: VM, changes: list[Any], *, instant: bool) -> None:
    """Apply (validated) NIC edits to `vm` (already a copy of the source's NICs). MAC collisions fail."""
    world = vm.world
    for ch in changes or []:
        dev = ch.device
        if not isinstance(dev, NIC):
            continue
        nic = next(n for n in vm.nics if n.key == dev.key)
        net = network_for(world, dev.backing) if dev.backing is not None else None
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


def check_running(vm: VM, spec: Any) -> None:
    """What a powered-on VM refuses: vCPUs or memory changed without hot-plug, hot-plug toggled."""
    if vm.power_state != "poweredOn":
        return
    hot = vm.settings
    cpus, mem = spec.numCPUs, spec.memoryMB
    cpu_ok = cpus is None or cpus == vm.num_cpu or (
        cpus > vm.num_cpu and hot.get("cpuHotAddEnabled")) or (cpus < vm.num_cpu and hot.get("cpuHotRemoveEnabled"))
    mem_ok = mem is None or mem == vm.memory_mb or (mem > vm.memory_mb and hot.get("memoryHotAddEnabled"))
    toggles = any(getattr(spec, f) is not None and getattr(spec, f) != hot.get(f, False)
                  for f in ("cpuHotAddEnabled", "cpuHotRemoveEnabled", "memoryHotAddEnabled"))
    if not (cpu_ok and mem_ok) or toggles:
        raise invalid_power(vm, "poweredOff")


def apply_config(vm: VM, spec: Any, *, instant: bool = False) -> None:
    """Apply a validated ConfigSpec to `vm` (the caller marks it changed)."""
    apply_extra(vm, spec.extraConfig)
    apply_nic_edits(vm, spec.deviceChange, instant=instant)
    if spec.memoryMB:
        vm.memory_mb = int(spec.memoryMB)
    if spec.numCPUs:
        vm.num_cpu = int(spec.numCPUs)
    if spec.annotation is not None:
        vm.annotation = spec.annotation
    if spec.name:
        vm.name = spec.name
    apply_settings(vm, spec)


@method("ReconfigVM_Task")
def reconfigure(ctx: Ctx, this: Any, spec: Any) -> Any:
    vm = as_vm(this)
    _, disk_changes, controllers = split_changes(spec, "ReconfigVM_Task")
    if controllers:
        raise vmodl.fault.NotSupported(msg="ReconfigVM_Task: the twin's VMs have one SCSI controller; "
                                           "adding another is not supported")
    check_config(vm, spec, "spec", disks=True)
    check_disk_changes(vm, disk_changes, {CONTROLLER_KEY})

    async def body(task: Task) -> None:
        await elapse(vm.world, "reconfigure")
        if spec.changeVersion is not None and spec.changeVersion != str(vm.change):
            raise vim.fault.ConcurrentAccess(msg=f"spec.changeVersion '{spec.changeVersion}' is not the VM's "
                                                 f"({vm.change}): its configuration changed since it was read")
        check_running(vm, spec)
        if disk_changes:
            faults_for_vm(vm)
        apply_disk_changes(vm, disk_changes)
        apply_config(vm, spec)
        vm.changed()
        record(ctx, "VmReconfiguredEvent", vm, f"Reconfigured {vm.name} on {vm.host.name}", task=task,
               configSpec=spec)

    return submit(ctx, vm, body, op="VirtualMachine.reconfigure")
