"""Validating a spec's `deviceChange` as vCenter does, before anything is changed.

The twin changes network adapters only (an `edit` of an existing adapter: its backing, MAC and
connection); an instant clone may also edit file-backed serial and parallel ports. Each refusal
names the offending property (`spec.deviceChange[0].device.backing.deviceName`) and the index of
the device change, as InvalidDeviceSpec and its subclasses carry them:

* an edit must keep the device's class (VirtualDeviceConfigSpec edits *that* device: a
  VirtualE1000 cannot be edited into a VirtualVmxnet3) — InvalidDeviceSpec;
* an edit of a key the VM does not have — DeviceNotFound; no operation, an add/remove where only
  edits are allowed, or a file operation on an adapter — InvalidDeviceOperation;
* a standard backing without `deviceName` (required by VirtualDeviceDeviceBackingInfo; `network`
  "is not used during configuration"), a name or port group that does not exist, or a port
  group of another switch — InvalidDeviceBacking;
* a manual MAC outside 00:50:56:00:00:00-00:50:56:3F:FF:FF, or none — InvalidDeviceSpec.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..inventory import DVPortgroup, Network
from ..vm import VM
from ..world import World

NIC = vim.vm.device.VirtualEthernetCard
DVPORT = NIC.DistributedVirtualPortBackingInfo
STANDARD = NIC.NetworkBackingInfo
MANUAL_MAC_LOW, MANUAL_MAC_HIGH = 0x005056000000, 0x0050563FFFFF
ADDRESS_TYPES = ("manual", "generated", "assigned")


def _values(enum: Any) -> tuple[str, ...]:
    return tuple(enum.values)


OPERATIONS = _values(vim.vm.device.VirtualDeviceSpec.Operation)
MIGRATE_CONNECT = _values(vim.vm.device.VirtualDevice.ConnectInfo.MigrateConnectOp)


def _spec_fault(kind: type, msg: str, prop: str, index: int, **extra: Any) -> vmodl.MethodFault:
    fault: vmodl.MethodFault = kind(msg=msg, property=prop, deviceIndex=index, **extra)
    return fault


def manual_mac_ok(mac: str) -> bool:
    try:
        value = int(mac.replace(":", ""), 16)
    except ValueError:
        return False
    return len(mac) == 17 and MANUAL_MAC_LOW <= value <= MANUAL_MAC_HIGH


def network_for(world: World, backing: Any) -> Network | None:
    """The network a (validated) adapter backing names; None for no backing."""
    if isinstance(backing, DVPORT):
        mo = world.objects.get(backing.port.portgroupKey or "")
        return mo if isinstance(mo, DVPortgroup) else None
    if isinstance(backing, STANDARD):
        return next((n for n in world.instances(Network)
                     if n.name == backing.deviceName and not isinstance(n, DVPortgroup)), None)
    return None


def check_backing(world: World, backing: Any, prop: str, index: int) -> None:
    bad = vim.fault.InvalidDeviceBacking
    if isinstance(backing, DVPORT):
        port = backing.port
        pg = world.objects.get(port.portgroupKey or "")
        if not port.portgroupKey or not isinstance(pg, DVPortgroup):
            raise _spec_fault(bad, f"{prop}.port.portgroupKey: no distributed port group with key "
                                   f"'{port.portgroupKey or ''}'", f"{prop}.port.portgroupKey", index)
        if port.switchUuid != pg.switch.uuid:
            raise _spec_fault(bad, f"{prop}.port.switchUuid: '{port.switchUuid}' is not the switch of port group "
                                   f"{pg.name} ({pg.switch.uuid})", f"{prop}.port.switchUuid", index)
        return
    if isinstance(backing, STANDARD):
        if not backing.deviceName:
            raise _spec_fault(bad, f"{prop}.deviceName is required (the network's name; 'network' is not used "
                                   "during configuration)", f"{prop}.deviceName", index)
        if network_for(world, backing) is None:
            raise _spec_fault(bad, f"{prop}.deviceName: no standard network named '{backing.deviceName}'",
                              f"{prop}.deviceName", index)
        return
    if isinstance(backing, NIC.OpaqueNetworkBackingInfo):
        raise vmodl.fault.NotSupported(msg=f"{prop}: opaque (NSX) network backings are not supported by the "
                                           "forkscale twin")
    raise _spec_fault(bad, f"{prop}: a {type(backing).__name__} cannot back a network adapter", prop, index)


def _check_address(dev: Any, prop: str, index: int) -> None:
    kind = (dev.addressType or "").lower()
    if dev.addressType is not None and kind not in ADDRESS_TYPES:
        raise _spec_fault(vim.fault.InvalidDeviceSpec, f"{prop}.addressType '{dev.addressType}' is not one of "
                                                       f"{', '.join(ADDRESS_TYPES)}", f"{prop}.addressType", index)
    if kind == "manual" and not manual_mac_ok((dev.macAddress or "").lower()):
        raise _spec_fault(vim.fault.InvalidDeviceSpec,
                          f"{prop}.macAddress '{dev.macAddress or ''}' is not in the manual range "
                          "00:50:56:00:00:00-00:50:56:3F:FF:FF", f"{prop}.macAddress", index)
    conn = dev.connectable
    if conn is not None and conn.migrateConnect is not None and conn.migrateConnect not in MIGRATE_CONNECT:
        raise _spec_fault(vim.fault.InvalidDeviceSpec, f"{prop}.connectable.migrateConnect '{conn.migrateConnect}' "
                                                       f"is not one of {', '.join(MIGRATE_CONNECT)}",
                          f"{prop}.connectable.migrateConnect", index)


def _class_of(dev: Any) -> type:
    return type(dev)


def _check_nic_edit(vm: VM, dev: Any, prop: str, index: int, device_classes: dict[int, type]) -> None:
    if dev.key not in device_classes:
        raise _spec_fault(vim.fault.DeviceNotFound, f"{prop}.key: {vm.name} has no network adapter with key "
                                                    f"{dev.key}", f"{prop}.key", index)
    have, sent = device_classes[dev.key], _class_of(dev)
    if sent is not have:
        raise _spec_fault(vim.fault.InvalidDeviceSpec,
                          f"{prop}: an edit keeps the device's class; device {dev.key} is a {have.__name__}, "
                          f"not a {sent.__name__}", prop, index)
    backing = dev.backing
    if backing is not None:
        check_backing(vm.world, backing, f"{prop}.backing", index)
    _check_address(dev, prop, index)


def check_device_changes(vm: VM, changes: list[Any], path: str, *, instant: bool, disks: bool = False) -> None:
    """Refuse, naming the property, any device change the method cannot make as asked (with
    `disks`, virtual disk changes pass: forkscale.sim.ops.vdisks checks those)."""
    if not changes:
        return
    classes = {n.key: n.device_class() for n in vm.nics}
    edited: set[int] = set()
    for i, ch in enumerate(changes or []):
        prop = f"{path}[{i}]"
        dev = ch.device
        if disks and isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        if not isinstance(dev, NIC):
            file_port = isinstance(dev, (vim.vm.device.VirtualSerialPort, vim.vm.device.VirtualParallelPort))
            if instant and file_port and ch.operation == "edit":
                continue
            if instant:
                raise vmodl.fault.InvalidArgument(
                    msg=f"{prop}: an instant clone allows edits of network adapters and file-backed serial and "
                        "parallel ports only", invalidProperty=prop)
            raise vmodl.fault.NotSupported(msg=f"{prop}: the forkscale twin changes network adapters only, "
                                               f"not a {type(dev).__name__}")
        if ch.operation != "edit":
            if instant:  # InstantCloneSpec: "the only allowed device changes are edits"
                raise vmodl.fault.InvalidArgument(msg=f"{prop}.operation: an instant clone only edits existing "
                                                      "network adapters", invalidProperty=f"{prop}.operation")
            if ch.operation not in ("add", "remove"):
                raise _spec_fault(vim.fault.InvalidDeviceOperation,
                                  f"{prop}.operation: '{ch.operation or ''}' — only an edit of an existing "
                                  "network adapter is allowed here", f"{prop}.operation", i,
                                  badOp=ch.operation if ch.operation in OPERATIONS else None)
            raise vmodl.fault.NotSupported(msg=f"{prop}: the forkscale twin edits network adapters; it does not "
                                               f"{ch.operation} them")
        if ch.fileOperation is not None:
            raise _spec_fault(vim.fault.InvalidDeviceOperation, f"{prop}.fileOperation: a network adapter has no "
                                                                "files", f"{prop}.fileOperation", i,
                              badFileOp=ch.fileOperation)
        if dev.key in edited:
            raise _spec_fault(vim.fault.InvalidDeviceSpec, f"{prop}: device {dev.key} is edited twice",
                              f"{prop}.device.key", i)
        edited.add(dev.key)
        _check_nic_edit(vm, dev, f"{prop}.device", i, classes)
