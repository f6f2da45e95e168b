"""RelocateVM_Task, MigrateVM_Task and PromoteDisks_Task on the twin, through stock pyVmomi: disks
consolidated or moved (datastore space, chain depth, the parent's reference count), vMotion
between hosts (memory sharing ends), the faults vCenter raises, and the events it posts."""

from __future__ import annotations

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find_vm
from tests.test_twin_physics import world_twin
from tests.twin_helpers import (
    GiB,
    chain,
    ds,
    events_of,
    fault_of,
    free,
    full_clone,
    host,
    instant_clone,
    linked_clone,
    quiet_sources,
    run,
    wait_for,
)

MiB = 1024**2
BASE = "[ds-ssd] src-linux/src-linux.vmdk"  # src-linux's flat base, under its snapshot `base`
BASE_SIZE = 10 * GiB  # a quarter of its 40 GiB is written
DELTA = 16 * MiB  # a fresh delta


def refs(twin, name: str) -> int:
    """How many users a disk file has (children, VMs, snapshots): the twin's own count."""
    return twin.call(lambda t: t.world.disks.by_name(name).refs)


def relocate(si, vm, **spec):
    return run(si, vm.RelocateVM_Task(vim.vm.RelocateSpec(**spec)))


def test_a_linked_clone_moved_to_another_datastore_is_consolidated(twin, si):
    quiet_sources(si)
    vm = linked_clone(si, "rl-1")
    assert chain(vm) == ["[ds-ssd] rl-1/rl-1-000001.vmdk", BASE]
    hdd, ssd, users = free(si, "ds-hdd"), free(si, "ds-ssd"), refs(twin, BASE)
    relocate(si, vm, datastore=ds(si, "ds-hdd"))
    assert chain(vm) == ["[ds-hdd] rl-1/rl-1.vmdk"]  # chain depth 1: one flat file with all it held
    assert free(si, "ds-hdd") == hdd - (BASE_SIZE + DELTA)
    assert free(si, "ds-ssd") == ssd + DELTA  # its own delta is gone; the base stays for src-linux
    assert refs(twin, BASE) == users - 1  # the clone no longer counts against its parent
    assert vm.datastore == [ds(si, "ds-hdd")] and vm.summary.config.vmPathName == "[ds-hdd] rl-1/rl-1.vmx"
    assert events_of(si, vm)[-2:] == ["VmBeingRelocatedEvent", "VmRelocatedEvent"]


def test_allow_sharing_keeps_the_link_when_the_target_holds_the_parent(twin, si):
    quiet_sources(si)
    vm = linked_clone(si, "rl-2", datastore=ds(si, "ds-hdd"))
    assert chain(vm) == ["[ds-hdd] rl-2/rl-2-000001.vmdk", BASE]
    ssd, users = free(si, "ds-ssd"), refs(twin, BASE)
    relocate(si, vm, datastore=ds(si, "ds-ssd"), diskMoveType="moveAllDiskBackingsAndAllowSharing")
    assert chain(vm) == ["[ds-ssd] rl-2/rl-2-000001.vmdk", BASE]
    assert free(si, "ds-ssd") == ssd - DELTA and refs(twin, BASE) == users
    relocate(si, vm, datastore=ds(si, "ds-hdd"), diskMoveType="moveChildMostDiskBacking")
    assert chain(vm) == ["[ds-hdd] rl-2/rl-2-000001.vmdk", BASE]


def test_a_full_clone_moves_its_files_and_frees_the_source_datastore(si):
    quiet_sources(si)
    vm = full_clone(si, "fc-1")
    size = sum(f.size for f in vm.layoutEx.file if f.type == "diskExtent")
    hdd, ssd = free(si, "ds-hdd"), free(si, "ds-ssd")
    relocate(si, vm, datastore=ds(si, "ds-hdd"))
    assert chain(vm) == ["[ds-hdd] fc-1/fc-1.vmdk"]
    assert free(si, "ds-hdd") == hdd - size and free(si, "ds-ssd") == ssd + size


def test_a_linked_clone_with_snapshots_keeps_its_tree_and_gets_a_private_base(twin, si):
    quiet_sources(si)
    vm = linked_clone(si, "rl-3")
    snap = run(si, vm.CreateSnapshot_Task("s1", "", False, False))
    users = refs(twin, BASE)
    relocate(si, vm, datastore=ds(si, "ds-hdd"))
    assert chain(vm) == ["[ds-hdd] rl-3/rl-3-000002.vmdk", "[ds-hdd] rl-3/rl-3-000001.vmdk",
                         "[ds-hdd] rl-3/src-linux.vmdk"]
    assert refs(twin, BASE) == users - 1
    run(si, snap.RevertToSnapshot_Task())
    assert chain(vm)[1:] == ["[ds-hdd] rl-3/rl-3-000001.vmdk", "[ds-hdd] rl-3/src-linux.vmdk"]


def test_vmotion_moves_a_running_clone_and_ends_its_memory_sharing(si):
    vm = instant_clone(si, "vm-1")
    shared = wait_for(lambda: vm.summary.quickStats.sharedMemory, lambda v: v > 0)
    relocate(si, vm, host=host(si, "esx-02"))
    assert vm.runtime.host == host(si, "esx-02") and vm.runtime.powerState == "poweredOn"
    assert vm in host(si, "esx-02").vm and vm not in host(si, "esx-01").vm
    assert vm.summary.quickStats.sharedMemory < shared / 10  # only zero pages now
    assert events_of(si, vm)[-2:] == ["VmBeingHotMigratedEvent", "VmMigratedEvent"]
    migrated = events_of(si, vm)
    assert "VmRelocatedEvent" not in migrated


def test_migrate_vm_changes_host(si):
    vm = linked_clone(si, "mg-1")
    run(si, vm.MigrateVM_Task(host=host(si, "esx-03"), priority="defaultPriority"))
    assert vm.runtime.host == host(si, "esx-03")
    assert events_of(si, vm)[-2:] == ["VmBeingMigratedEvent", "VmMigratedEvent"]
    with pytest.raises(vim.fault.InvalidPowerState):
        vm.MigrateVM_Task(host=host(si, "esx-01"), priority="defaultPriority", state="poweredOn")


def test_a_frozen_source_cannot_be_relocated_or_promoted(twin, si):
    twin.admin("freeze", vm="src-linux")
    src = find_vm(si, "src-linux")
    fault = fault_of(si, src.RelocateVM_Task(vim.vm.RelocateSpec(host=host(si, "esx-02"))))
    assert isinstance(fault, vim.fault.InvalidState) and "frozen" in fault.msg
    assert isinstance(fault_of(si, src.PromoteDisks_Task(unlink=True)), vim.fault.InvalidState)
    assert src.runtime.host == host(si, "esx-01")
    assert "VmFailedMigrateEvent" not in events_of(si, src)  # refused before it started


def test_relocation_faults(tmp_path):
    tiny = {"datastores": [{"name": "ds-ssd", "capacity_gib": 4096}, {"name": "ds-tiny", "capacity_gib": 5}]}
    with world_twin(tmp_path, **tiny) as (_, si):
        vm = linked_clone(si, "rf-1")
        fault = fault_of(si, vm.RelocateVM_Task(vim.vm.RelocateSpec(datastore=ds(si, "ds-tiny"))))
        assert isinstance(fault, vim.fault.NoDiskSpace) and fault.datastore == "ds-tiny"
        assert chain(vm)[0].startswith("[ds-ssd] rf-1/")  # nothing moved
        with pytest.raises(vmodl.fault.InvalidArgument):
            vm.RelocateVM_Task(vim.vm.RelocateSpec(datastore=ds(si, "ds-ssd"), diskMoveType="teleport"))
        with pytest.raises(vmodl.fault.InvalidArgument):
            vm.RelocateVM_Task(vim.vm.RelocateSpec(disk=[vim.vm.RelocateSpec.DiskLocator(
                diskId=9999, datastore=ds(si, "ds-ssd"))]))


def test_promote_with_unlink_consolidates_in_place_and_keeps_the_data(twin, si):
    quiet_sources(si)
    vm = linked_clone(si, "pr-1")
    twin.admin("disk_write", vm="pr-1", path="/etc/hostname", data="pr-1\n")
    ssd, users = free(si, "ds-ssd"), refs(twin, BASE)
    run(si, vm.PromoteDisks_Task(unlink=True))
    assert chain(vm) == ["[ds-ssd] pr-1/pr-1.vmdk"]
    assert free(si, "ds-ssd") == ssd - BASE_SIZE  # the base copied in, the delta merged
    assert refs(twin, BASE) == users - 1
    assert twin.admin("disk_read", vm="pr-1", path="/etc/hostname")["data"] == "pr-1\n"
    assert "com.vmware.vc.VmDiskConsolidatedEvent" in events_of(si, vm)
    run(si, vm.PromoteDisks_Task(unlink=True))  # nothing shared any more: nothing to do
    assert chain(vm) == ["[ds-ssd] pr-1/pr-1.vmdk"] and free(si, "ds-ssd") == ssd - BASE_SIZE


def test_promote_without_unlink_merges_own_deltas(si):
    quiet_sources(si)
    vm = full_clone(si, "pr-2")
    snap = run(si, vm.CreateSnapshot_Task("s", "", False, False))
    run(si, snap.RemoveSnapshot_Task(removeChildren=False))
    assert len(chain(vm)) == 2
    run(si, vm.PromoteDisks_Task(unlink=False))
    assert chain(vm) == ["[ds-ssd] pr-2/pr-2-000001.vmdk"]


def test_the_provisioning_checker_answers_what_the_move_would_meet(twin, si):
    checker = si.content.vmProvisioningChecker
    vm = linked_clone(si, "ck-1")
    [ok] = run(si, checker.CheckRelocate_Task(vm=vm, spec=vim.vm.RelocateSpec(datastore=ds(si, "ds-hdd"))))
    assert ok.error == [] and ok.host == host(si, "esx-01")
    run(si, host(si, "esx-04").EnterMaintenanceMode_Task(timeout=0))
    [busy] = run(si, checker.CheckMigrate_Task(vm=vm, host=host(si, "esx-04"), state="poweredOn"))
    assert sorted(type(f).__name__ for f in busy.error) == ["vim.fault.InvalidHostState", "vim.fault.InvalidPowerState"]
    twin.admin("freeze", vm="src-linux")
    [frozen] = run(si, checker.CheckRelocate_Task(vm=find_vm(si, "src-linux"), spec=vim.vm.RelocateSpec(
        host=host(si, "esx-02"))))
    assert [type(f).__name__ for f in frozen.error] == ["vim.fault.InvalidState"]
    assert vm.datastore == [ds(si, "ds-ssd")]  # a check changes nothing
