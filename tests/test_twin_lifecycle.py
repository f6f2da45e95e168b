"""VM life cycle on the twin through stock pyVmomi: power (with its events), suspend and resume,
guest shutdown/reboot/standby (the call returns at once, the guest goes down later), rename,
move into a folder, snapshot rename and revert events, templates, custom attributes."""

from __future__ import annotations

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find, find_vm
from tests.twin_helpers import events_of, fault_of, instant_clone, linked_clone, run, wait_for


def power(vm):
    return vm.runtime.powerState


def test_power_cycle_posts_starting_and_stopping_events(si):
    vm = linked_clone(si, "pw-1")
    run(si, vm.PowerOnVM_Task())
    with pytest.raises(vim.fault.InvalidPowerState) as info:
        run(si, vm.PowerOnVM_Task())
    assert info.value.existingState == "poweredOn"
    run(si, vm.PowerOffVM_Task())
    assert events_of(si, vm) == ["VmClonedEvent", "VmStartingEvent", "VmPoweredOnEvent", "VmStoppingEvent",
                                 "VmPoweredOffEvent"]
    assert events_of(si, vm, tasks=True).count("TaskEvent") == 3  # on, the refused on, off
    src = find_vm(si, "src-linux")
    assert events_of(si, src)[-1] == "VmBeingClonedEvent"  # the clone's start is in its source's history


def test_suspend_resume_keeps_the_boot_and_writes_a_memory_image(si):
    vm = linked_clone(si, "sus-1", power_on=True)
    boot = vm.runtime.bootTime
    run(si, vm.SuspendVM_Task())
    assert power(vm) == "suspended" and vm.guest.toolsRunningStatus == "guestToolsNotRunning"
    vmss = [f for f in vm.layoutEx.file if f.type == "suspend"]
    assert [f.name for f in vmss] == ["[ds-ssd] sus-1/sus-1.vmss"] and vmss[0].size == 4096 * 1024 * 1024
    assert fault_of(si, vm.SuspendVM_Task()).existingState == "suspended"
    run(si, vm.PowerOnVM_Task())
    assert power(vm) == "poweredOn" and vm.runtime.bootTime == boot
    wait_for(lambda: vm.guest.toolsRunningStatus, lambda s: s == "guestToolsRunning")
    assert not [f for f in vm.layoutEx.file if f.type == "suspend"]
    evs = events_of(si, vm)
    assert evs[-4:] == ["VmSuspendingEvent", "VmSuspendedEvent", "VmResumingEvent", "VmPoweredOnEvent"]


def test_suspended_vm_powers_off(si):
    vm = linked_clone(si, "sus-2", power_on=True)
    run(si, vm.SuspendVM_Task())
    run(si, vm.PowerOffVM_Task())
    assert power(vm) == "poweredOff" and vm.runtime.bootTime is None


def test_a_frozen_source_cannot_be_suspended(twin, si):
    twin.admin("freeze", vm="src-linux")
    src = find_vm(si, "src-linux")
    fault = fault_of(si, src.SuspendVM_Task())
    assert isinstance(fault, vim.fault.InvalidState) and "frozen" in fault.msg
    assert power(src) == "poweredOn"


def test_a_frozen_source_cannot_be_snapshotted(twin, si):
    twin.admin("freeze", vm="src-linux")
    src = find_vm(si, "src-linux")
    tree, files = src.snapshot.currentSnapshot, len(src.layoutEx.file)
    fault = fault_of(si, src.CreateSnapshot_Task("s1", "", memory=False, quiesce=False))
    assert isinstance(fault, vim.fault.InvalidState) and "frozen" in fault.msg
    assert src.snapshot.currentSnapshot == tree and len(src.layoutEx.file) == files
    assert src.runtime.instantCloneFrozen is True


def test_shutdown_guest_returns_at_once_and_the_guest_goes_down_later(twin, si):
    vm = linked_clone(si, "sd-1", power_on=True)
    wait_for(lambda: vm.guest.toolsRunningStatus, lambda s: s == "guestToolsRunning")
    twin.admin("time_scale", value=0.05)  # 5 simulated seconds of shutdown: 250 ms
    vm.ShutdownGuest()
    assert power(vm) == "poweredOn"  # not yet: vCenter answers before the guest is down
    with pytest.raises(vim.fault.ToolsUnavailable):
        vm.ShutdownGuest()  # tools stopped answering
    wait_for(lambda: power(vm), lambda s: s == "poweredOff")
    assert events_of(si, vm)[-2:] == ["VmGuestShutdownEvent", "VmPoweredOffEvent"]
    with pytest.raises(vim.fault.InvalidPowerState):
        vm.ShutdownGuest()


def test_reboot_guest_brings_tools_back_without_a_power_cycle(si):
    vm = linked_clone(si, "rb-1", power_on=True)
    wait_for(lambda: vm.guest.toolsRunningStatus, lambda s: s == "guestToolsRunning")
    boot = vm.runtime.bootTime
    vm.RebootGuest()
    assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
    wait_for(lambda: vm.guest.toolsRunningStatus, lambda s: s == "guestToolsRunning")
    assert power(vm) == "poweredOn" and vm.runtime.bootTime == boot
    assert "VmGuestRebootEvent" in events_of(si, vm)


def test_standby_guest_suspends_the_vm(si):
    vm = linked_clone(si, "sb-1", power_on=True)
    wait_for(lambda: vm.guest.toolsRunningStatus, lambda s: s == "guestToolsRunning")
    vm.StandbyGuest()
    wait_for(lambda: power(vm), lambda s: s == "suspended")
    assert events_of(si, vm)[-2:] == ["VmGuestStandbyEvent", "VmSuspendedEvent"]


def test_guest_power_needs_tools(twin, si):
    twin.admin("freeze", vm="src-linux")
    with pytest.raises(vim.fault.ToolsUnavailable):
        find_vm(si, "src-linux").ShutdownGuest()


def test_rename_keeps_files_and_refuses_a_taken_name(si):
    vm = linked_clone(si, "rn-a")
    linked_clone(si, "rn-taken")
    run(si, vm.Rename_Task("rn-b"))
    assert vm.name == "rn-b" and vm.config.name == "rn-b" and vm.summary.config.name == "rn-b"
    assert vm.summary.config.vmPathName == "[ds-ssd] rn-a/rn-a.vmx"  # vCenter renames the inventory name only
    search = si.content.searchIndex
    assert search.FindChild(vm.parent, "rn-b") == vm and search.FindChild(vm.parent, "rn-a") is None
    fault = fault_of(si, vm.Rename_Task("rn-taken"))
    assert isinstance(fault, vim.fault.DuplicateName) and fault.name == "rn-taken"
    with pytest.raises(vim.fault.InvalidName):
        vm.Rename_Task("")
    renamed = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(eventTypeId=["VmRenamedEvent"]))
    assert [(e.oldName, e.newName) for e in renamed] == [("rn-a", "rn-b")]
    with pytest.raises(vmodl.fault.NotSupported):
        find(si, vim.Datastore, "ds-ssd").Rename_Task("ds-fast")


def test_move_into_folder_moves_the_vm_and_checks_the_folder(si):
    vm = linked_clone(si, "mv-1")
    target = find(si, vim.Folder, "forkscale")
    root_vm_folder = vm.parent
    run(si, target.MoveIntoFolder_Task([vm]))
    assert vm.parent == target and vm in target.childEntity and vm not in root_vm_folder.childEntity
    assert si.content.searchIndex.FindByInventoryPath("dc1/vm/forkscale/mv-1") == vm
    datastore = find(si, vim.Datastore, "ds-ssd")
    assert isinstance(fault_of(si, target.MoveIntoFolder_Task([datastore])), vmodl.fault.NotSupported)
    assert isinstance(fault_of(si, target.MoveIntoFolder_Task([target])), vim.fault.InvalidFolder)
    other = linked_clone(si, "mv-1-twin")
    run(si, other.Rename_Task("mv-2"))
    run(si, target.MoveIntoFolder_Task([other]))
    run(si, root_vm_folder.MoveIntoFolder_Task([vm]))
    assert vm.parent == root_vm_folder


def test_rename_snapshot_and_revert_event(si):
    vm = linked_clone(si, "snap-rn")
    snap = run(si, vm.CreateSnapshot_Task("s1", "first", False, False))
    snap.RenameSnapshot(name="s1-renamed", description="renamed")
    tree = vm.snapshot.rootSnapshotList[0]
    assert (tree.name, tree.description) == ("s1-renamed", "renamed")
    run(si, snap.RevertToSnapshot_Task())
    evs = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
        eventTypeId=["com.vmware.vc.vm.VmStateRevertedToSnapshot"]))
    assert len(evs) == 1 and "s1-renamed" in evs[0].fullFormattedMessage


def test_template_conversions_are_events(si):
    vm = linked_clone(si, "tpl-1")
    vm.MarkAsTemplate()
    pool = find(si, vim.ResourcePool, "Resources")
    vm.MarkAsVirtualMachine(pool)
    assert events_of(si, vm)[-2:] == ["com.vmware.vc.vm.VmConvertedToTemplateEvent",
                                      "com.vmware.vc.vm.TemplateConvertedToVmEvent"]


def test_custom_fields_define_set_and_read(si):
    fields = si.content.customFieldsManager
    vm = instant_clone(si, "cf-1")
    owner = fields.AddCustomFieldDef(name="owner", moType=vim.VirtualMachine)
    site = fields.AddCustomFieldDef(name="site")  # for every type
    assert owner.key != site.key and owner.managedObjectType is vim.VirtualMachine
    assert [f.name for f in fields.field] == ["owner", "site"]
    with pytest.raises(vim.fault.DuplicateName):
        fields.AddCustomFieldDef(name="owner", moType=vim.VirtualMachine)
    fields.SetField(entity=vm, key=owner.key, value="team-a")
    vm.setCustomValue(key="site", value="paris")
    values = {v.key: v.value for v in vm.customValue}
    assert values == {owner.key: "team-a", site.key: "paris"}
    assert {v.key: v.value for v in vm.summary.customValue} == values
    assert [f.name for f in vm.availableField] == ["owner", "site"]
    esx = find(si, vim.HostSystem, "esx-01")
    assert [f.name for f in esx.availableField] == ["site"]
    with pytest.raises(vmodl.fault.InvalidArgument):
        fields.SetField(entity=esx, key=owner.key, value="x")  # a VirtualMachine field
    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.setCustomValue(key="nope", value="x")
    changed = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        eventTypeId=["CustomFieldValueChangedEvent"]))
    assert sorted((e.name, e.value) for e in changed) == [("owner", "team-a"), ("site", "paris")]
    fields.RenameCustomFieldDef(key=site.key, name="region")
    fields.RemoveCustomFieldDef(key=owner.key)
    assert [(v.key, v.value) for v in vm.customValue] == [(site.key, "paris")]
    assert [f.name for f in vm.availableField] == ["region"]
