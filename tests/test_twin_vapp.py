"""vApps on the twin through stock pyVmomi: created in a cluster's pool with a complete allocation
and a valid VAppConfigSpec (refused otherwise, naming the property), VMs cloned and created in
them (no folder: `parentVApp`), powered on and off as a unit, seen by views and inventory paths
as vCenter shows them, and destroyed with their VMs (never while one runs)."""

from __future__ import annotations

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find, find_vm
from tests.twin_helpers import events_of, fault_of, run

ALLOC = vim.ResourceAllocationInfo(reservation=0, limit=-1, expandableReservation=True,
                                   shares=vim.SharesInfo(level="normal", shares=0))


def res_spec(cpu: vim.ResourceAllocationInfo = ALLOC) -> vim.ResourceConfigSpec:
    return vim.ResourceConfigSpec(cpuAllocation=cpu, memoryAllocation=ALLOC)


def product(name: str = "web-tier", op: str = "add") -> vim.vApp.ProductSpec:
    return vim.vApp.ProductSpec(operation=op, info=vim.vApp.ProductInfo(key=0, name=name, vendor="forkscale",
                                                                        version="1.0"))


def root(si) -> vim.ResourcePool:
    return find(si, vim.ClusterComputeResource, "cluster1").resourcePool


def make_vapp(si, name: str = "app1") -> vim.VirtualApp:
    return root(si).CreateVApp(name, res_spec(), vim.vApp.VAppConfigSpec(annotation="three tiers",
                                                                          product=[product()]))


def clone_into(si, vapp, name: str, source: str = "src-linux") -> vim.VirtualMachine:
    src = find_vm(si, source)
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=vapp))
    return run(si, src.CloneVM_Task(folder=src.parent, name=name, spec=spec))


def view_names(si, container, recursive: bool, kinds=(vim.VirtualMachine,)) -> list[str]:
    view = si.content.viewManager.CreateContainerView(container, list(kinds), recursive)
    try:
        return sorted(v.name for v in view.view)
    finally:
        view.DestroyView()


def test_a_vapp_sits_in_its_pool_and_its_folder_with_its_configuration(si):
    dc = find(si, vim.Datacenter, "dc1")
    vapp = make_vapp(si)
    assert isinstance(vapp, vim.VirtualApp) and vapp.parent == root(si) and vapp in root(si).resourcePool
    assert vapp.parentFolder == dc.vmFolder and vapp in dc.vmFolder.childEntity and vapp.parentVApp is None
    assert vapp.vAppConfig.annotation == "three tiers" and [p.name for p in vapp.vAppConfig.product] == ["web-tier"]
    assert vapp.summary.vAppState == "stopped" and vapp.summary.product.vendor == "forkscale"
    assert vapp.config.cpuAllocation.shares.shares == 4000 and vapp.owner == root(si).owner
    assert si.content.searchIndex.FindByInventoryPath("dc1/vm/app1") == vapp
    child = vapp.CreateVApp("db", res_spec(), vim.vApp.VAppConfigSpec())
    assert child.parentVApp == vapp and child.parentFolder is None and child.parent == vapp
    assert vapp.resourcePool == [child]


def test_vms_cloned_and_created_in_a_vapp_belong_to_it_not_to_a_folder(si):
    vapp = make_vapp(si)
    web = clone_into(si, vapp, "web-1")
    assert web.parentVApp == vapp and web.parent is None and web.resourcePool == vapp
    assert vapp.vm == [web] and web not in find(si, vim.Datacenter, "dc1").vmFolder.childEntity
    ds = find(si, vim.Datastore, "ds-ssd")
    db = run(si, vapp.CreateChildVM_Task(vim.vm.ConfigSpec(
        name="db-1", memoryMB=512, numCPUs=1, guestId="otherLinux64Guest",
        files=vim.vm.FileInfo(vmPathName=f"[{ds.name}]"))))
    assert db.parentVApp == vapp and sorted(v.name for v in vapp.vm) == ["db-1", "web-1"]
    assert vapp.datastore and vapp.vAppConfig.entityConfig[0].key in vapp.vm
    # names are unique within the vApp; inventory paths go through it, as govc's do
    src = find_vm(si, "src-linux")
    fault = fault_of(si, src.CloneVM_Task(folder=src.parent, name="web-1",
                                          spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=vapp))))
    assert isinstance(fault, vim.fault.DuplicateName)
    index = si.content.searchIndex
    assert index.FindByInventoryPath("dc1/vm/app1/web-1") == web
    assert index.FindChild(vapp, "db-1") == db and index.FindChild(vapp, "nope") is None


def test_views_rooted_at_a_vapp_and_above_it_list_its_vms(si):
    vapp = make_vapp(si)
    child = vapp.CreateVApp("inner", res_spec(), vim.vApp.VAppConfigSpec())
    standing = si.content.viewManager.CreateContainerView(vapp, [vim.VirtualMachine], True)
    assert standing.view == []
    clone_into(si, vapp, "web-1")
    clone_into(si, child, "inner-1")
    assert sorted(v.name for v in standing.view) == ["inner-1", "web-1"]  # a view made before follows
    assert view_names(si, vapp, recursive=False) == ["web-1"]
    assert view_names(si, vapp, recursive=True) == ["inner-1", "web-1"]
    assert view_names(si, vapp, recursive=False, kinds=(vim.VirtualApp,)) == ["inner"]
    dc = find(si, vim.Datacenter, "dc1")
    assert {"inner-1", "web-1"} <= set(view_names(si, dc.vmFolder, recursive=True))
    assert "web-1" not in view_names(si, dc.vmFolder, recursive=False)
    assert "app1" in view_names(si, dc.vmFolder, recursive=False, kinds=(vim.VirtualApp,))
    assert {"inner-1", "web-1"} <= set(view_names(si, find(si, vim.ClusterComputeResource, "cluster1"), True))
    assert {"inner-1", "web-1"} <= set(view_names(si, dc, recursive=True))


def test_power_on_and_off_a_vapp_powers_its_vms(si):
    vapp = make_vapp(si)
    fault = fault_of(si, vapp.PowerOnVApp_Task())
    assert isinstance(fault, vim.fault.NoVmInVApp)
    a, b = clone_into(si, vapp, "a"), clone_into(si, vapp, "b")
    run(si, vapp.PowerOnVApp_Task())
    assert (a.runtime.powerState, b.runtime.powerState, vapp.summary.vAppState) == ("poweredOn", "poweredOn",
                                                                                     "started")
    assert "VmPoweredOnEvent" in events_of(si, a)
    assert isinstance(fault_of(si, vapp.PowerOnVApp_Task()), vim.fault.InvalidPowerState)
    fault = fault_of(si, vapp.Destroy_Task())  # not while its VMs run
    assert isinstance(fault, vim.fault.InvalidPowerState) and a.runtime.powerState == "poweredOn"
    run(si, vapp.PowerOffVApp_Task(force=True))
    assert (a.runtime.powerState, vapp.summary.vAppState) == ("poweredOff", "stopped")
    assert isinstance(fault_of(si, vapp.PowerOffVApp_Task(force=False)), vim.fault.InvalidPowerState)


def test_destroying_a_vapp_destroys_its_vms_and_child_vapps(si):
    vapp = make_vapp(si)
    child = vapp.CreateVApp("inner", res_spec(), vim.vApp.VAppConfigSpec())
    clone_into(si, vapp, "web-1")
    clone_into(si, child, "inner-1")
    dc = find(si, vim.Datacenter, "dc1")
    run(si, vapp.Destroy_Task())
    names = view_names(si, dc, recursive=True, kinds=(vim.VirtualMachine, vim.VirtualApp))
    assert not {"web-1", "inner-1", "app1", "inner"} & set(names)
    assert vapp not in dc.vmFolder.childEntity and root(si).resourcePool == []
    assert si.content.searchIndex.FindByInventoryPath("dc1/vm/app1") is None


def test_vms_move_into_and_out_of_a_vapp_through_move_into_resource_pool(si):
    vapp = make_vapp(si)
    src = find_vm(si, "src-win")
    vapp.MoveIntoResourcePool([src])
    assert src.parentVApp == vapp and src.parent is None and view_names(si, vapp, False) == ["src-win"]
    root(si).MoveIntoResourcePool([src])
    dc = find(si, vim.Datacenter, "dc1")
    assert src.parentVApp is None and src.parent == dc.vmFolder and vapp.vm == []


@pytest.mark.parametrize("make, fault, prop", [
    (lambda si: root(si).CreateVApp("x", res_spec(vim.ResourceAllocationInfo(reservation=0)),
                                    vim.vApp.VAppConfigSpec()), vmodl.fault.InvalidArgument, "spec.cpuAllocation"),
    (lambda si: root(si).CreateVApp("x", res_spec(), vim.vApp.VAppConfigSpec(product=[product(op="remove")])),
     vmodl.fault.InvalidArgument, "configSpec.product[0]"),
    (lambda si: root(si).CreateVApp("x", res_spec(), vim.vApp.VAppConfigSpec(
        entityConfig=[vim.vApp.EntityConfigInfo(key=find_vm(si, "src-linux"))])),
     vmodl.fault.InvalidArgument, "configSpec.entityConfig[0].key"),
    (lambda si: root(si).CreateVApp("x", res_spec(), vim.vApp.VAppConfigSpec(),
                                    find(si, vim.Datacenter, "dc1").hostFolder),
     vmodl.fault.InvalidArgument, "vmFolder"),
    (lambda si: make_vapp(si).CreateVApp("x", res_spec(), vim.vApp.VAppConfigSpec(),
                                         find(si, vim.Datacenter, "dc1").vmFolder),
     vmodl.fault.InvalidArgument, "vmFolder"),
    (lambda si: root(si).CreateVApp("a/b", res_spec(), vim.vApp.VAppConfigSpec()), vim.fault.InvalidName, None),
    (lambda si: root(si).CreateVApp("src-linux", res_spec(), vim.vApp.VAppConfigSpec()),
     vim.fault.DuplicateName, None),  # the folder already holds a VM of that name
])
def test_a_bad_vapp_spec_is_refused_as_vcenter_does(si, make, fault, prop):
    with pytest.raises(fault) as err:
        make(si)
    if prop is not None:
        assert err.value.invalidProperty == prop
    assert not [p for p in root(si).resourcePool if p.name == "x"]


def test_update_vapp_config_checks_its_members_and_products(si):
    vapp = make_vapp(si)
    web = clone_into(si, vapp, "web-1")
    vapp.UpdateVAppConfig(vim.vApp.VAppConfigSpec(annotation="two tiers", entityConfig=[
        vim.vApp.EntityConfigInfo(key=web, startOrder=2, startAction="powerOn")]))
    config = vapp.vAppConfig
    assert config.annotation == "two tiers" and config.entityConfig[0].startOrder == 2
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        vapp.UpdateVAppConfig(vim.vApp.VAppConfigSpec(product=[product()]))  # key 0 exists already
    assert err.value.invalidProperty == "spec.product[0]"


def test_a_vapp_changes_folders_its_vms_do_not_and_a_destroyed_folder_takes_it(si):
    dc = find(si, vim.Datacenter, "dc1")
    vapp = make_vapp(si)
    web = clone_into(si, vapp, "web-1")
    with pytest.raises(vmodl.fault.NotSupported):
        run(si, dc.vmFolder.CreateFolder("elsewhere").MoveIntoFolder_Task([web]))
    assert web.parentVApp == vapp
    fault = fault_of(si, vapp.Rename_Task("src-linux"))  # its folder holds a VM of that name
    assert isinstance(fault, vim.fault.DuplicateName)
    target = dc.vmFolder.CreateFolder("apps")
    run(si, target.MoveIntoFolder_Task([vapp]))
    assert vapp.parentFolder == target and vapp.parent == root(si) and vapp not in dc.vmFolder.childEntity
    assert si.content.searchIndex.FindByInventoryPath("dc1/vm/apps/app1/web-1") == web
    assert view_names(si, target, recursive=True) == ["web-1"]
    run(si, target.Destroy_Task())
    assert root(si).resourcePool == [] and "web-1" not in view_names(si, dc, recursive=True)
