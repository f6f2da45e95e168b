"""Child resource pools on the twin through stock pyVmomi: created with a complete, valid
allocation (refused otherwise, naming the allocation), VMs and pools moved into them, views rooted
at them, clones placed in them, reconfigured, and destroyed (their VMs and pools go up)."""

from __future__ import annotations

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find, find_vm
from tests.twin_helpers import events_of, fault_of, run

PC = vmodl.query.PropertyCollector


def alloc(level: str = "normal", *, reservation: int | None = 0, limit: int = -1, shares: int = 0) -> vim.ResourceAllocationInfo:
    return vim.ResourceAllocationInfo(reservation=reservation, limit=limit, expandableReservation=True,
                                      shares=vim.SharesInfo(level=level, shares=shares))


def spec(cpu: vim.ResourceAllocationInfo | None = None, mem: vim.ResourceAllocationInfo | None = None) -> vim.ResourceConfigSpec:
    return vim.ResourceConfigSpec(cpuAllocation=cpu or alloc(), memoryAllocation=mem or alloc())


def root(si) -> vim.ResourcePool:
    return find(si, vim.ClusterComputeResource, "cluster1").resourcePool


def view_names(si, container, recursive: bool) -> list[str]:
    view = si.content.viewManager.CreateContainerView(container, [vim.VirtualMachine], recursive)
    try:
        return sorted(v.name for v in view.view)
    finally:
        view.DestroyView()


def pool_events(si, pool) -> list[str]:
    collector = si.content.eventManager.CreateCollectorForEvents(
        vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(entity=pool, recursion="self")))
    try:
        return [type(e).__name__.rsplit(".", 1)[-1] for e in collector.latestPage]
    finally:
        collector.DestroyCollector()


def test_a_child_pool_holds_its_allocation_and_its_vms(si):
    parent = root(si)
    pool = parent.CreateResourcePool("gold", spec(cpu=alloc("high", reservation=1000, limit=4000),
                                                  mem=alloc("custom", shares=500)))
    assert pool in parent.resourcePool and pool.parent == parent and pool.owner == parent.owner
    cpu, mem = pool.config.cpuAllocation, pool.config.memoryAllocation
    assert (cpu.reservation, cpu.limit, cpu.shares.level, cpu.shares.shares) == (1000, 4000, "high", 8000)
    assert (mem.shares.level, mem.shares.shares, mem.limit) == ("custom", 500, -1)
    assert "ResourcePoolCreatedEvent" in pool_events(si, pool)

    src = find_vm(si, "src-linux")
    standing = si.content.viewManager.CreateContainerView(pool, [vim.VirtualMachine], False)
    parents = si.content.viewManager.CreateContainerView(parent, [vim.VirtualMachine], False)
    assert standing.view == [] and src in parents.view
    pool.MoveIntoResourcePool([src])
    assert standing.view == [src] and src not in parents.view  # views made before the move follow it
    assert src.resourcePool == pool and src in pool.vm and src not in parent.vm
    assert "VmResourcePoolMovedEvent" in events_of(si, src)
    # views rooted at the pool, its parent and the cluster all see the VM where it now is
    assert view_names(si, pool, recursive=False) == ["src-linux"]
    assert "src-linux" not in view_names(si, parent, recursive=False)
    assert "src-linux" in view_names(si, parent, recursive=True)
    assert "src-linux" in view_names(si, find(si, vim.ClusterComputeResource, "cluster1"), recursive=True)


def test_a_clone_placed_in_a_child_pool_runs_there(si):
    pool = root(si).CreateResourcePool("clones", spec())
    src = find_vm(si, "src-linux")
    clone = run(si, src.InstantClone_Task(vim.vm.InstantCloneSpec(name="in-pool",
                                                                  location=vim.vm.RelocateSpec(pool=pool))))
    assert clone.resourcePool == pool and view_names(si, pool, recursive=True) == ["in-pool"]


@pytest.mark.parametrize("bad, prop", [
    (spec(cpu=vim.ResourceAllocationInfo(reservation=0, limit=-1, expandableReservation=True)), "spec.cpuAllocation"),
    (spec(mem=alloc(reservation=None)), "spec.memoryAllocation"),
    (spec(cpu=alloc(reservation=-5)), "spec.cpuAllocation"),
    (spec(mem=alloc(limit=-2)), "spec.memoryAllocation"),
    (spec(cpu=alloc("custom", shares=-1)), "spec.cpuAllocation"),
])
def test_an_incomplete_or_invalid_allocation_is_refused_naming_it(si, bad, prop):
    parent = root(si)
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        parent.CreateResourcePool("bad", bad)
    assert err.value.invalidProperty == prop
    assert not parent.resourcePool


def test_names_are_unique_among_siblings_and_pools_never_go_below_themselves(si):
    parent = root(si)
    a = parent.CreateResourcePool("a", spec())
    with pytest.raises(vim.fault.DuplicateName):
        parent.CreateResourcePool("a", spec())
    with pytest.raises(vim.fault.InvalidName):
        parent.CreateResourcePool("a/b", spec())
    b = a.CreateResourcePool("b", spec())
    with pytest.raises(vmodl.fault.InvalidArgument):
        b.MoveIntoResourcePool([a])
    with pytest.raises(vmodl.fault.InvalidArgument):
        a.MoveIntoResourcePool([parent])  # the root pool moves nowhere
    parent.MoveIntoResourcePool([b])
    assert b.parent == parent and sorted(p.name for p in parent.resourcePool) == ["a", "b"]
    assert "ResourcePoolMovedEvent" in pool_events(si, b)


def test_update_config_renames_and_changes_only_what_it_names(si):
    pool = root(si).CreateResourcePool("silver", spec(cpu=alloc(reservation=500)))
    pool.UpdateConfig(name="bronze", config=vim.ResourceConfigSpec(
        cpuAllocation=vim.ResourceAllocationInfo(limit=2000), memoryAllocation=vim.ResourceAllocationInfo()))
    assert pool.name == "bronze"
    assert (pool.config.cpuAllocation.reservation, pool.config.cpuAllocation.limit) == (500, 2000)
    with pytest.raises(vmodl.fault.InvalidArgument):
        pool.UpdateConfig(config=vim.ResourceConfigSpec(cpuAllocation=alloc(reservation=-1),
                                                        memoryAllocation=vim.ResourceAllocationInfo()))
    assert "ResourcePoolReconfiguredEvent" in pool_events(si, pool)


def test_destroying_a_pool_hands_its_vms_and_pools_to_its_parent(si):
    parent = root(si)
    outer = parent.CreateResourcePool("outer", spec())
    inner = outer.CreateResourcePool("inner", spec())
    src = find_vm(si, "src-win")
    outer.MoveIntoResourcePool([src])
    standing = si.content.viewManager.CreateContainerView(parent, [vim.VirtualMachine, vim.ResourcePool], False)
    assert src not in standing.view and outer in standing.view
    run(si, outer.Destroy_Task())
    assert src.resourcePool == parent
    assert src in standing.view and inner in standing.view and outer not in standing.view
    assert inner.parent == parent and [p.name for p in parent.resourcePool] == ["inner"]
    fault = fault_of(si, parent.Destroy_Task())
    assert isinstance(fault, vmodl.fault.InvalidArgument)
    deep = inner.CreateResourcePool("deep", spec())
    deep.MoveIntoResourcePool([src])
    parent.DestroyChildren()
    assert parent.resourcePool == [] and src.resourcePool == parent
