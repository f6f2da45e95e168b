"""The twin's ContainerView and ListView, driven by stock pyVmomi over TLS.

Containment as vCenter defines it for every kind of container (datacenter, folder, cluster,
resource pool, host), with and without recursion; views that follow the inventory, also through
WaitForUpdatesEx; ListView's whole life cycle; a destroyed view faults.
"""

from __future__ import annotations

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.twin import connect, find, find_vm

PC = vmodl.query.PropertyCollector
HOSTS = ["esx-01", "esx-02", "esx-03", "esx-04"]


def view_of(si, container, kinds, recursive):
    return si.content.viewManager.CreateContainerView(container, kinds, recursive)


def names(view) -> list[str]:
    return sorted(e.name for e in view.view)


def retrieve_view(si, view) -> list:
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view)],
                         propSet=[PC.PropertySpec(type=type(view), pathSet=["view"])])
    res = si.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    return list(res.objects[0].propSet[0].val) if res and res.objects[0].propSet else []


def instant_clone(si, src, name):
    task = src.InstantClone_Task(vim.vm.InstantCloneSpec(name=name, location=vim.vm.RelocateSpec()))
    WaitForTask(task, si=si)
    return task.info.result


def test_each_container_lists_what_vcenter_puts_in_it(si):
    dc = find(si, vim.Datacenter, "dc1")
    cluster = find(si, vim.ClusterComputeResource, "cluster1")
    pool = cluster.resourcePool
    esx1, esx2 = find(si, vim.HostSystem, "esx-01"), find(si, vim.HostSystem, "esx-02")
    assert names(view_of(si, dc, [], False)) == ["datastore", "host", "network", "vm"]
    assert names(view_of(si, cluster, [], False)) == ["Resources", *HOSTS]
    assert names(view_of(si, cluster, [vim.VirtualMachine], False)) == []  # VMs sit one level down
    # every VM appears once, although the cluster reaches it through its host and its pool
    assert [e.name for e in view_of(si, cluster, [vim.VirtualMachine], True).view].count("src-linux") == 1
    assert names(view_of(si, cluster, [vim.VirtualMachine], True)) == ["src-linux", "src-win"]
    assert names(view_of(si, pool, [], False)) == ["src-linux", "src-win"]
    assert names(view_of(si, esx1, [vim.VirtualMachine], False)) == ["src-linux", "src-win"]
    assert names(view_of(si, esx2, [vim.VirtualMachine], True)) == []
    assert names(view_of(si, dc.hostFolder, [vim.ResourcePool], True)) == ["Resources"]
    assert names(view_of(si, dc.networkFolder, [vim.Network], False)) == ["VM Network", "dvpg-vdi", "isolated"]
    # a ManagedEntity type filter matches its subtypes
    assert names(view_of(si, cluster, [vim.ComputeResource, vim.HostSystem], False)) == HOSTS


def test_only_containers_and_entity_types_are_accepted(si):
    src = find_vm(si, "src-linux")
    with pytest.raises(vmodl.fault.InvalidArgument) as bad_container:
        view_of(si, src, [vim.VirtualMachine], True)
    assert bad_container.value.invalidProperty == "container"
    ds = find(si, vim.Datastore, "ds-ssd")
    with pytest.raises(vmodl.fault.InvalidArgument):
        view_of(si, ds, [], False)
    with pytest.raises(vmodl.fault.InvalidArgument) as bad_type:
        view_of(si, si.content.rootFolder, [vim.TaskManager], True)
    assert bad_type.value.invalidProperty == "type"


def test_a_template_is_in_its_host_but_in_no_pool(si):
    src = find_vm(si, "src-linux")
    clone = find_vm(si, "src-win").CloneVM_Task(src.parent, "tpl", vim.vm.CloneSpec(location=vim.vm.RelocateSpec(),
                                                                                     template=True))
    WaitForTask(clone, si=si)
    tpl = clone.info.result
    assert tpl.config.template is True
    pool = find(si, vim.ClusterComputeResource, "cluster1").resourcePool
    host = tpl.runtime.host
    assert "tpl" not in names(view_of(si, pool, [vim.VirtualMachine], False))
    assert "tpl" in names(view_of(si, host, [vim.VirtualMachine], False))
    assert "tpl" in names(view_of(si, si.content.rootFolder, [vim.VirtualMachine], True))


def test_a_view_follows_the_inventory_also_through_wait_for_updates(si):
    src = find_vm(si, "src-linux")
    host = src.runtime.host
    view = view_of(si, host, [vim.VirtualMachine], False)
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view)],
                                  propSet=[PC.PropertySpec(type=vim.view.ContainerView, pathSet=["view"])]),
                    partialUpdates=False)
    first = pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0))
    assert len(first.filterSet[0].objectSet[0].changeSet[0].val) == 2
    clone = instant_clone(si, src, "view-follow")
    version = first.version
    seen: list = []
    for _ in range(20):  # task objects come and go meanwhile; wait for the view's own change
        upd = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=5))
        assert upd is not None, "the view's change was never reported"
        version = upd.version
        seen = [c.val for fs in upd.filterSet for ou in fs.objectSet for c in ou.changeSet]
        if seen and len(seen[-1]) == 3:
            break
    assert clone in seen[-1]
    assert sorted(e.name for e in view.view) == ["src-linux", "src-win", "view-follow"]
    pc.DestroyPropertyCollector()


def test_list_view_life_cycle(si):
    vm_mgr = si.content.viewManager
    src, win = find_vm(si, "src-linux"), find_vm(si, "src-win")
    hosts = view_of(si, si.content.rootFolder, [vim.HostSystem], True)
    lv = vm_mgr.CreateListView([src, src])
    assert lv.view == [src]  # each object once
    gone = vim.VirtualMachine("vm-404")
    assert lv.ModifyListView(add=[win, gone], remove=[src]) == [gone]  # unresolved objects are returned
    assert lv.view == [win]
    assert lv.ResetListView(obj=list(hosts.view)) == []
    assert sorted(h.name for h in lv.view) == HOSTS
    stores = view_of(si, si.content.rootFolder, [vim.Datastore], True)
    lv.ResetListViewFromView(view=stores)
    assert sorted(d.name for d in lv.view) == ["ds-hdd", "ds-ssd"]
    copy = vm_mgr.CreateListViewFromView(view=hosts)
    assert sorted(h.name for h in copy.view) == HOSTS
    assert {v._moId for v in vm_mgr.viewList} >= {lv._moId, copy._moId, hosts._moId, stores._moId}
    # an object destroyed after it was listed leaves the view
    clone = instant_clone(si, src, "lv-gone")
    lv.ModifyListView(add=[clone])
    WaitForTask(clone.PowerOffVM_Task(), si=si)
    WaitForTask(clone.Destroy_Task(), si=si)
    assert sorted(d.name for d in lv.view) == ["ds-hdd", "ds-ssd"]
    lv.DestroyView()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        retrieve_view(si, lv)
    assert lv._moId not in {v._moId for v in vm_mgr.viewList}


def test_views_belong_to_their_session(twin, si):
    view = view_of(si, si.content.rootFolder, [vim.HostSystem], True)
    other = connect(twin)
    try:
        stranger = vim.view.ContainerView(view._moId, other._stub)
        with pytest.raises(vmodl.fault.ManagedObjectNotFound):
            stranger.DestroyView()
        assert other.content.viewManager.viewList == []
    finally:
        from pyVim.connect import Disconnect

        Disconnect(other)
    assert sorted(h.name for h in retrieve_view(si, view)) == HOSTS


def test_a_missing_object_faults_unless_the_spec_asks_to_leave_it_out(si):
    lv = si.content.viewManager.CreateListView([find_vm(si, "src-linux")])
    lv.DestroyView()
    gone = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=lv)],
                         propSet=[PC.PropertySpec(type=vim.view.ListView, pathSet=["view"])])
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        si.content.propertyCollector.RetrievePropertiesEx([gone], PC.RetrieveOptions())
    gone.reportMissingObjectsInResults = True
    gone.objectSet.append(PC.ObjectSpec(obj=si.content.rootFolder))
    gone.propSet.append(PC.PropertySpec(type=vim.Folder, pathSet=["name"]))
    result = si.content.propertyCollector.RetrievePropertiesEx([gone], PC.RetrieveOptions())
    assert [oc.obj for oc in result.objects] == [si.content.rootFolder]
