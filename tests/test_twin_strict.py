"""Strict where vCenter is strict: each malformed spec below is refused with the fault vCenter
documents for it, naming the offending property, and changes nothing; the well-formed
counterparts are applied — by ReconfigVM_Task and by CloneVM_Task alike (vCenter applies a clone's
`spec.config` as a reconfiguration of the new VM).

Each row cites where the reference says so: the method's "Faults" list (vSphere Web Services API,
vim.VirtualMachine / vim.vm.check.ProvisioningChecker), the data object's field description, or
the fault's description.
"""

from __future__ import annotations

import copy
import ssl
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from forkscale.sim import SimHandle, start_in_thread
from forkscale.sim.builder import DEFAULT_WORLD
from tests.fixtures.twin import connect, find, find_vm

D = vim.vm.device
NIC_BACKING = D.VirtualEthernetCard.NetworkBackingInfo
DV_BACKING = D.VirtualEthernetCard.DistributedVirtualPortBackingInfo
LONG = "x" * 81


@pytest.fixture(scope="module")
def strict_twin(tmp_path_factory) -> Iterator[SimHandle]:
    """The default world plus a running VM whose adapter is an E1000 (edits must keep that class)."""
    world = copy.deepcopy(DEFAULT_WORLD)
    world["vms"].append({**world["vms"][0], "name": "src-e1000", "host": "esx-02", "nic_type": "e1000",
                         "snapshots": []})
    path = tmp_path_factory.mktemp("world") / "world.yaml"
    path.write_text(yaml.safe_dump({"vms": world["vms"]}))
    handle = start_in_thread(world=str(path), time_scale=0.001, state_dir=str(tmp_path_factory.mktemp("sim")))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def ssi(strict_twin):
    from pyVim.connect import Disconnect

    service = connect(strict_twin)
    try:
        yield service
    finally:
        Disconnect(service)


@dataclass
class World:
    si: Any
    linux: Any  # src-linux: vmxnet3 on "VM Network", powered on, snapshot "base"
    e1000: Any  # src-e1000: an E1000 adapter
    win: Any  # src-win: on the distributed port group

    def nic(self, vm: Any) -> Any:
        return next(d for d in vm.config.hardware.device if isinstance(d, D.VirtualEthernetCard))

    def edit(self, vm: Any | None = None, cls: type | None = None, op: str | None = "edit", **fields: Any) -> Any:
        """A device change editing `vm`'s adapter (default: src-linux's, as the class it is)."""
        nic = self.nic(vm or self.linux)
        return D.VirtualDeviceSpec(operation=op, device=(cls or type(nic))(key=nic.key, **fields))

    def clone(self, name: str = "strict-clone", **spec: Any) -> Any:
        spec.setdefault("location", vim.vm.RelocateSpec())
        return self.linux.CloneVM_Task(self.linux.parent, name, vim.vm.CloneSpec(powerOn=False, **spec))

    def instant(self, name: str = "strict-instant", **spec: Any) -> Any:
        spec.setdefault("location", vim.vm.RelocateSpec())
        return self.linux.InstantClone_Task(vim.vm.InstantCloneSpec(name=name, **spec))

    def reconfigure(self, vm: Any | None = None, **spec: Any) -> Any:
        return (vm or self.linux).ReconfigVM_Task(vim.vm.ConfigSpec(**spec))

    def create(self, **spec: Any) -> Any:
        spec.setdefault("name", "strict-new")
        spec.setdefault("files", vim.vm.FileInfo(vmPathName="[ds-ssd]"))
        return self.linux.parent.CreateVM_Task(vim.vm.ConfigSpec(guestId="otherLinux64Guest", **spec),
                                               pool=self.linux.resourcePool)


@pytest.fixture(scope="module")
def w(ssi) -> World:
    return World(ssi, find_vm(ssi, "src-linux"), find_vm(ssi, "src-e1000"), find_vm(ssi, "src-win"))


@dataclass
class Row:
    id: str
    call: Callable[[World], Any]
    fault: type
    prop: str  # the property the fault names ("" when the fault has no property to name)


def _dvpg_backing(w: World, key: str | None = None, switch: str | None = None) -> Any:
    pg = find(w.si, vim.dvs.DistributedVirtualPortgroup, "dvpg-vdi")
    return DV_BACKING(port=vim.dvs.PortConnection(portgroupKey=key or pg.key,
                                                  switchUuid=switch or pg.config.distributedVirtualSwitch.uuid))


def _vm_network(w: World) -> Any:
    return find(w.si, vim.Network, "VM Network")


ROWS = [
    # ReconfigVM_Task(spec: VirtualMachineConfigSpec) ------------------------------------------
    # ConfigSpec.changeVersion: changes apply only if it matches the current one; ReconfigVM_Task throws ConcurrentAccess
    Row("reconfig.stale_change_version", lambda w: w.reconfigure(changeVersion="0", annotation="x"),
        vim.fault.ConcurrentAccess, ""),
    # ReconfigVM_Task throws InvalidName for a name it cannot take: entity names are at most 80 characters
    Row("reconfig.name_too_long", lambda w: w.reconfigure(name=LONG), vim.fault.InvalidName, ""),
    # ConfigSpec.memoryMB: vSphere sizes VM memory in multiples of 4 MB; InvalidArgument (RuntimeFault) names it
    Row("reconfig.memory_not_multiple_of_4", lambda w: w.reconfigure(memoryMB=1023), vmodl.fault.InvalidArgument,
        "spec.memoryMB"),
    Row("reconfig.memory_zero", lambda w: w.reconfigure(memoryMB=0), vmodl.fault.InvalidArgument, "spec.memoryMB"),
    # MemorySizeNotSupported (a VmConfigFault, which ReconfigVM_Task throws): beyond what the host supports
    Row("reconfig.memory_beyond_host", lambda w: w.reconfigure(memoryMB=256 * 1024),
        vim.fault.MemorySizeNotSupported, ""),
    # ConfigSpec.numCPUs: a positive number of virtual processors
    Row("reconfig.zero_cpus", lambda w: w.reconfigure(numCPUs=0), vmodl.fault.InvalidArgument, "spec.numCPUs"),
    # NotEnoughCpus (VirtualHardwareCompatibilityIssue < VmConfigFault): more vCPUs than the host has logical CPUs
    Row("reconfig.cpus_beyond_host", lambda w: w.reconfigure(numCPUs=128), vim.fault.NotEnoughCpus, ""),
    # VirtualHardware.numCoresPerSocket distributes the vCPUs among sockets, so it divides numCPUs
    Row("reconfig.cores_do_not_divide", lambda w: w.reconfigure(numCPUs=4, numCoresPerSocket=3),
        vmodl.fault.InvalidArgument, "spec.numCoresPerSocket"),
    # UnsupportedGuest (InvalidVmConfig < VmConfigFault): a guestId outside VirtualMachineGuestOsIdentifier
    Row("reconfig.unknown_guest_id", lambda w: w.reconfigure(guestId="beos5Guest"), vim.fault.UnsupportedGuest,
        "spec.guestId"),
    # ConfigSpec.firmware: one of GuestOsDescriptorFirmwareType (bios, efi, csm)
    Row("reconfig.bad_firmware", lambda w: w.reconfigure(firmware="uefi"), vmodl.fault.InvalidArgument,
        "spec.firmware"),
    # ConfigSpec.uuid: a 128-bit SMBIOS UUID "12345678-abcd-1234-cdef-123456789abc"
    Row("reconfig.bad_uuid", lambda w: w.reconfigure(uuid="not-a-uuid"), vmodl.fault.InvalidArgument, "spec.uuid"),
    # ResourceAllocationInfo.reservation: the amount guaranteed available, never negative
    Row("reconfig.negative_reservation", lambda w: w.reconfigure(
        cpuAllocation=vim.ResourceAllocationInfo(reservation=-5)), vmodl.fault.InvalidArgument,
        "spec.cpuAllocation.reservation"),
    # ResourceAllocationInfo.limit: -1 (unlimited) or at least the reservation
    Row("reconfig.limit_below_reservation", lambda w: w.reconfigure(
        memoryAllocation=vim.ResourceAllocationInfo(reservation=200, limit=100)), vmodl.fault.InvalidArgument,
        "spec.memoryAllocation.limit"),
    # OptionValue.key is required
    Row("reconfig.extra_config_without_key", lambda w: w.reconfigure(
        extraConfig=[vim.option.OptionValue(key="", value="v")]), vmodl.fault.InvalidArgument,
        "spec.extraConfig[0].key"),
    # a ConfigSpec part the twin does not model: NotSupported naming it, never silently dropped
    Row("reconfig.vapp_config_not_modelled", lambda w: w.reconfigure(
        vAppConfig=vim.vApp.VmConfigSpec(installBootRequired=True)), vmodl.fault.NotSupported, "spec.vAppConfig"),
    Row("reconfig.cdrom_not_modelled", lambda w: w.reconfigure(deviceChange=[D.VirtualDeviceSpec(
        operation="add", device=D.VirtualCdrom(key=-1, controllerKey=200))]), vmodl.fault.NotSupported,
        "spec.deviceChange[0]"),
    # InvalidDeviceSpec: a virtual disk can grow, never shrink (VirtualDisk.capacityInKB)
    Row("reconfig.disk_shrink", lambda w: w.reconfigure(deviceChange=[D.VirtualDeviceSpec(
        operation="edit", device=D.VirtualDisk(key=2000, capacityInKB=1))]), vim.fault.InvalidDeviceSpec,
        "spec.deviceChange[0].device.capacityInKB"),
    # DeviceNotFound (InvalidDeviceSpec): the edited device is not on the VM
    Row("reconfig.edit_unknown_key", lambda w: w.reconfigure(deviceChange=[D.VirtualDeviceSpec(
        operation="edit", device=D.VirtualVmxnet3(key=4999))]), vim.fault.DeviceNotFound,
        "spec.deviceChange[0].device.key"),
    # InvalidDeviceSpec: an edit edits *that* device; an E1000 is not edited into a vmxnet3
    Row("reconfig.edit_changes_class", lambda w: w.reconfigure(w.e1000, deviceChange=[
        w.edit(w.e1000, cls=D.VirtualVmxnet3)]), vim.fault.InvalidDeviceSpec, "spec.deviceChange[0].device"),
    # InvalidDeviceOperation (InvalidDeviceSpec): "an invalid operation is attempted on the given device"
    Row("reconfig.edit_without_operation", lambda w: w.reconfigure(deviceChange=[w.edit(op=None)]),
        vim.fault.InvalidDeviceOperation, "spec.deviceChange[0].operation"),
    Row("reconfig.file_operation_on_nic", lambda w: w.reconfigure(deviceChange=[D.VirtualDeviceSpec(
        operation="edit", fileOperation="create", device=D.VirtualVmxnet3(key=4000))]),
        vim.fault.InvalidDeviceOperation, "spec.deviceChange[0].fileOperation"),
    Row("reconfig.same_device_twice", lambda w: w.reconfigure(deviceChange=[w.edit(), w.edit()]),
        vim.fault.InvalidDeviceSpec, "spec.deviceChange[1].device.key"),
    # VirtualDeviceDeviceBackingInfo.deviceName is Required; VirtualEthernetCardNetworkBackingInfo.network
    # "is not used during configuration" — InvalidDeviceBacking (InvalidDeviceSpec) names deviceName
    Row("reconfig.backing_without_device_name", lambda w: w.reconfigure(deviceChange=[w.edit(
        backing=NIC_BACKING(network=_vm_network(w)))]), vim.fault.InvalidDeviceBacking,
        "spec.deviceChange[0].device.backing.deviceName"),
    Row("reconfig.backing_unknown_network", lambda w: w.reconfigure(deviceChange=[w.edit(
        backing=NIC_BACKING(deviceName="no-such-net"))]), vim.fault.InvalidDeviceBacking,
        "spec.deviceChange[0].device.backing.deviceName"),
    # DistributedVirtualSwitchPortConnection: portgroupKey and switchUuid name a port group of that switch
    Row("reconfig.dvport_unknown_portgroup", lambda w: w.reconfigure(deviceChange=[w.edit(
        backing=_dvpg_backing(w, key="dvportgroup-404"))]), vim.fault.InvalidDeviceBacking,
        "spec.deviceChange[0].device.backing.port.portgroupKey"),
    Row("reconfig.dvport_wrong_switch", lambda w: w.reconfigure(deviceChange=[w.edit(
        backing=_dvpg_backing(w, switch="50 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00"))]),
        vim.fault.InvalidDeviceBacking, "spec.deviceChange[0].device.backing.port.switchUuid"),
    # VirtualEthernetCard.macAddress with addressType manual: in 00:50:56:00:00:00-00:50:56:3F:FF:FF
    Row("reconfig.manual_mac_out_of_range", lambda w: w.reconfigure(deviceChange=[w.edit(
        addressType="manual", macAddress="00:50:56:80:00:01")]), vim.fault.InvalidDeviceSpec,
        "spec.deviceChange[0].device.macAddress"),
    # VirtualEthernetCard.addressType: manual, generated or assigned
    Row("reconfig.bad_address_type", lambda w: w.reconfigure(deviceChange=[w.edit(addressType="static")]),
        vim.fault.InvalidDeviceSpec, "spec.deviceChange[0].device.addressType"),
    # VirtualDeviceConnectInfo.migrateConnect: one of VirtualDeviceConnectInfoMigrateConnectOp
    Row("reconfig.bad_migrate_connect", lambda w: w.reconfigure(deviceChange=[w.edit(
        connectable=D.VirtualDevice.ConnectInfo(migrateConnect="sometimes"))]), vim.fault.InvalidDeviceSpec,
        "spec.deviceChange[0].device.connectable.migrateConnect"),
    # InvalidDeviceBacking (InvalidDeviceSpec): a backing this device cannot have (a disk backing on an adapter)
    Row("reconfig.disk_backing_on_nic", lambda w: w.reconfigure(deviceChange=[w.edit(
        backing=D.VirtualDisk.FlatVer2BackingInfo(fileName="[ds-ssd] x.vmdk", diskMode="persistent"))]),
        vim.fault.InvalidDeviceBacking, "spec.deviceChange[0].device.backing"),
    # InvalidPowerState (ReconfigVM_Task): vCPUs changed on a running VM without CPU hot add
    Row("reconfig.cpus_while_running", lambda w: w.reconfigure(numCPUs=4), vim.fault.InvalidPowerState, ""),
    Row("reconfig.hot_add_toggled_while_running", lambda w: w.reconfigure(cpuHotAddEnabled=True),
        vim.fault.InvalidPowerState, ""),
    # CloneVM_Task(folder, name, spec: VirtualMachineCloneSpec) ---------------------------------
    # CloneVM_Task.name is the new VM's name (required); InvalidArgument is a RuntimeFault; InvalidName as above
    Row("clone.empty_name", lambda w: w.clone(name=""), vmodl.fault.InvalidArgument, "name"),
    Row("clone.name_too_long", lambda w: w.clone(name=LONG), vim.fault.InvalidName, ""),
    # CloneSpec.customization: the twin has no guest customization — refused, not dropped
    Row("clone.customization_not_modelled", lambda w: w.clone(customization=vim.vm.customization.Specification(
        identity=vim.vm.customization.LinuxPrep(hostName=vim.vm.customization.FixedName(name="h"), domain="d"),
        globalIPSettings=vim.vm.customization.GlobalIPSettings(), nicSettingMap=[])),
        vmodl.fault.NotSupported, "spec.customization"),
    Row("clone.memory_state_not_modelled", lambda w: w.clone(memory=True), vmodl.fault.NotSupported, "spec.memory"),
    # CloneSpec.snapshot: the snapshot of the source VM the clone is based on (CloneVM_Task throws InvalidArgument)
    Row("clone.snapshot_of_another_vm", lambda w: w.clone(snapshot=w.win.snapshot.rootSnapshotList[0].snapshot),
        vmodl.fault.InvalidArgument, "spec.snapshot"),
    # RelocateSpec.diskMoveType: one of VirtualMachineRelocateDiskMoveOptions
    Row("clone.bad_disk_move_type", lambda w: w.clone(location=vim.vm.RelocateSpec(diskMoveType="copyEverything")),
        vmodl.fault.InvalidArgument, "spec.location.diskMoveType"),
    # RelocateSpec.disk[].diskId: the device key of one of the VM's disks
    Row("clone.disk_locator_unknown_disk", lambda w: w.clone(location=vim.vm.RelocateSpec(disk=[
        vim.vm.RelocateSpec.DiskLocator(diskId=2999, datastore=find(w.si, vim.Datastore, "ds-hdd"))])),
        vmodl.fault.InvalidArgument, "spec.location.disk[0].diskId"),
    Row("clone.profile_not_modelled", lambda w: w.clone(location=vim.vm.RelocateSpec(profile=[
        vim.vm.DefinedProfileSpec(profileId="gold")])), vmodl.fault.NotSupported, "spec.location.profile"),
    # spec.config is applied to the clone as ReconfigVM_Task applies it: the same refusals
    Row("clone.config_disk_change_not_modelled", lambda w: w.clone(config=vim.vm.ConfigSpec(deviceChange=[
        D.VirtualDeviceSpec(operation="add", device=D.VirtualDisk(key=-1, capacityInKB=1))])),
        vmodl.fault.NotSupported, "spec.config.deviceChange[0]"),
    Row("clone.config_cpus_beyond_host", lambda w: w.clone(config=vim.vm.ConfigSpec(numCPUs=128)),
        vim.fault.NotEnoughCpus, ""),
    Row("clone.location_backing_without_device_name", lambda w: w.clone(location=vim.vm.RelocateSpec(
        deviceChange=[w.edit(backing=NIC_BACKING(network=_vm_network(w)))])), vim.fault.InvalidDeviceBacking,
        "spec.location.deviceChange[0].device.backing.deviceName"),
    Row("clone.config_edit_changes_class", lambda w: w.clone(config=vim.vm.ConfigSpec(deviceChange=[
        w.edit(cls=D.VirtualE1000)])), vim.fault.InvalidDeviceSpec, "spec.config.deviceChange[0].device"),
    # RelocateSpec.diskMoveType createNewChildDiskBacking: "only valid when cloning from a snapshot"
    Row("clone.linked_without_snapshot", lambda w: w.clone(location=vim.vm.RelocateSpec(
        diskMoveType="createNewChildDiskBacking")), vmodl.fault.InvalidArgument, "spec.snapshot"),
    # Folder.CreateVM_Task(config: VirtualMachineConfigSpec): the same rules for a new VM -----------
    Row("create.name_too_long", lambda w: w.create(name=LONG), vim.fault.InvalidName, ""),
    Row("create.memory_not_multiple_of_4", lambda w: w.create(memoryMB=1023), vmodl.fault.InvalidArgument,
        "config.memoryMB"),
    Row("create.nic_backing_without_device_name", lambda w: w.create(deviceChange=[D.VirtualDeviceSpec(
        operation="add", device=D.VirtualVmxnet3(key=-1, backing=NIC_BACKING(network=_vm_network(w))))]),
        vim.fault.InvalidDeviceBacking, "config.deviceChange[0].device.backing.deviceName"),
    Row("create.vapp_config_not_modelled", lambda w: w.create(vAppConfig=vim.vApp.VmConfigSpec(
        installBootRequired=True)), vmodl.fault.NotSupported, "config.vAppConfig"),
    # InstantClone_Task(spec: VirtualMachineInstantCloneSpec) -----------------------------------
    Row("instant.name_too_long", lambda w: w.instant(name=LONG), vim.fault.InvalidName, ""),
    # InstantCloneSpec.biosUuid: "128-bit SMBIOS UUID ... in 12345678-abcd-1234-cdef-123456789abc format"
    Row("instant.bad_bios_uuid", lambda w: w.instant(biosUuid="xyz"), vmodl.fault.InvalidArgument, "spec.biosUuid"),
    Row("instant.config_without_key", lambda w: w.instant(config=[vim.option.OptionValue(key="", value="1")]),
        vmodl.fault.InvalidArgument, "spec.config[0].key"),
    # InstantCloneSpec.location: folder, datastore, pool and device edits; "all other settings are NOT supported"
    Row("instant.disk_move_type_not_supported", lambda w: w.instant(location=vim.vm.RelocateSpec(
        diskMoveType="moveAllDiskBackingsAndConsolidate")), vmodl.fault.NotSupported, "spec.location.diskMoveType"),
    # "The only allowed device changes are edits of VirtualEthernetCard and filebacked Serial/Parallel ports"
    Row("instant.nic_add", lambda w: w.instant(location=vim.vm.RelocateSpec(deviceChange=[
        D.VirtualDeviceSpec(operation="add", device=D.VirtualVmxnet3(key=-1))])), vmodl.fault.InvalidArgument,
        "spec.location.deviceChange[0].operation"),
    Row("instant.disk_edit", lambda w: w.instant(location=vim.vm.RelocateSpec(deviceChange=[
        D.VirtualDeviceSpec(operation="edit", device=D.VirtualDisk(key=2000))])), vmodl.fault.InvalidArgument,
        "spec.location.deviceChange[0]"),
    Row("instant.edit_changes_class", lambda w: w.instant(location=vim.vm.RelocateSpec(deviceChange=[
        w.edit(cls=D.VirtualE1000)])), vim.fault.InvalidDeviceSpec, "spec.location.deviceChange[0].device"),
    Row("instant.backing_without_device_name", lambda w: w.instant(location=vim.vm.RelocateSpec(deviceChange=[
        w.edit(backing=NIC_BACKING(network=_vm_network(w)))])), vim.fault.InvalidDeviceBacking,
        "spec.location.deviceChange[0].device.backing.deviceName"),
    # an instant clone runs on its source's host
    Row("instant.other_host", lambda w: w.instant(location=vim.vm.RelocateSpec(
        host=find(w.si, vim.HostSystem, "esx-04"))), vmodl.fault.InvalidArgument, "location.host"),
]


def outcome(si: Any, result: Any) -> vmodl.MethodFault | None:
    """The fault a call answered, at once or as its task's error."""
    if isinstance(result, vim.Task):
        try:
            WaitForTask(result, si=si)
        except vmodl.MethodFault as fault:
            return fault
    return None


def named(fault: Any) -> str:
    return str(getattr(fault, "invalidProperty", None) or getattr(fault, "property", None) or fault.msg)


def test_the_table_has_at_least_30_rows():
    assert len(ROWS) >= 30 and len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_malformed_spec_is_refused_as_vcenter_does(w, row):
    before = (w.linux.config.changeVersion, sorted(v.name for v in w.linux.parent.childEntity))
    try:
        fault = outcome(w.si, row.call(w))
    except vmodl.MethodFault as raised:
        fault = raised
    assert fault is not None, f"{row.id}: accepted"
    assert type(fault) is row.fault, f"{row.id}: {type(fault).__name__}: {fault.msg}"
    assert row.prop in named(fault), f"{row.id}: names {named(fault)!r}, not {row.prop!r}"
    assert "\n" not in fault.msg
    assert (w.linux.config.changeVersion, sorted(v.name for v in w.linux.parent.childEntity)) == before


def test_a_spec_missing_a_required_property_is_an_invalid_request(strict_twin, w):
    """Raw SOAP without InstantCloneSpec.location (required): vCenter's deserializer answers InvalidRequest."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv='
            f'"http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:vim25"><soapenv:Body><InstantClone_Task>'
            f'<_this type="VirtualMachine">{w.linux._moId}</_this><spec><name>raw</name></spec>'
            f'</InstantClone_Task></soapenv:Body></soapenv:Envelope>').encode()
    cookie = w.si._stub.cookie.split(";")[0]
    req = urllib.request.Request(strict_twin.url, data=body, headers={
        "Content-Type": "text/xml", "SOAPAction": "urn:vim25/8.0.3.0", "Cookie": cookie})
    ctx = ssl.create_default_context(cafile=strict_twin.ca_file)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx)
    text = err.value.read().decode()
    assert "InvalidRequest" in text and "location" in text


# what is well formed is applied, by a clone as by a reconfiguration ------------------------------
def test_clone_applies_its_config_and_location_edits_like_reconfigure(w):
    isolated = find(w.si, vim.Network, "isolated")
    spec = vim.vm.CloneSpec(powerOn=False, location=vim.vm.RelocateSpec(deviceChange=[w.edit(
        backing=NIC_BACKING(deviceName="isolated"))]), config=vim.vm.ConfigSpec(
        annotation="made by a clone", numCPUs=4, numCoresPerSocket=2, memoryMB=2048,
        tools=vim.vm.ToolsConfigInfo(syncTimeWithHost=True), cpuHotAddEnabled=True))
    task = w.linux.CloneVM_Task(w.linux.parent, "applied", spec)
    WaitForTask(task, si=w.si)
    clone = task.info.result
    cfg = clone.config
    assert cfg.annotation == "made by a clone" and clone.summary.config.annotation == "made by a clone"
    assert (cfg.hardware.numCPU, cfg.hardware.numCoresPerSocket, cfg.hardware.memoryMB) == (4, 2, 2048)
    assert cfg.tools.syncTimeWithHost is True and cfg.tools.toolsVersion  # merged over what was there
    assert cfg.cpuHotAddEnabled is True and clone.network == [isolated]
    assert type(w.nic(clone)) is type(w.nic(w.linux))  # an edit keeps the class
    # the same ConfigSpec through ReconfigVM_Task gives the same configuration
    WaitForTask(clone.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="again", changeVersion=cfg.changeVersion,
                                                        memoryMB=4096)), si=w.si)
    assert (clone.config.annotation, clone.config.hardware.memoryMB) == ("again", 4096)
    WaitForTask(clone.PowerOnVM_Task(), si=w.si)  # hot add on: a running VM may grow its vCPUs
    WaitForTask(clone.ReconfigVM_Task(vim.vm.ConfigSpec(numCPUs=6, numCoresPerSocket=2)), si=w.si)
    assert clone.config.hardware.numCPU == 6


def test_edits_that_keep_the_class_and_name_the_network_are_applied(w):
    nic = w.nic(w.e1000)
    WaitForTask(w.e1000.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[w.edit(
        w.e1000, backing=NIC_BACKING(deviceName="isolated"), addressType="manual",
        macAddress="00:50:56:00:12:34")])), si=w.si)
    after = w.nic(w.e1000)
    assert type(after) is D.VirtualE1000 and after.key == nic.key and after.macAddress == "00:50:56:00:12:34"
    assert after.backing.deviceName == "isolated"

