"""The twin's physics, observed the way a client sees it: stock pyVmomi over verified TLS.

Delta chains (running-source clones, the 255 limit, linked clones from a snapshot, full
copies), names and MACs, NIC-only device changes, P-Share memory (quickStats and the
PerformanceManager telling one story), host memory admission, per-host queueing, and the
provisioning checker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from forkscale.sim import start_in_thread
from tests.fixtures.twin import connect, find, find_vm

PM = vim.PerformanceManager


@contextmanager
def world_twin(tmp_path, *, time_scale: float = 0.001, **world: Any) -> Iterator[tuple[Any, Any]]:
    """A twin built from a world file with `world`'s top-level keys, and a session to it."""
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(world))
    handle = start_in_thread(world=str(path), time_scale=time_scale, state_dir=str(tmp_path / "sim"))
    si = connect(handle)
    try:
        yield handle, si
    finally:
        Disconnect(si)
        handle.stop()


def one_vm(name="src-linux", host="esx-01", memory_mb=4096, **extra):
    vm = {"name": name, "host": host, "datastore": "ds-ssd", "memory_mb": memory_mb, "cpus": 2, "disk_gib": 40,
          "guest_id": "ubuntu64Guest", "guest_full_name": "Ubuntu Linux (64-bit)", "network": "VM Network",
          "snapshots": ["base"], "power": "on"}
    vm.update(extra)
    return vm




def task_error(si, task):
    with pytest.raises(vmodl.MethodFault) as info:
        WaitForTask(task, si=si)
    return info.value


def ic_spec(name, changes=None, config=None):
    return vim.vm.InstantCloneSpec(name=name, location=vim.vm.RelocateSpec(deviceChange=changes or []),
                                   config=config or [])


def instant_clone(si, src, name, changes=None):
    task = src.InstantClone_Task(ic_spec(name, changes))
    WaitForTask(task, si=si)
    return task.info.result


def disk_of(vm):
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))


def nic_of(vm):
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))


def backing_chain(vm):
    """Disk file names from the child-most up to the base, following backing.parent."""
    names, b = [], disk_of(vm).backing
    while b is not None:
        names.append(b.fileName)
        b = b.parent
    return names


def layout_chain(vm):
    """Descriptor file names of the first disk's chain, base first (as layoutEx lists it)."""
    layout = vm.layoutEx
    files = {f.key: f for f in layout.file}
    disk = layout.disk[0]
    return [next(files[k].name for k in unit.fileKey if files[k].type == "diskDescriptor") for unit in disk.chain]


def nic_edit(vm, **fields):
    nic = nic_of(vm)
    dev = vim.vm.device.VirtualVmxnet3(key=nic.key, **fields)
    return vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev)


# delta chains -----------------------------------------------------------------------------------
def test_running_source_clones_grow_both_chains(si):
    src = find_vm(si, "src-linux")
    start = len(layout_chain(src))
    for i in range(1, 4):
        before = layout_chain(src)
        clone = instant_clone(si, src, f"live-{i}")
        after = layout_chain(src)
        assert len(after) == start + i  # the source gains one delta per clone
        cchain = layout_chain(clone)
        assert len(cchain) == len(before) + 1  # the clone: the source's chain at fork, plus its own delta
        assert cchain[:-1] == before  # ...sharing exactly the files the source had then
        assert after[:-1] == before
        assert cchain[-1] != after[-1]
        assert backing_chain(clone) == list(reversed(cchain))  # layoutEx and device backings agree


def test_chain_limit_255_fails_with_system_error_wrapping_msg_migrate_prepare_failed(twin, si):
    from forkscale.sim.ops.snapshots import push_delta

    def deepen(tw, name, depth):
        vm = next(v for v in tw.world.objects.values() if getattr(v, "name", None) == name)
        disk = vm.disks[0]
        while disk.top.depth() < depth:
            push_delta(vm, disk)
        vm.changed()
        return disk.top.depth()

    assert twin.call(deepen, "src-linux", 254) == 254
    src = find_vm(si, "src-linux")
    clone = instant_clone(si, src, "last-one")  # reaches exactly 255 levels
    assert len(layout_chain(clone)) == 255 and len(layout_chain(src)) == 255
    fault = task_error(si, src.InstantClone_Task(ic_spec("one-too-many")))
    assert isinstance(fault, vmodl.fault.SystemError)
    assert isinstance(fault.faultCause, vim.fault.GenericVmConfigFault)
    assert fault.faultCause.reason == "msg.migrate.prepare.failed"
    assert "msg.migrate.prepare.failed" in fault.reason
    assert len(layout_chain(src)) == 255  # nothing changed
    # the provisioning checker says the same before anyone tries
    check = si.content.vmProvisioningChecker.CheckInstantClone_Task(vm=src, spec=ic_spec("probe"))
    WaitForTask(check, si=si)
    errors = check.info.result[0].error
    assert any(isinstance(e, vmodl.fault.SystemError) and e.faultCause.reason == "msg.migrate.prepare.failed"
               for e in errors)


def test_linked_clone_from_snapshot_hangs_off_the_snapshot_file(si):
    src = find_vm(si, "src-linux")
    snap = src.snapshot.rootSnapshotList[0]
    assert snap.name == "base"
    snap_file = disk_of(snap.snapshot).backing.fileName  # the disk as the snapshot froze it
    assert snap_file != disk_of(src).backing.fileName
    spec = vim.vm.CloneSpec(snapshot=snap.snapshot, powerOn=False, template=False,
                            location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"))
    task = src.CloneVM_Task(folder=src.parent, name="linked-1", spec=spec)
    WaitForTask(task, si=si)
    clone = task.info.result
    chain = backing_chain(clone)
    assert chain[1] == snap_file  # the clone's own delta sits directly on the snapshot's file
    assert chain[0].startswith("[ds-ssd] linked-1/")
    assert chain == list(reversed(layout_chain(clone)))
    assert disk_of(clone).backing.deltaDiskFormat == "redoLogFormat"
    # the source kept running on its own delta; the clone does not see it
    assert disk_of(src).backing.fileName not in chain
    assert clone.runtime.powerState == "poweredOff"


def test_linked_clone_without_a_snapshot_fails(si):
    src = find_vm(si, "src-linux")
    spec = vim.vm.CloneSpec(powerOn=False, template=False,
                            location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"))
    fault = task_error(si, src.CloneVM_Task(folder=src.parent, name="linked-bad", spec=spec))
    assert isinstance(fault, vmodl.fault.InvalidArgument)
    assert fault.invalidProperty == "spec.snapshot"
    with pytest.raises(StopIteration):
        find_vm(si, "linked-bad")


def test_full_clone_consumes_datastore_free_space(si):
    src = find_vm(si, "src-linux")
    hdd = find(si, vim.Datastore, "ds-hdd")
    assert hdd.summary.freeSpace == hdd.summary.capacity  # nothing lives there yet
    source_bytes = sum(f.size for f in src.layoutEx.file if f.type == "diskExtent")
    spec = vim.vm.CloneSpec(powerOn=False, template=False,
                            location=vim.vm.RelocateSpec(datastore=hdd,
                                                         diskMoveType="moveAllDiskBackingsAndConsolidate"))
    task = src.CloneVM_Task(folder=src.parent, name="full-1", spec=spec)
    WaitForTask(task, si=si)
    clone = task.info.result
    used = hdd.summary.capacity - hdd.summary.freeSpace
    assert used >= source_bytes >= 10 * 1024**3  # a full copy of the whole chain (a quarter of 40 GiB and more)
    assert disk_of(clone).backing.parent is None and len(layout_chain(clone)) == 1
    assert hdd in clone.datastore
    WaitForTask(clone.Destroy_Task(), si=si)
    assert hdd.summary.freeSpace == hdd.summary.capacity


def test_duplicate_name_is_refused(si):
    src = find_vm(si, "src-linux")
    fault = task_error(si, src.InstantClone_Task(ic_spec("src-win")))
    assert isinstance(fault, vim.fault.DuplicateName) and fault.name == "src-win"
    spec = vim.vm.CloneSpec(powerOn=False, template=False, location=vim.vm.RelocateSpec())
    fault = task_error(si, src.CloneVM_Task(folder=src.parent, name="src-win", spec=spec))
    assert isinstance(fault, vim.fault.DuplicateName)


def test_manual_macs_must_be_in_range_and_unique(si):
    src = find_vm(si, "src-linux")
    with pytest.raises(vim.fault.InvalidDeviceSpec):
        src.InstantClone_Task(ic_spec("mac-bad", [nic_edit(src, addressType="manual",
                                                            macAddress="00:50:56:80:00:01")]))
    mac = "00:50:56:01:02:03"
    first = instant_clone(si, src, "mac-1", [nic_edit(src, addressType="manual", macAddress=mac)])
    assert (nic_of(first).macAddress, nic_of(first).addressType) == (mac, "manual")
    fault = task_error(si, src.InstantClone_Task(ic_spec("mac-2", [nic_edit(src, addressType="manual",
                                                                           macAddress=mac.upper())])))
    assert isinstance(fault, vmodl.fault.InvalidArgument) and mac in fault.msg
    with pytest.raises(StopIteration):
        find_vm(si, "mac-2")
    # freed when its owner goes
    WaitForTask(first.PowerOffVM_Task(), si=si)
    WaitForTask(first.Destroy_Task(), si=si)
    second = instant_clone(si, src, "mac-2", [nic_edit(src, addressType="manual", macAddress=mac)])
    assert nic_of(second).macAddress == mac
    # generated MACs never collide
    macs = [nic_of(instant_clone(si, src, f"auto-{i}")).macAddress for i in range(5)]
    assert len(set(macs + [mac, nic_of(src).macAddress])) == 7


def test_instant_clone_device_changes_are_nic_edits_only(si):
    src = find_vm(si, "src-linux")
    disk_edit = vim.vm.device.VirtualDeviceSpec(operation="edit", device=vim.vm.device.VirtualDisk(key=2000))
    with pytest.raises(vmodl.fault.InvalidArgument) as info:
        src.InstantClone_Task(ic_spec("dev-1", [disk_edit]))
    assert "deviceChange[0]" in info.value.invalidProperty
    nic_add = vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.VirtualVmxnet3(key=-1))
    with pytest.raises(vmodl.fault.InvalidArgument):
        src.InstantClone_Task(ic_spec("dev-2", [nic_add]))
    with pytest.raises(vim.fault.InvalidDeviceSpec):  # an edit of a NIC the source doesn't have
        src.InstantClone_Task(ic_spec("dev-3", [vim.vm.device.VirtualDeviceSpec(
            operation="edit", device=vim.vm.device.VirtualVmxnet3(key=4999))]))
    isolated = find(si, vim.Network, "isolated")
    moved = instant_clone(si, src, "dev-ok", [nic_edit(
        src, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="isolated", network=isolated))])
    assert moved.network == [isolated]


def test_migrate_connect_disconnect_leaves_the_clone_nic_disconnected(si):
    src = find_vm(si, "src-linux")
    plain = instant_clone(si, src, "conn-default")
    assert nic_of(plain).connectable.connected is True
    edit = nic_edit(src, connectable=vim.vm.device.VirtualDevice.ConnectInfo(
        migrateConnect="disconnect", startConnected=True, allowGuestControl=True, connected=True))
    clone = instant_clone(si, src, "conn-off", [edit])
    assert nic_of(clone).connectable.connected is False
    assert [n.connected for n in clone.guest.net] == [False]
    assert nic_of(src).connectable.connected is True  # the source is untouched


def test_reconfigure_and_template_edges_are_proper_faults(si):
    src = find_vm(si, "src-linux")
    cdrom = vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.VirtualCdrom(key=-1))
    with pytest.raises(vmodl.fault.NotSupported):  # NICs and disks only
        src.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[cdrom]))
    with pytest.raises(vmodl.fault.NotSupported):  # not a template
        src.MarkAsVirtualMachine(pool=src.resourcePool)
    with pytest.raises(vim.fault.InvalidPowerState):
        src.MarkAsTemplate()


# memory -----------------------------------------------------------------------------------------
def counter_ids(si):
    return {f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}": c.key for c in si.content.perfManager.perfCounter}


def latest(si, entity, names):
    ids = counter_ids(si)
    spec = PM.QuerySpec(entity=entity, intervalId=20, maxSample=1,
                        metricId=[PM.MetricId(counterId=ids[n], instance="") for n in names])
    [metric] = si.content.perfManager.QueryPerf([spec])
    by_id = {s.id.counterId: s.value[-1] for s in metric.value}
    return {n: by_id[ids[n]] for n in names}


def test_pshare_clone_shares_at_fork_then_diverges(tmp_path):
    # 4 simulated MB/s of writes at 1/200 time: a clone diverges by ~800 MB each real second,
    # until half of its pages are its own (the divergence cap)
    memory = {"write_rate_mb_s": 4.0, "divergence_cap": 0.5, "touched_fraction": 0.6}
    with world_twin(tmp_path, time_scale=0.005, vms=[one_vm()], memory=memory) as (_, si):
        src = find_vm(si, "src-linux")
        clone = instant_clone(si, src, "ps-1")
        touched = int(4096 * 0.6)
        floor = int(touched - touched * 0.5)
        first = clone.summary.quickStats
        assert first.sharedMemory > floor  # right after the fork: more than it will ever share again
        assert first.sharedMemory + first.privateMemory == touched
        time.sleep(0.3)
        later = clone.summary.quickStats
        assert later.sharedMemory < first.sharedMemory
        assert later.privateMemory > first.privateMemory
        time.sleep(1.8)  # past the cap
        assert clone.summary.quickStats.sharedMemory == floor


def test_host_pshare_counters_match_quick_stats(tmp_path):
    vms = [one_vm(), one_vm("loner", memory_mb=2048, snapshots=[])]
    with world_twin(tmp_path, vms=vms, memory={"write_rate_mb_s": 0.0}) as (_, si):
        src = find_vm(si, "src-linux")
        clones = [instant_clone(si, src, f"share-{i}") for i in range(3)]
        time.sleep(0.1)  # > 20 simulated seconds: the latest realtime sample includes every clone
        host = src.runtime.host
        names = ["mem.shared.average", "mem.sharedcommon.average", "mem.zero.average", "mem.consumed.average",
                 "mem.granted.average", "mem.overhead.average"]
        counters = latest(si, host, names)
        group = [src, *clones]
        loner = find_vm(si, "loner")
        qs = {vm.name: vm.summary.quickStats for vm in [*group, loner]}
        shared_mb = sum(q.sharedMemory for q in qs.values())
        private_mb = sum(q.privateMemory for q in qs.values())
        common_mb = max(qs[vm.name].sharedMemory for vm in group) + (1 if qs["loner"].sharedMemory else 0)
        assert counters["mem.shared.average"] == shared_mb * 1024
        assert counters["mem.sharedcommon.average"] == common_mb * 1024
        assert counters["mem.zero.average"] == qs["loner"].sharedMemory * 1024
        assert counters["mem.overhead.average"] == sum(q.consumedOverheadMemory for q in qs.values()) * 1024
        assert counters["mem.consumed.average"] == (private_mb + common_mb) * 1024 + counters["mem.overhead.average"]
        assert counters["mem.granted.average"] == sum(q.guestMemoryUsage for q in qs.values()) * 1024
        saved = counters["mem.shared.average"] - counters["mem.sharedcommon.average"]
        assert saved >= 3 * qs["share-0"].sharedMemory * 1024 > 0  # three clones' worth of pages saved
        # host quickStats and the VM counters tell the same story
        assert host.summary.quickStats.overallMemoryUsage == counters["mem.consumed.average"] // 1024
        vm_counters = latest(si, clones[0], ["mem.shared.average", "mem.consumed.average", "mem.granted.average"])
        assert vm_counters == {"mem.shared.average": qs["share-0"].sharedMemory * 1024,
                               "mem.consumed.average": qs["share-0"].privateMemory * 1024,
                               "mem.granted.average": qs["share-0"].guestMemoryUsage * 1024}


def test_insufficient_memory_when_the_host_is_full(tmp_path):
    hosts = [{"name": "esx-01", "memory_gib": 3, "cpu_cores": 8}]
    memory = {"write_rate_mb_s": 1_000_000.0, "divergence_cap": 1.0}
    with world_twin(tmp_path, hosts=hosts, vms=[one_vm()], memory=memory) as (_, si):
        src = find_vm(si, "src-linux")
        instant_clone(si, src, "mem-1")  # fits when forked, then writes all its pages privately
        time.sleep(0.05)
        fault = task_error(si, src.InstantClone_Task(ic_spec("mem-2")))
        assert isinstance(fault, vim.fault.InsufficientResourcesFault)
        with pytest.raises(StopIteration):
            find_vm(si, "mem-2")
        check = si.content.vmProvisioningChecker.CheckInstantClone_Task(vm=src, spec=ic_spec("mem-3"))
        WaitForTask(check, si=si)
        assert any(isinstance(e, vim.fault.InsufficientResourcesFault) for e in check.info.result[0].error)


# queueing ---------------------------------------------------------------------------------------
def test_per_host_slots_queue_tasks(tmp_path):
    with world_twin(tmp_path, limits={"per_host": 2}, latency={"instant": 200.0, "jitter": 0.0}) as (_, si):
        src = find_vm(si, "src-linux")
        tasks = [src.InstantClone_Task(ic_spec(f"q-{i}")) for i in range(6)]
        for t in tasks:
            WaitForTask(t, si=si)
        infos = [t.info for t in tasks]
        assert all(i.state == "success" for i in infos)
        waits = sorted((i.startTime - i.queueTime).total_seconds() for i in infos)
        assert waits[:2] == pytest.approx([0, 0], abs=0.1)  # two start at once
        assert waits[-1] >= 0.3  # the last pair waited for two rounds of 0.2 s
        # never more than two running at the same time
        spans = [(i.startTime, i.completeTime) for i in infos]
        for start, _ in spans:
            running = sum(1 for s, e in spans if s <= start < e)
            assert running <= 2


# provisioning checks ----------------------------------------------------------------------------
def test_check_instant_clone_reports_a_powered_off_source(si):
    src = find_vm(si, "src-linux")
    checker = si.content.vmProvisioningChecker
    ok = checker.CheckInstantClone_Task(vm=src, spec=ic_spec("probe-1"))
    WaitForTask(ok, si=si)
    assert ok.info.result[0].error == [] and ok.info.result[0].vm == src
    WaitForTask(src.PowerOffVM_Task(), si=si)
    bad = checker.CheckInstantClone_Task(vm=src, spec=ic_spec("probe-2"))
    WaitForTask(bad, si=si)
    assert any(isinstance(e, vim.fault.InvalidState) for e in bad.info.result[0].error)
    dup = checker.CheckInstantClone_Task(vm=src, spec=ic_spec("src-win"))
    WaitForTask(dup, si=si)
    assert any(isinstance(e, vim.fault.DuplicateName) for e in dup.info.result[0].error)
    with pytest.raises(StopIteration):  # checking never creates anything
        find_vm(si, "probe-1")


def test_check_clone_reports_spec_problems(si):
    src = find_vm(si, "src-linux")
    checker = si.content.vmProvisioningChecker
    snap = src.snapshot.rootSnapshotList[0].snapshot
    good = vim.vm.CloneSpec(snapshot=snap, powerOn=False, template=False,
                            location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"))
    task = checker.CheckClone_Task(vm=src, folder=src.parent, name="c-ok", spec=good)
    WaitForTask(task, si=si)
    assert task.info.result[0].error == []
    no_snap = vim.vm.CloneSpec(powerOn=False, template=False,
                               location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"))
    task = checker.CheckClone_Task(vm=src, folder=src.parent, name="src-win", spec=no_snap)
    WaitForTask(task, si=si)
    kinds = {type(e) for e in task.info.result[0].error}
    assert vmodl.fault.InvalidArgument in kinds and vim.fault.DuplicateName in kinds
