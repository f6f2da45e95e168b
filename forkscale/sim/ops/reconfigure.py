"""Reconfiguring the twin's VMs: extraConfig and network adapter edits (clones apply the same edits)."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record
from ..inventory import DVPortgroup, Network
from ..tasks import Task
from ..vm import VM
from ..world import World
from .common import as_vm, elapse, invalid_power, submit
from .vdisks import CONTROLLER_KEY, apply_disk_changes, check_disk_changes, faults_for_vm, split_changes

MANUAL_MAC_LOW, MANUAL_MAC_HIGH = 0x005056000000, 0x0050563FFFFF


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
    vm = as_vm(this)
    nic_changes, disk_changes, controllers = split_changes(spec, "ReconfigVM_Task")
    if controllers:
        raise vmodl.fault.NotSupported(msg="ReconfigVM_Task: the twin's VMs have one SCSI controller; "
                                           "adding another is not supported")
    check_nic_edits(vm, nic_changes, instant=False)
    check_disk_changes(vm, disk_changes, {CONTROLLER_KEY})

    async def body(task: Task) -> None:
        await elapse(vm.world, "reconfigure")
        if (spec.memoryMB or spec.numCPUs) and vm.power_state == "poweredOn":
            raise invalid_power(vm, "poweredOff")
        if disk_changes:
            faults_for_vm(vm)
        apply_disk_changes(vm, disk_changes)
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

    return submit(ctx, vm, body, op="VirtualMachine.reconfigure")
