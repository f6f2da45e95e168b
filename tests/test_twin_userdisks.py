"""Independent (user) disks on the twin through ReconfigVM_Task: created, detached, attached to
another VM, destroyed; left out of snapshots, linked and instant clones; what the guest wrote in
one travels with the file — the way a pool keeps a user's persistent disk across a refresh."""

from __future__ import annotations

from pyVmomi import vim

from tests.fixtures.twin import find_vm
from tests.twin_helpers import (
    GiB,
    chain,
    disk_of,
    fault_of,
    free,
    full_clone,
    instant_clone,
    linked_clone,
    run,
)

MiB = 1024**2
Disk = vim.vm.device.VirtualDisk
DevSpec = vim.vm.device.VirtualDeviceSpec


def add_disk(si, vm, *, file_name="[ds-hdd]", create=True, size_gib=10, mode="independent_persistent"):
    backing = Disk.FlatVer2BackingInfo(fileName=file_name, diskMode=mode, thinProvisioned=True)
    disk = Disk(key=-1, controllerKey=1000, capacityInKB=size_gib * GiB // 1024, backing=backing)
    change = DevSpec(operation="add", fileOperation="create" if create else None, device=disk)
    return vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change]))


def remove_disk(si, vm, label="Hard disk 2", destroy=False):
    change = DevSpec(operation="remove", fileOperation="destroy" if destroy else None, device=disk_of(vm, label))
    return vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change]))


def labels(vm):
    return [d.deviceInfo.label for d in vm.config.hardware.device if isinstance(d, Disk)]


USER_DISK = "[ds-hdd] ud-1/ud-1_1.vmdk"


def test_a_user_disk_survives_its_vm_and_follows_the_user(twin, si):
    first = linked_clone(si, "ud-1", power_on=True)
    hdd = free(si, "ds-hdd")
    run(si, add_disk(si, first))
    user = disk_of(first, "Hard disk 2")
    assert user.backing.fileName == USER_DISK and user.backing.diskMode == "independent_persistent"
    assert user.capacityInKB == 10 * GiB // 1024 and free(si, "ds-hdd") == hdd - MiB  # thin: 1 MiB written
    twin.admin("disk_write", vm="ud-1", disk="Hard disk 2", path="/home/ann/notes.txt", data="ann's notes")
    run(si, remove_disk(si, first))  # detach, keep the file
    assert labels(first) == ["Hard disk 1"]
    run(si, first.PowerOffVM_Task())
    run(si, first.Destroy_Task())  # the refresh: the clone goes...
    assert free(si, "ds-hdd") == hdd - MiB  # ...the user's disk stays
    second = linked_clone(si, "ud-1", power_on=True)  # ...and its replacement gets it back
    run(si, add_disk(si, second, file_name=USER_DISK, create=False))
    assert disk_of(second, "Hard disk 2").backing.fileName == USER_DISK
    assert twin.admin("disk_read", vm="ud-1", disk="Hard disk 2", path="/home/ann/notes.txt")["data"] == "ann's notes"
    other = linked_clone(si, "ud-other")
    fault = fault_of(si, add_disk(si, other, file_name=USER_DISK, create=False))
    assert isinstance(fault, vim.fault.FileLocked)  # one VM at a time
    run(si, remove_disk(si, second, destroy=True))  # the user leaves the pool for good
    assert free(si, "ds-hdd") == hdd
    fault = fault_of(si, add_disk(si, other, file_name=USER_DISK, create=False))
    assert isinstance(fault, vim.fault.FileNotFound) and fault.file == USER_DISK


def test_destroying_a_vm_deletes_the_disks_still_attached(si):
    vm = linked_clone(si, "ud-2")
    hdd = free(si, "ds-hdd")
    run(si, add_disk(si, vm))
    run(si, vm.Destroy_Task())
    assert free(si, "ds-hdd") == hdd


def test_independent_disks_are_left_out_of_snapshots_and_delta_clones(si):
    src = find_vm(si, "src-linux")
    run(si, add_disk(si, src, file_name="[ds-ssd] src-linux/profile.vmdk", size_gib=1))
    before = chain(src, "Hard disk 2")
    run(si, src.CreateSnapshot_Task("with-user-disk", "", False, False))
    assert chain(src, "Hard disk 2") == before == ["[ds-ssd] src-linux/profile.vmdk"]
    assert len(chain(src, "Hard disk 1")) == 3
    assert labels(instant_clone(si, "ic-ud")) == ["Hard disk 1"]
    assert labels(linked_clone(si, "lc-ud")) == ["Hard disk 1"]
    full = full_clone(si, "fc-ud")
    assert labels(full) == ["Hard disk 1", "Hard disk 2"]
    copy = disk_of(full, "Hard disk 2")
    assert copy.backing.fileName == "[ds-ssd] fc-ud/fc-ud_1.vmdk" and copy.backing.diskMode == "independent_persistent"


def test_disk_spec_faults(si):
    vm = linked_clone(si, "ud-3")
    run(si, add_disk(si, vm, file_name="[ds-hdd] shared/data.vmdk"))
    fault = fault_of(si, add_disk(si, linked_clone(si, "ud-4"), file_name="[ds-hdd] shared/data.vmdk"))
    assert isinstance(fault, vim.fault.FileAlreadyExists)
    bad = Disk(key=-1, controllerKey=1000, capacityInKB=0, backing=Disk.FlatVer2BackingInfo(
        fileName="[ds-hdd]", diskMode="persistent"))
    try:
        vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[DevSpec(operation="add", fileOperation="create",
                                                                   device=bad)]))
        raise AssertionError("a disk without a capacity was accepted")
    except vim.fault.InvalidDeviceSpec as exc:
        assert exc.property.endswith("capacityInKB")
    grow = disk_of(vm, "Hard disk 2")
    grow.capacityInKB = 20 * GiB // 1024
    run(si, vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[DevSpec(operation="edit", device=grow)])))
    assert disk_of(vm, "Hard disk 2").capacityInKB == 20 * GiB // 1024
    shrink = disk_of(vm, "Hard disk 2")
    shrink.capacityInKB = GiB // 1024
    try:
        vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[DevSpec(operation="edit", device=shrink)]))
        raise AssertionError("a shrink was accepted")
    except vim.fault.InvalidDeviceSpec:
        pass
