"""PerformanceManager and EventManager of the twin, through stock pyVmomi over verified TLS."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find

PM = vim.PerformanceManager
EV = vim.event.EventFilterSpec
PC = vmodl.query.PropertyCollector
INSTANT_CLONED = "com.vmware.vc.VmInstantClonedEvent"  # the EventEx id vCenter posts for an instant clone



def counter_ids(si):
    return {f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}": c for c in si.content.perfManager.perfCounter}


def instant_clone(si, src, name):
    task = src.InstantClone_Task(vim.vm.InstantCloneSpec(name=name, location=vim.vm.RelocateSpec()))
    WaitForTask(task, si=si)
    return task, task.info.result


# performance --------------------------------------------------------------------------------------
def test_counter_catalog_resolves_by_name(si):
    pm = si.content.perfManager
    counters = counter_ids(si)
    needed = ["mem.shared.average", "mem.sharedcommon.average", "mem.zero.average", "mem.consumed.average",
              "mem.granted.average", "mem.overhead.average", "cpu.usage.average"]
    assert set(needed) <= set(counters)
    assert all(counters[n].unitInfo.key == "kiloBytes" for n in needed if n.startswith("mem."))
    assert counters["cpu.usage.average"].unitInfo.key == "percent"
    assert len({c.key for c in counters.values()}) == len(counters)  # ids are unique
    by_id = pm.QueryPerfCounter([counters[n].key for n in needed] + [999_999])
    assert sorted(f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}" for c in by_id) == sorted(needed)
    level1 = pm.QueryPerfCounterByLevel(1)
    level4 = pm.QueryPerfCounterByLevel(4)
    assert 0 < len(level1) < len(level4) == len(counters)
    assert all(c.level == 1 for c in level1)
    with pytest.raises(vmodl.fault.InvalidArgument):
        pm.QueryPerfCounterByLevel(7)
    intervals = pm.historicalInterval
    assert [i.samplingPeriod for i in intervals] == [300, 1800, 7200, 86400]
    assert intervals[0].name == "Past day" and intervals[0].length == 86400


def test_available_metrics_and_provider_summary(si):
    pm = si.content.perfManager
    counters = counter_ids(si)
    src = find(si, vim.VirtualMachine, "src-linux")
    host = src.runtime.host
    host_ids = {m.counterId for m in pm.QueryAvailablePerfMetric(entity=host, intervalId=20)}
    vm_ids = {m.counterId for m in pm.QueryAvailablePerfMetric(entity=src, intervalId=20)}
    assert counters["mem.sharedcommon.average"].key in host_ids
    assert counters["mem.sharedcommon.average"].key not in vm_ids  # a host-only counter
    assert counters["mem.shared.average"].key in vm_ids
    ds = find(si, vim.Datastore, "ds-ssd")
    assert pm.QueryAvailablePerfMetric(entity=ds, intervalId=20) == []
    with pytest.raises(vmodl.fault.InvalidArgument):
        pm.QueryAvailablePerfMetric(entity=host, intervalId=21)
    summary = pm.QueryPerfProviderSummary(entity=host)
    assert summary.currentSupported and summary.refreshRate == 20
    assert not pm.QueryPerfProviderSummary(entity=ds).currentSupported


def test_realtime_samples_are_20_seconds_apart_and_honour_the_query(si):
    pm = si.content.perfManager
    counters = counter_ids(si)
    src = find(si, vim.VirtualMachine, "src-linux")
    host = src.runtime.host
    time.sleep(0.2)  # at 1/1000 time: ten realtime samples
    shared = PM.MetricId(counterId=counters["mem.shared.average"].key, instance="")
    [metric] = pm.QueryPerf([PM.QuerySpec(entity=host, metricId=[shared], intervalId=20, maxSample=5)])
    assert isinstance(metric, PM.EntityMetric) and metric.entity == host
    assert len(metric.sampleInfo) == 5 and all(s.interval == 20 for s in metric.sampleInfo)
    stamps = [s.timestamp for s in metric.sampleInfo]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    assert stamps[-1] <= si.CurrentTime() + timedelta(seconds=1)  # never in the future
    [series] = metric.value
    assert isinstance(series, PM.IntSeries) and series.id.counterId == shared.counterId
    assert len(series.value) == 5 and all(v > 0 for v in series.value)
    # a time window: startTime is exclusive, endTime inclusive
    window = pm.QueryPerf([PM.QuerySpec(entity=host, metricId=[shared], intervalId=20, startTime=stamps[1],
                                        endTime=stamps[3])])
    assert [s.timestamp for s in window[0].sampleInfo] == stamps[2:4]
    # all counters when no metricId is given; csv on request
    [every] = pm.QueryPerf([PM.QuerySpec(entity=src, intervalId=20, maxSample=1)])
    assert {s.id.counterId for s in every.value} == {m.counterId for m in
                                                     pm.QueryAvailablePerfMetric(entity=src, intervalId=20)}
    [csv] = pm.QueryPerf([PM.QuerySpec(entity=host, metricId=[shared], intervalId=20, maxSample=3, format="csv")])
    assert isinstance(csv, PM.EntityMetricCSV)
    assert csv.sampleInfoCSV.count(",") == 5 and len(csv.value[0].value.split(",")) == 3
    # no metrics for entities without a provider; a bad interval is refused
    ds = find(si, vim.Datastore, "ds-ssd")
    assert pm.QueryPerf([PM.QuerySpec(entity=ds, intervalId=20, maxSample=1)]) == []
    with pytest.raises(vmodl.fault.InvalidArgument):
        pm.QueryPerf([PM.QuerySpec(entity=host, intervalId=33)])


def test_a_clone_has_samples_only_from_its_birth(si):
    pm = si.content.perfManager
    src = find(si, vim.VirtualMachine, "src-linux")
    time.sleep(0.3)
    _, clone = instant_clone(si, src, "young-1")
    time.sleep(0.05)
    shared = PM.MetricId(counterId=counter_ids(si)["mem.shared.average"].key, instance="")
    [old, young] = pm.QueryPerf([PM.QuerySpec(entity=src, metricId=[shared], intervalId=20),
                                 PM.QuerySpec(entity=clone, metricId=[shared], intervalId=20)])
    assert len(young.sampleInfo) < len(old.sampleInfo)
    assert young.sampleInfo[-1].timestamp == old.sampleInfo[-1].timestamp
    # the clone keeps diverging after the latest sample: the sample shares at least as much as now
    assert young.value[0].value[-1] >= clone.summary.quickStats.sharedMemory * 1024 > 0


def test_historical_interval_queries(si):
    pm = si.content.perfManager
    host = find(si, vim.HostSystem, "esx-01")
    time.sleep(0.7)  # 700 simulated seconds: at least two 300 s samples
    [metric] = pm.QueryPerf([PM.QuerySpec(entity=host, intervalId=300)])
    assert len(metric.sampleInfo) >= 2 and all(s.interval == 300 for s in metric.sampleInfo)


# events -----------------------------------------------------------------------------------------
def kind(event) -> str:
    """An event's class, or an extended event's id (as govc and PowerCLI print them)."""
    if isinstance(event, vim.event.EventEx):
        return event.eventTypeId
    return type(event).__name__.rsplit(".", 1)[-1]


def test_clone_power_and_destroy_are_recorded_as_events(si):
    em = si.content.eventManager
    src = find(si, vim.VirtualMachine, "src-linux")
    task, clone = instant_clone(si, src, "ev-1")
    WaitForTask(clone.PowerOffVM_Task(), si=si)
    WaitForTask(clone.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="noted")), si=si)
    WaitForTask(clone.PowerOnVM_Task(), si=si)
    WaitForTask(clone.PowerOffVM_Task(), si=si)
    WaitForTask(clone.Destroy_Task(), si=si)
    everything = em.QueryEvents(EV(entity=EV.ByEntity(entity=si.content.rootFolder, recursion="all")))
    events = [e for e in everything if not isinstance(e, vim.event.TaskEvent)]
    assert [kind(e) for e in events] == [
        "VmRemovedEvent", "VmPoweredOffEvent", "VmStoppingEvent", "VmPoweredOnEvent", "VmStartingEvent",
        "VmReconfiguredEvent", "VmPoweredOffEvent", "VmStoppingEvent", INSTANT_CLONED]  # newest first
    cloned = events[-1]
    assert cloned.vm.name == "ev-1" and cloned.vm.vm._moId == clone._moId
    assert [(a.key, a.value) for a in cloned.arguments] == [("sourceVm", "src-linux")]
    assert cloned.host.name == "esx-01"
    assert cloned.datacenter.name == "dc1" and cloned.computeResource.name == "cluster1"
    assert cloned.chainId == task.info.eventChainId
    assert cloned.userName == si.content.sessionManager.currentSession.userName
    assert everything[0].fullFormattedMessage and [e.key for e in everything] == sorted(
        (e.key for e in everything), reverse=True)
    assert em.latestEvent.key == everything[0].key
    assert next(e for e in events if kind(e) == "VmReconfiguredEvent").configSpec.annotation == "noted"
    tasks = [e for e in everything if isinstance(e, vim.event.TaskEvent)]
    assert len(tasks) == 6 and {e.info.state for e in tasks} == {"queued"}  # one per task, as created
    assert tasks[-1].info.descriptionId == "VirtualMachine.instantClone" and tasks[-1].vm.name == "src-linux"
    assert tasks[-1].chainId == task.info.eventChainId == cloned.chainId


def test_event_filters(si):
    em = si.content.eventManager
    src = find(si, vim.VirtualMachine, "src-linux")
    _, a = instant_clone(si, src, "flt-a")
    mark = si.CurrentTime()
    time.sleep(0.01)
    _, b = instant_clone(si, src, "flt-b")
    WaitForTask(b.PowerOffVM_Task(), si=si)
    by_vm = em.QueryEvents(EV(entity=EV.ByEntity(entity=a, recursion="self")))
    assert [e.vm.name for e in by_vm] == ["flt-a"]
    cloned = em.QueryEvents(EV(eventTypeId=[INSTANT_CLONED]))
    assert [e.vm.name for e in cloned] == ["flt-b", "flt-a"]
    since = em.QueryEvents(EV(time=EV.ByTime(beginTime=mark)))
    assert {e.vm.name for e in since if not isinstance(e, vim.event.TaskEvent)} == {"flt-b"}
    assert len(em.QueryEvents(EV(maxCount=1))) == 1
    host = src.runtime.host
    on_host = em.QueryEvents(EV(entity=EV.ByEntity(entity=host, recursion="self")))
    assert sorted(kind(e) for e in on_host if not isinstance(e, vim.event.TaskEvent)) == sorted(
        [INSTANT_CLONED, INSTANT_CLONED, "VmStoppingEvent", "VmPoweredOffEvent"])
    other = find(si, vim.HostSystem, "esx-02")
    assert em.QueryEvents(EV(entity=EV.ByEntity(entity=other, recursion="all"))) == []
    assert em.QueryEvents(EV(userName=EV.ByUsername(systemUser=False, userList=["nobody"]))) == []
    vm_folder = src.parent
    WaitForTask(b.Destroy_Task(), si=si)
    removed = em.QueryEvents(EV(entity=EV.ByEntity(entity=vm_folder, recursion="all"),
                                eventTypeId=["VmRemovedEvent"]))
    assert [e.vm.name for e in removed] == ["flt-b"]  # found under its folder after it is gone


def test_latest_event_is_watchable_and_history_collector_pages(si):
    em = si.content.eventManager
    src = find(si, vim.VirtualMachine, "src-linux")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=em)],
                                  propSet=[PC.PropertySpec(type=vim.event.EventManager, pathSet=["latestEvent"])]),
                    partialUpdates=False)
    assert em.latestEvent is None  # a fresh world has no events yet
    version = pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0)).version
    names = [instant_clone(si, src, f"page-{i}")[1].name for i in range(5)]
    upd = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=5))
    latest = upd.filterSet[0].objectSet[0].changeSet[0].val
    assert kind(latest) == INSTANT_CLONED and latest.vm.name == "page-4"
    collector = em.CreateCollectorForEvents(EV(eventTypeId=[INSTANT_CLONED]))
    assert [e.vm.name for e in collector.latestPage] == names
    # a new collector is rewound: before the oldest event
    assert collector.ReadPreviousEvents(2) == []
    assert [e.vm.name for e in collector.ReadNextEvents(3)] == names[:3]
    assert [e.vm.name for e in collector.ReadNextEvents(3)] == names[3:]
    assert collector.ReadNextEvents(3) == []
    assert [e.vm.name for e in collector.ReadPreviousEvents(2)] == names[3:]
    collector.SetCollectorPageSize(2)
    assert [e.vm.name for e in collector.latestPage] == names[3:]
    collector.ResetCollector()  # just before the latest page: reading back gives what is older
    assert [e.vm.name for e in collector.ReadPreviousEvents(2)] == names[1:3]
    assert [e.vm.name for e in collector.ReadPreviousEvents(2)] == names[:1]
    assert collector.ReadPreviousEvents(2) == []
    with pytest.raises(vmodl.fault.InvalidArgument):
        collector.ReadNextEvents(0)
    collector.DestroyCollector()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        collector.ReadNextEvents(1)
