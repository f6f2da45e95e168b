"""What clients read from the twin agrees with itself and with vCenter's rules: filled properties
consistent with the world (addresses, capacities, free space, devices), NotAuthenticated without
a session, ManagedObjectNotFound for objects that are gone, and the SearchIndex's lookups."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import pytest
from pyVim.task import WaitForTask
from pyVmomi import SoapStubAdapter, vim, vmodl

from tests.fixtures.twin import find, find_vm

PC = vmodl.query.PropertyCollector


def _spec(obj: Any, kind: type, paths: list[str], report_missing: bool | None = None) -> Any:
    return PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=obj)], propSet=[PC.PropertySpec(type=kind, pathSet=paths)],
                         reportMissingObjectsInResults=report_missing)


def _clone(si: Any, name: str, *, ip: str | None = None, power: bool = True) -> Any:
    src = find_vm(si, "src-linux")
    extra = [vim.option.OptionValue(key=k, value=v) for k, v in {
        "guestinfo.forkscale.id": name, "guestinfo.forkscale.hostname": name, "guestinfo.forkscale.ip": ip,
        "guestinfo.forkscale.prefix": "22", "guestinfo.forkscale.gateway": "10.9.0.1",
        "guestinfo.forkscale.dns": "10.9.0.2,10.9.0.3"}.items() if v is not None and ip is not None]
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"),
                            snapshot=src.snapshot.rootSnapshotList[0].snapshot, powerOn=power,
                            config=vim.vm.ConfigSpec(extraConfig=extra))
    task = src.CloneVM_Task(src.parent, name, spec)
    WaitForTask(task, si=si)
    return task.info.result


def _wait_guest_ip(si: Any, vm: Any, ip: str) -> None:
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(_spec(vm, vim.VirtualMachine, ["guest.ipAddress"]), partialUpdates=False)
    version = ""
    try:
        for _ in range(50):
            update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=5))
            if update is None:
                continue
            version = update.version
            if any(c.val == ip for fs in update.filterSet for o in fs.objectSet for c in o.changeSet):
                return
        raise AssertionError(f"{vm} never reported {ip}")
    finally:
        pc.DestroyPropertyCollector()


# filled properties agree with the world ---------------------------------------------------------
def test_host_config_network_and_product_agree_with_search_and_summary(si):
    host = find(si, vim.HostSystem, "esx-02")
    vnic = host.config.network.vnic[0]
    assert vnic.device == "vmk0" and vnic.portgroup == "Management Network"
    assert si.content.searchIndex.FindByIp(ip=vnic.spec.ip.ipAddress, vmSearch=False) == host
    assert host.summary.config.product.fullName == host.config.product.fullName
    assert host.config.product.apiType == "HostAgent" and host.config.product.version.startswith("8.0")
    mgmt = next(n for n in host.config.virtualNicManagerInfo.netConfig if n.nicType == "management")
    assert mgmt.selectedVnic == [mgmt.candidateVnic[0].key]
    assert host.summary.runtime.bootTime < si.CurrentTime()
    standard = {pg.spec.name for pg in host.config.network.portgroup}
    assert {"Management Network", "VM Network", "isolated"} <= standard
    assert sorted(host.datastoreBrowser.datastore, key=str) == sorted(host.datastore, key=str)
    assert host.configManager.datastoreSystem.datastore == host.datastore


def test_datastore_info_follows_the_disk_model(si):
    ds = find(si, vim.Datastore, "ds-ssd")
    info, summary = _info_and_summary(si, ds)
    assert isinstance(info, vim.host.VmfsDatastoreInfo)
    assert info.name == summary.name and info.url == summary.url and info.vmfs.capacity == summary.capacity
    assert info.freeSpace == summary.freeSpace and 0 < info.freeSpace < summary.capacity  # as of one instant
    assert ds.browser.datastore == [ds] and ds.capability.directoryHierarchySupported
    mount = ds.host[0].mountInfo.path
    assert summary.url == f"ds://{mount}/" and info.vmfs.uuid in mount
    win = find_vm(si, "src-win")
    size = sum(f.size for f in win.layoutEx.file if f.type in ("diskDescriptor", "diskExtent"))
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(datastore=ds), powerOn=False)
    WaitForTask(win.CloneVM_Task(win.parent, "full-copy", spec), si=si)
    after, _ = _info_and_summary(si, ds)
    assert info.freeSpace - after.freeSpace >= size


def _info_and_summary(si: Any, ds: Any) -> tuple[Any, Any]:
    res = si.content.propertyCollector.RetrievePropertiesEx(
        [_spec(ds, vim.Datastore, ["info", "summary"])], PC.RetrieveOptions())
    props = {p.name: p.val for p in res.objects[0].propSet}
    return props["info"], props["summary"]


def test_vm_storage_devices_tools_and_browser_agree(si):
    vm = find_vm(si, "src-linux")
    res = si.content.propertyCollector.RetrievePropertiesEx(
        [_spec(vm, vim.VirtualMachine, ["storage", "summary.storage", "datastore"])], PC.RetrieveOptions())
    props = {p.name: p.val for p in res.objects[0].propSet}
    usage = props["storage"].perDatastoreUsage
    assert [u.datastore for u in usage] == props["datastore"]
    assert sum(u.committed for u in usage) == props["summary.storage"].committed
    devices = {d.key: d for d in vm.config.hardware.device}
    for dev in devices.values():
        if isinstance(dev, vim.vm.device.VirtualController):
            assert all(k in devices and devices[k].controllerKey == dev.key for k in dev.device), dev
    kinds = [type(d).__name__ for d in devices.values()]
    assert kinds.count("vim.vm.device.VirtualIDEController") == 2
    assert "vim.vm.device.VirtualKeyboard" in kinds and "vim.vm.device.VirtualVideoCard" in kinds
    assert str(vm.config.tools.toolsVersion) == vm.guest.toolsVersion
    cluster = vm.runtime.host.parent
    assert vm.environmentBrowser == cluster.environmentBrowser
    assert vm.capability.snapshotOperationsSupported and vm.config.bootOptions.bootDelay == 0


def test_guest_ip_config_and_stack_follow_guestinfo(si):
    vm = _clone(si, "ipcfg", ip="10.9.1.20")
    _wait_guest_ip(si, vm, "10.9.1.20")
    guest = vm.guest
    nic = guest.net[0]
    nic_dev = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
    assert nic.macAddress == nic_dev.macAddress and nic.deviceConfigId == nic_dev.key
    addr = nic.ipConfig.ipAddress[0]
    assert (addr.ipAddress, addr.prefixLength, addr.state) == ("10.9.1.20", 22, "preferred")
    stack = guest.ipStack[0]
    assert stack.dnsConfig.ipAddress == ["10.9.0.2", "10.9.0.3"] and stack.dnsConfig.hostName == "ipcfg"
    routes = {(r.network, r.prefixLength): r.gateway.ipAddress for r in stack.ipRouteConfig.ipRoute}
    assert routes[("0.0.0.0", 0)] == "10.9.0.1" and ("10.9.0.0", 22) in routes
    WaitForTask(vm.PowerOffVM_Task(), si=si)
    assert not vm.guest.ipStack and not vm.guest.net[0].ipConfig


def test_cluster_pool_and_switch_capacities_agree(si):
    cluster = find(si, vim.ClusterComputeResource, "cluster1")
    s = cluster.summary
    assert 0 < s.effectiveCpu < s.totalCpu and 0 < s.effectiveMemory * 1024**2 < s.totalMemory
    cfg = cluster.configurationEx
    assert cfg.drsConfig.enabled is True and cfg.dasConfig.enabled is False
    pool = cluster.resourcePool
    alloc = pool.config.cpuAllocation
    assert alloc.reservation == alloc.limit == s.effectiveCpu and alloc.shares.level == "normal"
    assert pool.runtime.memory.maxUsage == s.effectiveMemory * 1024**2 and pool.summary.name == pool.name
    dvs = find(si, vim.DistributedVirtualSwitch, "dvs1")
    assert {m.config.host for m in dvs.config.host} == set(cluster.host)
    assert dvs.summary.uuid == dvs.uuid and dvs.summary.portgroupName == ["dvpg-vdi"]
    pg = dvs.portgroup[0]
    assert len(pg.portKeys) == pg.config.numPorts and pg.config.defaultPortConfig.vlan.vlanId == 0


# sessions and objects that are gone -------------------------------------------------------------
def _anonymous(twin: Any) -> Any:
    parts = urlsplit(twin.url)
    stub = SoapStubAdapter(host=parts.hostname, port=parts.port, version="vim.version.v8_0_3_0",
                           sslContext=ssl.create_default_context(cafile=twin.ca_file))
    return vim.ServiceInstance("ServiceInstance", stub)


def test_reads_and_calls_without_a_session_are_not_authenticated(twin, si):
    vm = find_vm(si, "src-linux")
    anon = _anonymous(twin)
    content = anon.RetrieveContent()  # allowed anonymously, as on vCenter
    with pytest.raises(vim.fault.NotAuthenticated):
        content.propertyCollector.RetrievePropertiesEx([_spec(vm, vim.VirtualMachine, ["name"])],
                                                       PC.RetrieveOptions())
    with pytest.raises(vim.fault.NotAuthenticated):
        vim.VirtualMachine(vm._moId, anon._stub).PowerOffVM_Task()
    with pytest.raises(vim.fault.NotAuthenticated):
        _ = vim.VirtualMachine(vm._moId, anon._stub).name  # pyVmomi's Fetch


def test_after_logout_reads_are_not_authenticated(twin):
    from tests.fixtures.twin import connect

    si = connect(twin)
    pc = si.content.propertyCollector
    root = si.content.rootFolder
    si.content.sessionManager.Logout()
    with pytest.raises(vim.fault.NotAuthenticated):
        pc.RetrievePropertiesEx([_spec(root, vim.Folder, ["name"])], PC.RetrieveOptions())


def test_a_destroyed_vm_in_an_object_set_is_managed_object_not_found(si):
    vm = _clone(si, "doomed", power=False)
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    WaitForTask(vm.Destroy_Task(), si=si)
    pc = si.content.propertyCollector
    with pytest.raises(vmodl.fault.ManagedObjectNotFound) as err:
        pc.RetrievePropertiesEx([_spec(vm, vim.VirtualMachine, ["name"])], PC.RetrieveOptions())
    assert err.value.obj == vm
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        pc.CreateFilter(_spec(vm, vim.VirtualMachine, ["name"]), partialUpdates=False)
    # asked to, the collector leaves missing objects out instead
    left = pc.RetrievePropertiesEx([_spec(vm, vim.VirtualMachine, ["name"], report_missing=True)],
                                   PC.RetrieveOptions())
    assert left is None or not left.objects
    # reached by traversal, a gone object is simply not there
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
        PC.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])])
    names = [o.propSet[0].val for o in pc.RetrievePropertiesEx([spec], PC.RetrieveOptions()).objects]
    assert "doomed" not in names and "src-linux" in names


def test_a_destroyed_view_is_managed_object_not_found(si):
    view = si.content.viewManager.CreateListView([find_vm(si, "src-linux")])
    assert view in si.content.viewManager.viewList
    view.DestroyView()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        si.content.propertyCollector.RetrievePropertiesEx([_spec(view, vim.view.ListView, ["view"])],
                                                          PC.RetrieveOptions())
    assert view not in si.content.viewManager.viewList


# the SearchIndex --------------------------------------------------------------------------------
def test_find_by_uuid_finds_hosts_only_when_not_searching_vms(si):
    index = si.content.searchIndex
    host = find(si, vim.HostSystem, "esx-03")
    uuid = host.hardware.systemInfo.uuid
    assert index.FindByUuid(uuid=uuid.upper(), vmSearch=False) == host
    assert index.FindByUuid(uuid=uuid, vmSearch=True) is None
    vm = find_vm(si, "src-linux")
    assert index.FindByUuid(uuid=vm.config.uuid, vmSearch=False) is None
    assert index.FindAllByUuid(uuid=vm.config.instanceUuid, vmSearch=True, instanceUuid=True) == [vm]


def test_find_by_ip_and_dns_name_see_what_tools_report(si):
    index = si.content.searchIndex
    dc = si.content.rootFolder.childEntity[0]
    vm = _clone(si, "findme", ip="10.9.2.30")
    _wait_guest_ip(si, vm, "10.9.2.30")
    assert index.FindByIp(datacenter=dc, ip="10.9.2.30", vmSearch=True) == vm
    assert index.FindAllByIp(ip="10.9.2.30", vmSearch=True) == [vm]
    assert index.FindByDnsName(datacenter=dc, dnsName="FINDME", vmSearch=True) == vm
    assert index.FindAllByDnsName(dnsName="findme", vmSearch=True) == [vm]
    host = find(si, vim.HostSystem, "esx-01")
    assert index.FindByDnsName(dnsName="esx-01", vmSearch=False) == host
    assert index.FindByDnsName(dnsName=f"esx-01.{host.config.network.dnsConfig.domainName}", vmSearch=False) == host
    WaitForTask(vm.PowerOffVM_Task(), si=si)  # no tools, no address
    assert index.FindByIp(ip="10.9.2.30", vmSearch=True) is None
    assert index.FindAllByDnsName(dnsName="findme", vmSearch=True) == []


def test_find_by_datastore_path(si):
    index = si.content.searchIndex
    dc = si.content.rootFolder.childEntity[0]
    vm = find_vm(si, "src-win")
    assert index.FindByDatastorePath(datacenter=dc, path=vm.summary.config.vmPathName) == vm
    assert index.FindByDatastorePath(datacenter=dc, path="[ds-ssd] nowhere/nowhere.vmx") is None
    for bad in ("ds-ssd/src-win/src-win.vmx", "[no-such-ds] src-win/src-win.vmx"):
        with pytest.raises(vim.fault.InvalidDatastorePath) as err:
            index.FindByDatastorePath(datacenter=dc, path=bad)
        assert err.value.datastorePath == bad
