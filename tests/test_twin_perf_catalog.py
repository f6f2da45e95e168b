"""The twin's performance catalog as dashboards and tools use it, through stock pyVmomi over TLS.

The level-1 counters a default vCenter collects, with vCenter's units and rollups; values that
agree with the rest of the world (uptime from power-on, memory from the P-Share model and the
quick stats, datastore space from the disk model and the datastore summary, VM operations from
the events); historical samples rolled up from the realtime ones; clusters, resource pools,
datastores and datacenters with historical statistics only; many entities in one QueryPerf.
"""

from __future__ import annotations

import time

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find, find_vm

PM = vim.PerformanceManager
# (name, unit, statsType) of the counters dashboards and collectors ask for by default
DEFAULTS = [
    ("cpu.ready.summation", "millisecond", "delta"), ("cpu.usage.average", "percent", "rate"),
    ("cpu.usagemhz.average", "megaHertz", "rate"), ("net.usage.average", "kiloBytesPerSecond", "rate"),
    ("disk.usage.average", "kiloBytesPerSecond", "rate"),
    ("mem.consumed.average", "kiloBytes", "absolute"), ("mem.usage.average", "percent", "absolute"),
    ("sys.uptime.latest", "second", "absolute"), ("datastore.totalReadLatency.average", "millisecond", "absolute"),
    ("datastore.totalWriteLatency.average", "millisecond", "absolute"), ("disk.used.latest", "kiloBytes", "absolute"),
    ("disk.capacity.latest", "kiloBytes", "absolute"), ("disk.provisioned.latest", "kiloBytes", "absolute"),
    ("mem.vmmemctl.average", "kiloBytes", "absolute"), ("mem.overhead.average", "kiloBytes", "absolute"),
    ("cpu.totalmhz.average", "megaHertz", "rate"), ("mem.totalmb.average", "megaBytes", "absolute"),
    ("clusterServices.effectivecpu.average", "megaHertz", "rate"), ("vmop.numClone.latest", "number", "absolute"),
]


def catalog(si) -> dict:
    return {f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}": c for c in si.content.perfManager.perfCounter}


def query(si, entity, names, interval, **spec):
    """{counter name: [values]} and the sample times of one entity."""
    cat = catalog(si)
    ids = [PM.MetricId(counterId=cat[n].key, instance="") for n in names]
    result = si.content.perfManager.QueryPerf([PM.QuerySpec(entity=entity, metricId=ids, intervalId=interval,
                                                            **spec)])
    assert len(result) == 1, f"no samples for {entity}"
    by_key = {c.key: n for n, c in cat.items()}
    return {by_key[s.id.counterId]: list(s.value) for s in result[0].value}, [i.timestamp for i in
                                                                              result[0].sampleInfo]


def instant_clone(si, src, name):
    task = src.InstantClone_Task(vim.vm.InstantCloneSpec(name=name, location=vim.vm.RelocateSpec()))
    WaitForTask(task, si=si)
    return task.info.result


def test_the_default_counters_are_listed_as_vcenter_lists_them(si):
    cat = catalog(si)
    for name, unit, stats in DEFAULTS:
        assert name in cat, name
        c = cat[name]
        assert (c.unitInfo.key, c.statsType, c.level) == (unit, stats, 1), name
    active = cat["mem.active.average"]  # asked for by most dashboards, but level 2 on vCenter too
    assert (active.unitInfo.key, active.statsType, active.level) == ("kiloBytes", "absolute", 2)
    level1 = {f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}"
              for c in si.content.perfManager.QueryPerfCounterByLevel(1)}
    assert {n for n, _, _ in DEFAULTS} <= level1
    assert cat["cpu.usage.average"].key == 2 and cat["mem.consumed.average"].key == 98  # vCenter's ids


def test_what_each_kind_of_entity_offers(si):
    pm = si.content.perfManager
    cat = catalog(si)
    names = {c.key: n for n, c in cat.items()}

    def offered(entity, interval):
        return {names[m.counterId] for m in pm.QueryAvailablePerfMetric(entity=entity, intervalId=interval)}

    vm, host = find_vm(si, "src-linux"), find(si, vim.HostSystem, "esx-01")
    cluster, ds = find(si, vim.ClusterComputeResource, "cluster1"), find(si, vim.Datastore, "ds-ssd")
    dc = find(si, vim.Datacenter, "dc1")
    assert {"cpu.ready.summation", "sys.uptime.latest", "net.usage.average", "disk.usage.average",
            "mem.active.average", "datastore.totalReadLatency.average"} <= offered(vm, 20)
    assert {"sys.uptime.latest", "mem.sharedcommon.average", "net.usage.average"} <= offered(host, 300)
    assert offered(cluster, 20) == set() and offered(ds, 20) == set()  # no realtime provider
    assert {"cpu.usagemhz.average", "mem.consumed.average", "cpu.totalmhz.average",
            "vmop.numClone.latest"} <= offered(cluster, 300)
    assert offered(ds, 300) == {"disk.used.latest", "disk.capacity.latest", "disk.provisioned.latest",
                                "disk.unshared.latest"}
    assert "vmop.numPoweron.latest" in offered(dc, 1800)
    assert {"mem.consumed.average", "cpu.usagemhz.average"} <= offered(cluster.resourcePool, 300)
    for entity in (cluster, ds, dc):
        summary = pm.QueryPerfProviderSummary(entity=entity)
        assert not summary.currentSupported and summary.summarySupported


def test_vm_values_follow_power_on_memory_and_the_guest(si):
    src = find_vm(si, "src-linux")
    time.sleep(0.1)  # 100 simulated seconds at the fixture's time scale: five realtime samples
    names = ["sys.uptime.latest", "mem.consumed.average", "cpu.usage.average", "cpu.ready.summation",
             "net.usage.average", "sys.heartbeat.summation", "cpu.usagemhz.average"]
    values, stamps = query(si, src, names, 20, maxSample=4)
    uptime = values["sys.uptime.latest"]
    assert all(b - a == 20 for a, b in zip(uptime, uptime[1:], strict=False)) and uptime[-1] > 0
    quick = src.summary.quickStats
    assert values["mem.consumed.average"][-1] == quick.privateMemory * 1024  # the same P-Share numbers
    assert values["cpu.usagemhz.average"][-1] == quick.overallCpuUsage > 0  # the same CPU model
    assert min(values["cpu.usage.average"]) > 0 and min(values["cpu.ready.summation"]) > 0
    assert values["sys.heartbeat.summation"][-1] == 20 and values["net.usage.average"][-1] > 0
    clone = instant_clone(si, src, "perf-off")
    WaitForTask(clone.PowerOffVM_Task(), si=si)
    time.sleep(0.05)
    off, _ = query(si, clone, ["sys.uptime.latest", "cpu.usage.average", "mem.consumed.average"], 20, maxSample=1)
    assert off == {"sys.uptime.latest": [0], "cpu.usage.average": [0], "mem.consumed.average": [0]}


def test_historical_samples_roll_up_the_realtime_ones(si):
    host = find(si, vim.HostSystem, "esx-01")  # the two sources idle there: steady values
    time.sleep(0.7)  # two 300 s samples at least
    realtime, _ = query(si, host, ["cpu.ready.summation", "cpu.usagemhz.average", "sys.uptime.latest"], 20,
                        maxSample=1)
    rolled, stamps = query(si, host, ["cpu.ready.summation", "cpu.usagemhz.average", "sys.uptime.latest"], 300)
    assert len(stamps) >= 2
    assert rolled["cpu.usagemhz.average"][-1] == realtime["cpu.usagemhz.average"][-1] > 0  # an average
    assert rolled["cpu.ready.summation"][-1] == 15 * realtime["cpu.ready.summation"][-1]  # 15 realtime intervals
    assert rolled["sys.uptime.latest"][-1] % 300 == 0  # the latest value, at the sample's own time
    day, _ = query(si, host, ["sys.uptime.latest"], 1800)
    assert all(u % 1800 == 0 for u in day["sys.uptime.latest"])


def test_cluster_pool_and_datacenter_add_up_their_members(si):
    src = find_vm(si, "src-linux")
    before = [instant_clone(si, src, f"perf-c{i}") for i in range(3)]
    cloned_at = si.CurrentTime()
    cluster = find(si, vim.ClusterComputeResource, "cluster1")
    # a 300 s sample whose whole window follows the clones: a VM born inside a window averages over
    # its life only, its pool over the whole window, and the sums below would not match
    deadline = time.monotonic() + 10
    while (lambda st: len(st) < 2 or st[-2] < cloned_at)(query(si, cluster, ["mem.consumed.average"], 300)[1]):
        assert time.monotonic() < deadline, "no 300 s sample after the clones"
        time.sleep(0.05)
    hosts = [find(si, vim.HostSystem, f"esx-0{i}") for i in range(1, 5)]
    names = ["mem.consumed.average", "cpu.usagemhz.average"]
    total, stamps = query(si, cluster, [*names, "cpu.totalmhz.average", "mem.totalmb.average",
                                        "vmop.numClone.latest"], 300)
    per_host = [query(si, h, names, 300, endTime=stamps[-1]) for h in hosts]
    for name in names:
        assert total[name][-1] == sum(v[name][-1] for v, _ in per_host) > 0, name
    assert total["cpu.totalmhz.average"][-1] == sum(h.summary.hardware.cpuMhz * h.summary.hardware.numCpuCores
                                                    for h in hosts)
    assert total["mem.totalmb.average"][-1] == sum(h.summary.hardware.memorySize for h in hosts) // 2**20
    assert sum(total["vmop.numClone.latest"]) >= len(before)
    pool, _ = query(si, cluster.resourcePool, ["mem.consumed.average"], 300, endTime=stamps[-1])
    vms = [find_vm(si, n) for n in ("src-linux", "src-win")] + before
    vm_sum = sum(query(si, v, ["mem.consumed.average"], 300, endTime=stamps[-1])[0]["mem.consumed.average"][-1]
                 for v in vms)
    assert abs(pool["mem.consumed.average"][-1] - vm_sum) <= len(vms)  # each VM's average rounds on its own
    dc_ops, _ = query(si, find(si, vim.Datacenter, "dc1"), ["vmop.numClone.latest"], 300)
    assert sum(dc_ops["vmop.numClone.latest"]) >= len(before)


def test_datastore_space_follows_the_disk_model(si):
    ds = find(si, vim.Datastore, "ds-ssd")
    time.sleep(0.35)
    first, stamps = query(si, ds, ["disk.used.latest", "disk.capacity.latest", "disk.provisioned.latest"], 300)
    assert first["disk.capacity.latest"][-1] == ds.summary.capacity // 1024
    used_now = (ds.summary.capacity - ds.summary.freeSpace) // 1024
    assert 0 < first["disk.used.latest"][-1] <= used_now < first["disk.provisioned.latest"][-1]
    src = find_vm(si, "src-linux")
    for i in range(3):
        instant_clone(si, src, f"perf-ds{i}")
    cloned_at = si.CurrentTime()
    deadline = time.monotonic() + 10
    while True:
        later, later_stamps = query(si, ds, ["disk.used.latest"], 300)
        if later_stamps[-1] >= cloned_at:
            break
        assert time.monotonic() < deadline, "no new 300 s sample"
        time.sleep(0.05)
    grown = later["disk.used.latest"][-1] - first["disk.used.latest"][-1]
    assert grown >= 3 * 2 * 16 * 1024  # a 16 MB delta for each clone and one for the source, per clone


def test_one_query_answers_many_entities(si):
    pm = si.content.perfManager
    cat = catalog(si)
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.ManagedEntity], True)
    entities = list(view.view)
    metric = [PM.MetricId(counterId=cat["mem.consumed.average"].key, instance="")]
    specs = [PM.QuerySpec(entity=e, metricId=metric, intervalId=300) for e in entities]
    time.sleep(0.35)
    answered = {m.entity._moId for m in pm.QueryPerf(specs)}
    kinds = {type(e).__name__ for e in entities if e._moId in answered}
    assert kinds == {"vim.VirtualMachine", "vim.HostSystem", "vim.ClusterComputeResource", "vim.ResourcePool"}
    with pytest.raises(vmodl.fault.InvalidArgument):
        pm.QueryPerf([PM.QuerySpec(entity=entities[0], intervalId=60)])
