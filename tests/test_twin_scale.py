"""The twin at O(1) per clone operation: a task, a clone or a destroy costs a property collector wait
what it changed, not the size of the inventory; views, filters, folder names, recentTask and host
memory admission stay exact while they are kept incrementally. Driven by stock pyVmomi."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from forkscale.sim import collector as sim_collector
from forkscale.sim import views as sim_views
from tests.fixtures.twin import find, find_vm

PC = vmodl.query.PropertyCollector
FLEET = 300


def add_vms(twin: Any, n: int) -> None:
    """n plain powered-on VMs in the `forkscale` folder, made in-process (fast)."""
    def make(t: Any) -> None:
        from forkscale.sim.builder import make_vm
        from forkscale.sim.inventory import Datastore, Folder, Host, Network

        w = t.world
        folder = next(f for f in w.instances(Folder) if f.name == "forkscale")
        host = next(h for h in w.instances(Host) if h.name == "esx-02")
        ds = next(d for d in w.instances(Datastore) if d.name == "ds-ssd")
        net = next(x for x in w.instances(Network) if x.name == "VM Network")
        for i in range(n):
            make_vm(w, {"name": f"fill-{i:04d}", "memory_mb": 64, "cpus": 1, "disk_gib": 1, "guest_id": "otherGuest",
                        "guest_full_name": "Other", "power": "on"}, folder=folder, host=host,
                    pool=host.parent.root_pool, datastore=ds, network=net)
    twin.call(make)


def vm_filter(si: Any, paths: list[str]) -> tuple[Any, Any]:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
        PC.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=paths)]), True)
    return pc, view


def drain(pc: Any, version: str, state: dict[str, str], page: int | None = None, wait: int = 0) -> str:
    """Apply updates (every page of a truncated set) to name-by-moid `state`; the last version."""
    while True:
        update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=wait, maxObjectUpdates=page))
        if update is None:
            return version
        version = update.version
        for fs in update.filterSet:
            for ou in fs.objectSet:
                if ou.kind == "leave":
                    state.pop(ou.obj._moId, None)
                else:
                    for c in ou.changeSet:
                        if c.name == "name":
                            state[ou.obj._moId] = c.val
        if not update.truncated:
            return version


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How many objects the twin's filters read, and how often each view was rebuilt from scratch."""
    counts: dict[str, int] = {"reads": 0}
    read, rebuild = sim_collector.read_props, sim_views.ContainerView._recompute

    def reads(mo: Any, paths: list[str], strict: bool = True) -> Any:
        counts["reads"] += 1
        return read(mo, paths, strict)

    def rebuilds(self: Any) -> None:
        counts[self.moid] = counts.get(self.moid, 0) + 1  # per view
        rebuild(self)

    monkeypatch.setattr(sim_collector, "read_props", reads)
    monkeypatch.setattr(sim_views.ContainerView, "_recompute", rebuilds)
    yield counts


def test_a_task_a_clone_and_a_destroy_cost_a_wait_what_they_changed_not_the_inventory(twin, si, counted):
    add_vms(twin, FLEET)
    twin.admin("freeze", vm="src-linux")
    pc, view = vm_filter(si, ["name", "runtime.powerState"])
    state: dict[str, str] = {}
    version = drain(pc, "", state)
    assert len(state) == FLEET + 2 and counted[view._moId] == 1
    counted["reads"] = 0
    src = find_vm(si, "src-linux")
    task = src.InstantClone_Task(vim.vm.InstantCloneSpec(name="c-1", location=vim.vm.RelocateSpec()))
    WaitForTask(task, si=si)
    version = drain(pc, version, state)
    WaitForTask(find_vm(si, "fill-0007").PowerOffVM_Task(), si=si)
    WaitForTask(find_vm(si, "fill-0007").Destroy_Task(), si=si)
    version = drain(pc, version, state)
    assert "c-1" in state.values() and "fill-0007" not in state.values() and len(state) == FLEET + 2
    # the clone, its source and the destroyed VM, each read a few times: nothing like the 300 others
    assert counted["reads"] <= 12, counted
    assert counted[view._moId] == 1  # the view followed the arrivals and departures, never rebuilt


def test_views_and_filters_stay_exact_through_clones_destroys_renames_folders_and_pages(twin, si):
    add_vms(twin, 40)
    twin.admin("freeze", vm="src-linux")
    pc, view = vm_filter(si, ["name"])
    state: dict[str, str] = {}
    version = drain(pc, "", state, page=7)
    src = find_vm(si, "src-linux")
    folder = find(si, vim.Folder, "forkscale")
    for i in range(6):
        WaitForTask(src.InstantClone_Task(vim.vm.InstantCloneSpec(
            name=f"c-{i}", location=vim.vm.RelocateSpec(folder=folder))), si=si)
    for name in ("fill-0001", "c-2"):
        vm = find_vm(si, name)
        WaitForTask(vm.PowerOffVM_Task(), si=si)
        WaitForTask(vm.Destroy_Task(), si=si)
    WaitForTask(find_vm(si, "fill-0002").ReconfigVM_Task(vim.vm.ConfigSpec(name="renamed")), si=si)
    sub = folder.CreateFolder("sub")  # an entity moved under a parent: views start over
    WaitForTask(src.InstantClone_Task(vim.vm.InstantCloneSpec(name="in-sub", location=vim.vm.RelocateSpec(folder=sub))),
                si=si)
    drain(pc, version, state, page=3)
    truth = {vm._moId: vm.name for vm in view.view}
    assert state == truth
    names = set(truth.values())
    assert {"renamed", "in-sub", "c-5"} <= names and not {"fill-0001", "c-2", "fill-0002"} & names


def test_a_folder_knows_its_names_after_a_rename(twin, si):
    twin.admin("freeze", vm="src-linux")
    src = find_vm(si, "src-linux")
    folder = find(si, vim.Folder, "forkscale")
    spec = vim.vm.InstantCloneSpec(name="first", location=vim.vm.RelocateSpec(folder=folder))
    WaitForTask(src.InstantClone_Task(spec), si=si)
    WaitForTask(find_vm(si, "first").ReconfigVM_Task(vim.vm.ConfigSpec(name="second")), si=si)
    WaitForTask(src.InstantClone_Task(spec), si=si)  # "first" is free again
    with pytest.raises(vim.fault.DuplicateName):
        WaitForTask(src.InstantClone_Task(vim.vm.InstantCloneSpec(
            name="second", location=vim.vm.RelocateSpec(folder=folder))), si=si)
    search = si.content.searchIndex
    assert search.FindChild(folder, "second").name == "second"
    assert search.FindChild(folder, "first").name == "first"


def test_recent_tasks_keep_the_latest_finished_ones_and_drop_the_oldest(twin, si):
    twin.call(lambda t: setattr(t.world.tasks, "keep_completed", 5))
    vm = find_vm(si, "src-win")
    tasks = []
    for _ in range(4):
        for method in (vm.PowerOffVM_Task, vm.PowerOnVM_Task):
            tasks.append(method())
            WaitForTask(tasks[-1], si=si)
    recent = [t._moId for t in si.content.taskManager.recentTask]
    assert len(recent) <= 6  # five finished (the one just submitted may be among them)
    assert tasks[-1]._moId in recent and tasks[0]._moId not in recent


def test_memory_admission_adds_each_fork_to_its_count_and_never_counts_less_than_a_recount(twin, si):
    twin.admin("freeze", vm="src-linux")
    src = find_vm(si, "src-linux")

    def account(t: Any) -> tuple[int, int, int]:
        from forkscale.sim.inventory import Host
        from forkscale.sim.memory import host_memory

        host = next(h for h in t.world.instances(Host) if h.name == "esx-01")
        exact = host_memory(host, t.world.sim_seconds())["consumed"] // 1024
        return host.admission.consumed_mb, exact, host.mem_epoch

    twin.call(lambda t: setattr(t.world.memory, "write_rate_mb_s", 0.0))  # no divergence: sums stand still
    for i in range(8):
        WaitForTask(src.InstantClone_Task(vim.vm.InstantCloneSpec(name=f"m-{i}", location=vim.vm.RelocateSpec())),
                    si=si)
        counted, exact, _ = twin.call(account)
        assert exact <= counted <= exact + 4096, (i, counted, exact)  # full side: the source's re-shared pages


def test_an_update_set_is_written_exactly_as_pyvmomis_serializer_writes_it():
    """The twin writes each property change itself (thousands per first report); byte for byte
    what pyVmomi's own serializer writes, for every kind of value an update carries."""
    from io import StringIO

    from pyVmomi import VmomiSupport
    from pyVmomi.SoapAdapter import SoapSerializer
    from pyVmomi.VmomiSupport import Object

    from forkscale.sim import soap

    values = ["a <b> & 'c'", "", True, False, VmomiSupport.long(2**40), 7,
              vim.VirtualMachine.PowerState("poweredOn"), vim.Folder("group-v1"),
              vim.option.OptionValue(key="k", value="v"), VmomiSupport.GetVmodlType("vim.Datastore[]")(
                  [vim.Datastore("ds-1")])]
    update = PC.UpdateSet(version="1", truncated=False, filterSet=[PC.FilterUpdate(
        filter=PC.Filter("f-1"), objectSet=[PC.ObjectUpdate(kind="enter", obj=vim.VirtualMachine("vm-1"), changeSet=[
            PC.Change(name=f"p{i}", op="assign", val=v) for i, v in enumerate(values)] + [
            PC.Change(name="gone", op="assign")])])])
    info = Object(name="returnval", type=PC.UpdateSet, version=soap.VERSION, flags=0)
    class Walked(soap._Serializer):  # the twin's serializer, but pyVmomi walks each Change
        def _Serialize(self, val: Any, info: Any, defNS: str) -> None:  # noqa: N802, N803
            if type(val) is PC.Change:
                SoapSerializer._Serialize(self, val, info, defNS)
            else:
                super()._Serialize(val, info, defNS)

    walked = StringIO()
    SoapSerializer.Serialize(Walked(walked), update, info)
    assert soap._serialize(update, info) == walked.getvalue()


def test_views_of_hosts_and_pools_follow_vms_that_arrive_move_and_become_templates(twin, si):
    """Kept incrementally, a view of a host (or a pool) still lists exactly the VMs a walk finds."""
    twin.admin("freeze", vm="src-linux")
    hosts = {h.name: h for h in find(si, vim.ClusterComputeResource, "cluster1").host}
    pool = find(si, vim.ClusterComputeResource, "cluster1").resourcePool
    vm_view = si.content.viewManager.CreateContainerView
    on1, on2, in_pool = (vm_view(hosts["esx-01"], [vim.VirtualMachine], False),
                         vm_view(hosts["esx-02"], [vim.VirtualMachine], False),
                         vm_view(pool, [vim.VirtualMachine], True))
    before = {v.name for v in on1.view}
    WaitForTask(find_vm(si, "src-linux").InstantClone_Task(vim.vm.InstantCloneSpec(
        name="hv-1", location=vim.vm.RelocateSpec())), si=si)
    assert {v.name for v in on1.view} == before | {"hv-1"}
    win = find_vm(si, "src-win")
    WaitForTask(win.PowerOffVM_Task(), si=si)
    WaitForTask(win.RelocateVM_Task(vim.vm.RelocateSpec(host=hosts["esx-02"])), si=si)
    assert "src-win" not in {v.name for v in on1.view} and "src-win" in {v.name for v in on2.view}
    win.MarkAsTemplate()
    assert "src-win" not in {v.name for v in in_pool.view} and "hv-1" in {v.name for v in in_pool.view}
