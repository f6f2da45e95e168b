"""The twin's history collectors and task progress, driven by stock pyVmomi over TLS.

Event- and TaskHistoryCollector paging as the API reference defines it (a new collector is
rewound; ResetCollector sits just before the latest page), their filters, `latestPage` through
WaitForUpdatesEx, and `TaskInfo.progress` climbing while a task runs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find_vm

PC = vmodl.query.PropertyCollector
EV = vim.event.EventFilterSpec
TF = vim.TaskFilterSpec


def linked_clone(si, src, name, wait=True):
    snap = src.snapshot.rootSnapshotList[0].snapshot
    task = src.CloneVM_Task(src.parent, name, vim.vm.CloneSpec(
        snapshot=snap, location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking")))
    if wait:
        WaitForTask(task, si=si)
    return task


def watch(si, obj, kind, paths):
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=obj)],
                                  propSet=[PC.PropertySpec(type=kind, pathSet=paths)]), partialUpdates=False)
    return pc


def values_until(pc, path, done, deadline_s=20.0):
    """Every value of `path` WaitForUpdatesEx reports, until `done(value)` (or the deadline)."""
    seen = []
    version = ""
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        upd = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=max(1, int(end - time.monotonic()))))
        if upd is None:
            continue
        version = upd.version
        for fs in upd.filterSet:
            for ou in fs.objectSet:
                for c in ou.changeSet:
                    if c.name == path:
                        seen.append(c.val)
                        if done(c.val):
                            return seen
    raise AssertionError(f"{path} never reached the end state; saw {seen!r}")


def test_task_collector_pages_filters_and_outlives_the_tasks(twin, si):
    twin.call(lambda t: setattr(t.world.tasks, "keep_completed", 2))  # recentTask forgets fast
    src, win = find_vm(si, "src-linux"), find_vm(si, "src-win")
    made = [linked_clone(si, src, f"hist-{i}") for i in range(4)]
    other = linked_clone(si, win, "hist-win")
    tm = si.content.taskManager
    mine = tm.CreateCollectorForTasks(TF(entity=TF.ByEntity(entity=src, recursion="self")))
    assert mine.ReadPreviousTasks(5) == []  # rewound: nothing before the oldest
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        _ = made[0].info  # the Task object is gone; its history stays
    infos = mine.ReadNextTasks(3) + mine.ReadNextTasks(3)
    assert [i.key for i in infos] == [t._moId for t in made]
    assert all(i.descriptionId == "VirtualMachine.clone" and i.state == "success" and i.entity == src
               for i in infos)
    assert mine.ReadNextTasks(3) == []
    mine.SetCollectorPageSize(3)
    assert [i.key for i in mine.latestPage] == [t._moId for t in made[1:]]
    mine.ResetCollector()
    assert [i.key for i in mine.ReadPreviousTasks(10)] == [made[0]._moId]
    mine.RewindCollector()
    assert [i.key for i in mine.ReadNextTasks(1)] == [made[0]._moId]
    # entity recursion: the VM folder holds both sources; the cluster's root pool too
    folder = tm.CreateCollectorForTasks(TF(entity=TF.ByEntity(entity=src.parent, recursion="children")))
    assert {i.key for i in folder.ReadNextTasks(100)} >= {t._moId for t in [*made, other]}
    pool = tm.CreateCollectorForTasks(TF(entity=TF.ByEntity(entity=src.resourcePool, recursion="self")))
    assert pool.ReadNextTasks(100) == []
    # state and time filters
    errors = tm.CreateCollectorForTasks(TF(state=["error"]))
    assert errors.ReadNextTasks(100) == []
    start = infos[2].queueTime
    late = tm.CreateCollectorForTasks(TF(entity=TF.ByEntity(entity=src, recursion="self"),
                                         time=TF.ByTime(timeType="queuedTime", beginTime=start)))
    assert [i.key for i in late.ReadNextTasks(100)] == [t._moId for t in made[2:]]
    future = tm.CreateCollectorForTasks(TF(time=TF.ByTime(timeType="completedTime",
                                                          beginTime=start + timedelta(hours=1))))
    assert future.ReadNextTasks(100) == []
    with pytest.raises(vmodl.fault.InvalidArgument):
        mine.ReadNextTasks(0)
    mine.DestroyCollector()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        mine.ReadNextTasks(1)


def test_task_collector_latest_page_follows_a_running_task(twin, si):
    src = find_vm(si, "src-linux")
    twin.admin("slow", op="linked", factor=200)  # ~1 s: long enough to be seen queued/running
    collector = si.content.taskManager.CreateCollectorForTasks(
        TF(entity=TF.ByEntity(entity=src, recursion="self")))
    collector.SetCollectorPageSize(1)
    pc = watch(si, collector, vim.TaskHistoryCollector, ["latestPage"])
    task = linked_clone(si, src, "hist-live", wait=False)
    pages = values_until(pc, "latestPage", lambda page: bool(page) and page[0].state == "success")
    states = [p[0].state for p in pages if p and p[0].key == task._moId]
    assert states[-1] == "success" and {"queued", "running"} & set(states[:-1]), states


def test_event_collector_reset_reads_back_all_but_the_latest_page(si):
    src = find_vm(si, "src-linux")
    for i in range(3):
        linked_clone(si, src, f"evh-{i}")
    em = si.content.eventManager
    everything = em.QueryEvents(EV())
    collector = em.CreateCollectorForEvents(EV())
    collector.SetCollectorPageSize(2)
    forward = []
    while page := collector.ReadNextEvents(3):
        forward += [e.key for e in page]
    assert forward == sorted(e.key for e in everything)
    collector.ResetCollector()
    backward = []
    while page := collector.ReadPreviousEvents(3):
        backward = [e.key for e in page] + backward
    assert backward == forward[:-2]
    assert sorted(e.key for e in collector.latestPage) == forward[-2:]
    clones = em.CreateCollectorForEvents(EV(eventTypeId=["VmClonedEvent"],
                                            entity=EV.ByEntity(entity=src.parent, recursion="all")))
    assert [e.vm.name for e in clones.ReadNextEvents(10)] == ["evh-0", "evh-1", "evh-2"]


def test_event_collector_latest_page_is_watchable(si):
    src = find_vm(si, "src-linux")
    collector = si.content.eventManager.CreateCollectorForEvents(EV(eventTypeId=["VmClonedEvent"]))
    collector.SetCollectorPageSize(1)
    pc = watch(si, collector, vim.event.EventHistoryCollector, ["latestPage"])
    assert pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0)) is not None
    linked_clone(si, src, "evh-watched")
    pages = values_until(pc, "latestPage", lambda page: bool(page) and page[0].vm.name == "evh-watched")
    assert pages[-1][0].sourceVm.name == "src-linux"


def test_history_collectors_are_limited_per_session(si):
    tm = si.content.taskManager
    made = [tm.CreateCollectorForTasks(TF()) for _ in range(32)]
    with pytest.raises(vim.fault.InvalidState):
        tm.CreateCollectorForTasks(TF())
    made[0].DestroyCollector()
    tm.CreateCollectorForTasks(TF())


def test_a_full_clone_reports_progress_while_it_runs(twin, si):
    src = find_vm(si, "src-linux")
    twin.admin("slow", op="full", factor=20)  # 60 simulated s at time scale 0.001: about 1.2 s
    task = src.CloneVM_Task(src.parent, "progress-full", vim.vm.CloneSpec(location=vim.vm.RelocateSpec()))
    pc = watch(si, task, vim.Task, ["info.progress", "info.state"])
    progress = values_until(pc, "info.progress", lambda p: p == 100)
    assert any(0 < p < 100 for p in progress), progress
    assert progress == sorted(progress)  # never goes back
    assert task.info.state == "success" and task.info.progress == 100
