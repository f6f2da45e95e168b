"""VMs leaving and joining the inventory on the twin: UnregisterVM keeps the files (browser and
`/folder` still see them), RegisterVM_Task brings the VM back as a new object with its disks,
snapshots and data, CreateVM_Task builds one from a ConfigSpec."""

from __future__ import annotations

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find, find_vm
from tests.twin_helpers import chain, ds, events_of, fault_of, free, host, linked_clone, quiet_sources, run

B = vim.host.DatastoreBrowser
Dev = vim.vm.device
VMX = "[ds-ssd] ur-1/ur-1.vmx"


def pool(si):
    return find(si, vim.ResourcePool, "Resources")


def test_unregister_keeps_the_files_and_register_brings_the_vm_back(twin, si):
    quiet_sources(si)
    vm = linked_clone(si, "ur-1")
    snap = run(si, vm.CreateSnapshot_Task("s1", "", False, False))
    twin.admin("disk_write", vm="ur-1", path="/srv/data", data="kept")
    disk_chain, mac = chain(vm), vm.config.hardware.device[-1].macAddress
    ssd, folder, moid = free(si, "ds-ssd"), vm.parent, vm._moId
    vm.UnregisterVM()
    assert find_vm_or_none(si, "ur-1") is None
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        snap.RenameSnapshot(name="gone")
    assert free(si, "ds-ssd") == ssd  # nothing deleted
    listed = run(si, ds(si, "ds-ssd").browser.SearchDatastore_Task("[ds-ssd] ur-1", B.SearchSpec(
        query=[B.VmConfigQuery()])))
    assert [f.path for f in listed.file] == ["ur-1.vmx"]
    back = run(si, folder.RegisterVM_Task(path=VMX, name="ur-1b", asTemplate=False, pool=pool(si),
                                          host=host(si, "esx-02")))
    assert back._moId != moid and back.name == "ur-1b" and back.runtime.powerState == "poweredOff"
    assert back.summary.config.vmPathName == VMX and back.runtime.host == host(si, "esx-02")
    assert chain(back) == disk_chain and back.snapshot.rootSnapshotList[0].name == "s1"
    assert back.config.hardware.device[-1].macAddress == mac
    assert twin.admin("disk_read", vm="ur-1b", path="/srv/data")["data"] == "kept"
    assert events_of(si, back) == ["VmRegisteredEvent"]
    again = fault_of(si, folder.RegisterVM_Task(path=VMX, asTemplate=False, pool=pool(si)))
    assert isinstance(again, vim.fault.AlreadyExists)


def find_vm_or_none(si, name):
    try:
        return find_vm(si, name)
    except StopIteration:
        return None


def test_register_faults(si):
    folder = find_vm(si, "src-linux").parent
    missing = fault_of(si, folder.RegisterVM_Task(path="[ds-ssd] none/none.vmx", asTemplate=False, pool=pool(si)))
    assert isinstance(missing, vim.fault.NotFound)
    with pytest.raises(vmodl.fault.InvalidArgument):
        folder.RegisterVM_Task(path=VMX, asTemplate=False)  # a VM needs a pool
    with pytest.raises(vim.fault.InvalidDatastorePath):
        folder.RegisterVM_Task(path="ur-1.vmx", asTemplate=False, pool=pool(si))
    running = find_vm(si, "src-linux")
    with pytest.raises(vim.fault.InvalidPowerState):
        running.UnregisterVM()


def test_deleting_an_unregistered_vms_directory_frees_its_space(si):
    vm = linked_clone(si, "ur-2")
    run(si, vm.PromoteDisks_Task(unlink=True))
    ssd = free(si, "ds-ssd")
    vm.UnregisterVM()
    dc = si.content.rootFolder.childEntity[0]
    run(si, si.content.fileManager.DeleteDatastoreFile_Task("[ds-ssd] ur-2", dc))
    assert free(si, "ds-ssd") > ssd + 10 * 1024**3 - 1
    gone = fault_of(si, find_vm(si, "src-linux").parent.RegisterVM_Task(
        path="[ds-ssd] ur-2/ur-2.vmx", asTemplate=False, pool=pool(si)))
    assert isinstance(gone, vim.fault.NotFound)


def create_spec(name="cr-1", **extra):
    net = Dev.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network")
    return vim.vm.ConfigSpec(
        name=name, guestId="otherLinux64Guest", memoryMB=1024, numCPUs=1,
        files=vim.vm.FileInfo(vmPathName="[ds-hdd]"),
        deviceChange=[
            Dev.VirtualDeviceSpec(operation="add", device=Dev.ParaVirtualSCSIController(key=-100, busNumber=0,
                                                                                        sharedBus="noSharing")),
            Dev.VirtualDeviceSpec(operation="add", fileOperation="create", device=Dev.VirtualDisk(
                key=-101, controllerKey=-100, unitNumber=0, capacityInKB=8 * 1024**2,
                backing=Dev.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent", thinProvisioned=True))),
            Dev.VirtualDeviceSpec(operation="add", device=Dev.VirtualVmxnet3(
                key=-102, addressType="generated", backing=net)),
        ], **extra)


def test_create_vm_builds_disks_and_nics_from_the_spec(si):
    folder = find_vm(si, "src-linux").parent
    hdd = free(si, "ds-hdd")
    vm = run(si, folder.CreateVM_Task(config=create_spec(annotation="made by hand"), pool=pool(si)))
    assert vm.name == "cr-1" and vm.summary.config.vmPathName == "[ds-hdd] cr-1/cr-1.vmx"
    assert (vm.config.hardware.memoryMB, vm.config.hardware.numCPU, vm.config.guestId) == (1024, 1,
                                                                                           "otherLinux64Guest")
    assert chain(vm) == ["[ds-hdd] cr-1/cr-1.vmdk"] and vm.config.annotation == "made by hand"
    nic = next(d for d in vm.config.hardware.device if isinstance(d, Dev.VirtualEthernetCard))
    assert nic.macAddress.startswith("00:50:56:") and nic.backing.deviceName == "VM Network"
    assert vm.runtime.powerState == "poweredOff" and free(si, "ds-hdd") == hdd - 1024**2
    assert events_of(si, vm) == ["VmBeingCreatedEvent", "VmCreatedEvent"]
    run(si, vm.PowerOnVM_Task())
    dup = fault_of(si, folder.CreateVM_Task(config=create_spec(), pool=pool(si)))
    assert isinstance(dup, vim.fault.DuplicateName)
    with pytest.raises(vmodl.fault.InvalidArgument):
        folder.CreateVM_Task(config=vim.vm.ConfigSpec(name="cr-2"), pool=pool(si))  # no vmPathName
    with pytest.raises(vmodl.fault.NotSupported):
        folder.CreateVM_Task(config=vim.vm.ConfigSpec(name="cr-3", files=vim.vm.FileInfo(vmPathName="[ds-hdd]"),
                                                      deviceChange=[Dev.VirtualDeviceSpec(
                                                          operation="add", device=Dev.VirtualCdrom(key=-1))]),
                             pool=pool(si))


def test_a_registered_vm_keeps_its_guest_files(si):
    from tests.test_twin_guest import auth
    from tests.twin_helpers import wait_for

    vm = linked_clone(si, "ur-3", power_on=True)
    wait_for(lambda: vm.guest.toolsRunningStatus, lambda s: s == "guestToolsRunning")
    guest_files = si.content.guestOperationsManager.fileManager
    guest_files.MakeDirectoryInGuest(vm, auth(), "/root/kept", True)
    run(si, vm.PowerOffVM_Task())
    folder = vm.parent
    vm.UnregisterVM()
    linked_clone(si, "ur-other")  # another VM's files are made meanwhile: the unregistered one's stay
    other = find_vm(si, "ur-other")
    run(si, other.PowerOnVM_Task())
    wait_for(lambda: other.guest.toolsRunningStatus, lambda s: s == "guestToolsRunning")
    guest_files.ListFilesInGuest(other, auth(), "/root")
    back = run(si, folder.RegisterVM_Task(path="[ds-ssd] ur-3/ur-3.vmx", asTemplate=False, pool=pool(si)))
    run(si, back.PowerOnVM_Task())
    wait_for(lambda: back.guest.toolsRunningStatus, lambda s: s == "guestToolsRunning")
    listed = guest_files.ListFilesInGuest(back, auth(), "/root")
    assert "kept" in [f.path for f in listed.files]
