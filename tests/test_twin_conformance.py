"""The twin is complete by construction: after a representative workload, every property the
vSphere schema (as pyVmomi carries it) marks required is set on every object the twin serves,
down to every nested data object, and so is every optional property a real vCenter always fills
(forkscale.sim.conformance reads them all over real SOAP)."""

from __future__ import annotations

from typing import Any

from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from forkscale.sim.conformance import ALWAYS, check
from tests.fixtures.twin import connect, find, find_vm

PC = vmodl.query.PropertyCollector


def _clone_spec(si: Any, src: Any, *, linked: bool) -> Any:
    loc = vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking" if linked else None)
    return vim.vm.CloneSpec(location=loc, powerOn=True, template=False,
                            snapshot=src.snapshot.rootSnapshotList[0].snapshot if linked else None)


def _run(si: Any, task: Any) -> Any:
    WaitForTask(task, si=si)
    return task.info.result


def workload(si: Any) -> list[Any]:
    """Instant, linked and full clones, snapshots, power cycles, a relocate, a suspend, a rename, a custom
    field, a destroy, a child resource pool, views and collectors;
    the objects nothing in the inventory refers to (for the check to read too)."""
    src = find_vm(si, "src-linux")
    win = find_vm(si, "src-win")
    folder = src.parent
    instant = _run(si, src.InstantClone_Task(vim.vm.InstantCloneSpec(
        name="conf-instant", location=vim.vm.RelocateSpec(),
        config=[vim.option.OptionValue(key="guestinfo.forkscale.ip", value="10.1.2.3")])))
    linked = _run(si, src.CloneVM_Task(folder, "conf-linked", _clone_spec(si, src, linked=True)))
    _run(si, win.CloneVM_Task(folder, "conf-full", _clone_spec(si, win, linked=False)))
    clone = si.content.searchIndex.FindChild(folder, "conf-linked")
    assert clone == linked
    WaitForTask(clone.CreateSnapshot_Task("s1", "first", memory=False, quiesce=False), si=si)
    WaitForTask(clone.CreateSnapshot_Task("s2", "second", memory=True, quiesce=False), si=si)
    WaitForTask(clone.snapshot.rootSnapshotList[0].snapshot.RevertToSnapshot_Task(), si=si)  # s1: powered off
    WaitForTask(clone.PowerOnVM_Task(), si=si)
    WaitForTask(clone.PowerOffVM_Task(), si=si)
    WaitForTask(clone.PowerOnVM_Task(), si=si)
    WaitForTask(instant.PowerOffVM_Task(), si=si)
    WaitForTask(instant.Destroy_Task(), si=si)
    WaitForTask(win.CreateSnapshot_Task("extra", "", memory=False, quiesce=False), si=si)
    WaitForTask(win.snapshot.currentSnapshot.RemoveSnapshot_Task(removeChildren=False), si=si)
    # a vMotion and Storage vMotion of the linked clone, a suspend, a rename, a custom field
    WaitForTask(clone.RelocateVM_Task(vim.vm.RelocateSpec(host=find(si, vim.HostSystem, "esx-02"),
                                                          datastore=find(si, vim.Datastore, "ds-hdd"))), si=si)
    full = si.content.searchIndex.FindChild(folder, "conf-full")
    WaitForTask(full.SuspendVM_Task(), si=si)
    WaitForTask(full.Rename_Task("conf-full-renamed"), si=si)
    key = si.content.customFieldsManager.AddCustomFieldDef(name="owner", moType=vim.VirtualMachine).key
    si.content.customFieldsManager.SetField(entity=clone, key=key, value="team-a")
    # a child resource pool holding the linked clone
    alloc = vim.ResourceAllocationInfo(reservation=0, limit=-1, expandableReservation=True,
                                       shares=vim.SharesInfo(level="normal", shares=0))
    pool = clone.resourcePool.CreateResourcePool("conf-pool", vim.ResourceConfigSpec(cpuAllocation=alloc,
                                                                                      memoryAllocation=alloc))
    pool.MoveIntoResourcePool([clone])
    content = si.content
    views = [content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True),
             content.viewManager.CreateListView([src, clone])]
    collector = content.propertyCollector.CreatePropertyCollector()
    collector.CreateFilter(PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=src)],
                                         propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])]),
                           partialUpdates=False)
    events = content.eventManager.CreateCollectorForEvents(vim.event.EventFilterSpec())
    tasks = content.taskManager.CreateCollectorForTasks(vim.TaskFilterSpec())
    return [*views, collector, events, tasks, content.propertyCollector]


def test_every_required_property_and_field_is_set_after_a_workload(si):
    extra = workload(si)
    problems = check(si, extra)
    assert [str(p) for p in problems] == []


def test_a_restarted_twin_is_as_complete_as_before(restartable_twin):
    """The world a twin restores from its state directory (after a kill) passes the check too,
    including a source whose instant clone was destroyed before the restart."""
    twin = restartable_twin
    si = connect(twin)
    workload(si)
    assert [str(p) for p in check(si)] == []
    twin.handle.wait_saved()
    twin.restart()
    si = connect(twin)
    assert find_vm(si, "conf-linked").runtime.powerState == "poweredOn"
    assert [str(p) for p in check(si)] == []


def test_the_check_reads_every_kind_of_object_the_workload_made(si):
    """The check cannot pass by reading nothing: it covers the inventory, the managers, and
    what the workload created (snapshots, tasks, views, collectors)."""
    from forkscale.sim.conformance import Checker

    extra = workload(si)
    checker = Checker(si)
    checker.run(extra)
    kinds = {c.split(":")[0] for c in checker.checked}
    assert {"VirtualMachine", "HostSystem", "ClusterComputeResource", "ResourcePool", "Datastore", "Network",
            "DistributedVirtualPortgroup", "VmwareDistributedVirtualSwitch", "Folder", "Datacenter",
            "VirtualMachineSnapshot", "Task", "ContainerView", "ListView", "PropertyCollector", "PropertyFilter",
            "EventHistoryCollector", "TaskHistoryCollector", "HostDatastoreBrowser", "EnvironmentBrowser", "SearchIndex",
            "PerformanceManager", "EventManager", "TaskManager", "SessionManager"} <= kinds


def test_the_check_finds_what_is_unset(si, twin):
    """An object missing a required property, or one vCenter always fills, is reported by path."""
    def unset(tw: Any) -> None:
        host = next(h for h in tw.world.of_kind(vim.HostSystem) if h.name == "esx-02")
        host.p_configManager = lambda: None  # type: ignore[attr-defined]
        host.p_config = lambda: None  # type: ignore[attr-defined]
        ds = next(d for d in tw.world.of_kind(vim.Datastore) if d.name == "ds-hdd")
        ds.p_capability = lambda: None  # type: ignore[attr-defined]

    twin.call(unset)
    host = find(si, vim.HostSystem, "esx-02")
    ds = find(si, vim.Datastore, "ds-hdd")
    problems = {str(p) for p in check(si)}
    assert f"HostSystem:{host._moId}.configManager: required by the schema, unset" in problems
    assert f"Datastore:{ds._moId}.capability: required by the schema, unset" in problems
    assert "config" in ALWAYS[vim.HostSystem]
    assert f"HostSystem:{host._moId}.config: always filled by vCenter, unset" in problems
    # reported once, not again for every path below it (config.product, config.network...)
    assert not any(p.startswith(f"HostSystem:{host._moId}.config.") for p in problems)
