"""Batched property-collector reads: a view over the inventory, a set of VMs, one object's property.

Every read here is a fixed number of SOAP requests whatever the fleet size (paged with
`ContinueRetrievePropertiesEx`), never one call per VM.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from pyVmomi import vim, vmodl

from forkscale.vsphere.faults import fault_name
from forkscale.vsphere.keyed import keyed, request_paths, resolve
from forkscale.vsphere.model import (
    MAC_KEY,
    STATUS_KEY,
    TAG_ID,
    TAG_POOL,
    TAG_REPLICA,
    TAG_SOURCE,
    Inventory,
    NetworkRef,
    NicInfo,
    VmDetail,
    VmInfo,
)
from forkscale.vsphere.transport import Soap

log = logging.getLogger("forkscale.vsphere")
PC = vmodl.query.PropertyCollector
T = TypeVar("T")
#: The `descriptionId` of clone tasks, as vCenter's task catalogue names them.
CLONE_TASKS = frozenset({"VirtualMachine.clone", "VirtualMachine.instantClone"})
ENTER_MAINTENANCE = "HostSystem.enterMaintenanceMode"
VM_PATHS = ["name", "parent", "runtime.host", "runtime.powerState", "runtime.instantCloneFrozen",
            "snapshot.currentSnapshot", "datastore", "config.template", "config.instanceUuid",
            *(keyed(k) for k in (TAG_POOL, TAG_ID, STATUS_KEY, MAC_KEY, TAG_SOURCE, TAG_REPLICA))]
HOST_PATHS = ["name", "runtime.connectionState", "runtime.inMaintenanceMode", "parent", "hardware.memorySize"]


def props(oc: Any) -> dict[str, Any]:
    return {p.name: p.val for p in oc.propSet or []}


def extra_value(p: Mapping[str, Any], key: str) -> str | None:
    """The value of `config.extraConfig["key"]` in a property dict (None when unset)."""
    opt = p.get(keyed(key))
    return None if opt is None or opt.value is None else str(opt.value)


#: Faults a read on a session object (a view, a paging token) gets once that session is gone.
_SESSION_GONE = ("ManagedObjectNotFound", "InvalidArgument")


async def again_if_renewed(soap: Soap, read: Callable[[], Awaitable[T]]) -> T:
    """`read()`, made again whole when the vCenter session changed under it (a re-login, a restarted
    vCenter): the view or paging token it used died with the old session."""
    for attempt in (1, 2, 3):
        epoch = soap.epoch
        try:
            return await read()
        except vmodl.MethodFault as exc:
            if soap.epoch == epoch or attempt == 3 or fault_name(exc) not in _SESSION_GONE:
                raise
            log.info("the vCenter session changed during a read (%s); reading again", fault_name(exc))
    raise AssertionError("unreachable")


async def _all_pages(soap: Soap, spec: Any, page_size: int | None = None) -> list[Any]:
    return await again_if_renewed(soap, lambda: _pages(soap, spec, page_size))


async def _pages(soap: Soap, spec: Any, page_size: int | None) -> list[Any]:
    pc = soap.content.propertyCollector
    res = await soap.invoke(pc, "RetrievePropertiesEx", [spec], PC.RetrieveOptions(maxObjects=page_size))
    out = list(res.objects or []) if res else []
    while res is not None and res.token:
        res = await soap.invoke(pc, "ContinueRetrievePropertiesEx", res.token)
        out.extend((res.objects or []) if res else [])
    return out


async def retrieve_view(soap: Soap, kinds: Mapping[type, Iterable[str]], page_size: int = 1000) -> list[Any]:
    """Every object of `kinds` with their paths: one ContainerView, one paged RetrievePropertiesEx."""
    return await again_if_renewed(soap, lambda: _view(soap, kinds, page_size))


async def _view(soap: Soap, kinds: Mapping[type, Iterable[str]], page_size: int) -> list[Any]:
    c = soap.content
    view = await soap.invoke(c.viewManager, "CreateContainerView", c.rootFolder, list(kinds), True)
    try:
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
                PC.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)])],
            propSet=[PC.PropertySpec(type=k, pathSet=list(paths)) for k, paths in kinds.items()])
        return await _pages(soap, spec, page_size)
    finally:
        try:
            await soap.invoke(view, "DestroyView")
        except Exception:  # the view dies with the session anyway
            log.debug("DestroyView failed", exc_info=True)


async def retrieve_one(soap: Soap, mo: Any, kind: type, path: str) -> Any:
    """One property of one object (None when unset or the object is gone)."""
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=mo)], propSet=[PC.PropertySpec(type=kind, pathSet=[path])])
    objects = await _all_pages(soap, spec)
    if not objects or not objects[0].propSet:
        return None
    return objects[0].propSet[0].val


async def _traverse(soap: Soap, root: Any, root_kind: type, path: str, kind: type, paths: list[str]) -> list[Any]:
    """The objects one hop from `root` along `path` (e.g. TaskManager.recentTask), with `paths`."""
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=root, skip=True, selectSet=[
        PC.TraversalSpec(type=root_kind, path=path, skip=False)])],
        propSet=[PC.PropertySpec(type=kind, pathSet=paths)])
    return await _all_pages(soap, spec)


async def clone_tasks_in_flight(soap: Soap) -> int:
    """Clone tasks (instant, linked, full) still queued or running in vCenter, in one read."""
    tasks = await _traverse(soap, soap.content.taskManager, vim.TaskManager, "recentTask", vim.Task,
                            ["info.state", "info.descriptionId"])
    return sum(1 for oc in tasks if (p := props(oc)).get("info.state") in ("queued", "running")
               and str(p.get("info.descriptionId", "")) in CLONE_TASKS)


async def hosts_entering_maintenance(soap: Soap) -> set[str]:
    """Hosts with an EnterMaintenanceMode_Task queued or running (someone asked for maintenance), in one read."""
    tasks = await _traverse(soap, soap.content.taskManager, vim.TaskManager, "recentTask", vim.Task,
                            ["info.state", "info.descriptionId", "info.entity"])
    return {str(p["info.entity"]._moId) for oc in tasks if (p := props(oc)).get("info.state") in ("queued", "running")
            and str(p.get("info.descriptionId", "")) == ENTER_MAINTENANCE and p.get("info.entity") is not None}


async def first_vm_folder(soap: Soap) -> str | None:
    """The first datacenter's VM folder, or None when vCenter has no datacenter."""
    for oc in await _traverse(soap, soap.content.rootFolder, vim.Folder, "childEntity", vim.Datacenter, ["vmFolder"]):
        return str(props(oc)["vmFolder"]._moId)
    return None


async def vm_props(soap: Soap, vms: list[str], paths: list[str]) -> dict[str, dict[str, Any]]:
    """Properties of several VMs in one RetrievePropertiesEx (paged); VMs that vanished are left out.

    Keyed extraConfig paths are answered even by a server that refuses them (forkscale.vsphere.keyed).
    """
    if not vms:
        return {}
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.VirtualMachine(m)) for m in vms],
                         propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=request_paths(soap, paths))],
                         reportMissingObjectsInResults=True)
    return {oc.obj._moId: p for oc, p in await resolve(soap, await _all_pages(soap, spec), paths)}


async def read_inventory(soap: Soap) -> Inventory:
    """Everything a plan needs, in a few batched reads (never one call per VM)."""
    inv = Inventory(taken_at=time.time())
    vms, hosts, dss, nets, folders, pools = await asyncio.gather(
        retrieve_view(soap, {vim.VirtualMachine: request_paths(soap, VM_PATHS)}),
        retrieve_view(soap, {vim.HostSystem: HOST_PATHS}),
        retrieve_view(soap, {vim.Datastore: ["name", "summary.freeSpace", "summary.capacity"]}),
        retrieve_view(soap, {vim.Network: ["name"]}),
        retrieve_view(soap, {vim.Folder: ["name"]}),
        retrieve_view(soap, {vim.ResourcePool: ["name"]}),
    )
    for oc in hosts:
        p = props(oc)
        inv.hosts[p["name"]] = oc.obj._moId
        inv.host_names[oc.obj._moId] = p["name"]
        inv.host_connected[oc.obj._moId] = p.get("runtime.connectionState") == "connected"
        inv.host_maintenance[oc.obj._moId] = bool(p.get("runtime.inMaintenanceMode"))
        inv.host_memory[oc.obj._moId] = int(p.get("hardware.memorySize") or 0)
        if p.get("parent") is not None:
            inv.host_parent[oc.obj._moId] = p["parent"]._moId
    for oc in dss:
        p = props(oc)
        inv.datastores[p["name"]] = (oc.obj._moId, int(p.get("summary.freeSpace", 0)))
        inv.datastore_capacity[p["name"]] = int(p.get("summary.capacity") or 0)
    await _networks(soap, inv, nets)
    for oc in folders:
        inv.folders.setdefault(props(oc)["name"], oc.obj._moId)
    for oc in pools:
        inv.pools.setdefault(props(oc)["name"], oc.obj._moId)
    for oc, p in await resolve(soap, vms, VM_PATHS):
        info = _vm_info(oc, p)
        inv.vms[info.moref] = info
        mac = extra_value(p, MAC_KEY)
        if mac:
            inv.macs.add(mac.lower())
    return inv


async def _networks(soap: Soap, inv: Inventory, nets: list[Any]) -> None:
    """Standard port groups by name, and distributed ones with their switch's UUID."""
    dvs_uuid: dict[str, str] = {}
    if any(isinstance(oc.obj, vim.dvs.DistributedVirtualPortgroup) for oc in nets):
        pgs, switches = await asyncio.gather(
            retrieve_view(soap, {vim.dvs.DistributedVirtualPortgroup: ["config.distributedVirtualSwitch"]}),
            retrieve_view(soap, {vim.DistributedVirtualSwitch: ["uuid"]}))
        uuids: dict[str, str] = {oc.obj._moId: str(u) for oc in switches if (u := props(oc).get("uuid"))}
        for oc in pgs:
            sw = props(oc).get("config.distributedVirtualSwitch")
            if sw is not None and sw._moId in uuids:
                dvs_uuid[oc.obj._moId] = uuids[sw._moId]
    for oc in nets:
        p = props(oc)
        moid = oc.obj._moId
        if moid in dvs_uuid:
            inv.networks[p["name"]] = ("dvportgroup", moid, dvs_uuid[moid])
        elif not isinstance(oc.obj, vim.dvs.DistributedVirtualPortgroup):
            inv.networks.setdefault(p["name"], ("network", moid, None))


def _moid(value: Any) -> str | None:
    return None if value is None else str(value._moId)


def _vm_info(oc: Any, p: dict[str, Any]) -> VmInfo:
    return VmInfo(
        moref=oc.obj._moId, name=p.get("name", ""), folder=_moid(p.get("parent")), host=_moid(p.get("runtime.host")),
        power=str(p.get("runtime.powerState", "poweredOff")), frozen=bool(p.get("runtime.instantCloneFrozen")),
        snapshot=_moid(p.get("snapshot.currentSnapshot")),
        datastores=[d._moId for d in p.get("datastore", [])], template=bool(p.get("config.template")),
        pool=extra_value(p, TAG_POOL), clone_id=extra_value(p, TAG_ID), status=extra_value(p, STATUS_KEY),
        source_tag=extra_value(p, TAG_SOURCE), instance_uuid=p.get("config.instanceUuid"),
        replica_tag=extra_value(p, TAG_REPLICA))


async def read_vm_detail(soap: Soap, vm: str, *, tags: tuple[str, ...] = ()) -> VmDetail:
    """One property read: `runtime.powerState`, `layoutEx`, `config.hardware.device` (+ extraConfig `tags`).

    The running-source deltas of instant clones are invisible in the snapshot tree; only
    layoutEx (or walking `backing.parent`) shows them.
    """
    paths = ["runtime.powerState", "layoutEx", "config.hardware.device", *(keyed(t) for t in tags)]
    p = (await vm_props(soap, [vm], paths)).get(vm, {})
    layout = p.get("layoutEx")
    chains = {int(d.key): len(d.chain or []) for d in (layout.disk if layout is not None else None) or []}
    nics = [_nic(dev) for dev in p.get("config.hardware.device") or []
            if isinstance(dev, vim.vm.device.VirtualEthernetCard)]
    extra = {t: v for t in tags if (v := extra_value(p, t)) is not None}
    return VmDetail(power=str(p.get("runtime.powerState", "unknown")), chains=chains, nics=nics, extra=extra)


def _nic(dev: Any) -> NicInfo:
    b = dev.backing
    net: NetworkRef = ("network", "", None)
    if isinstance(b, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo) and b.port:
        net = ("dvportgroup", str(b.port.portgroupKey or ""), b.port.switchUuid)
    elif isinstance(b, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo) and b.network is not None:
        net = ("network", str(b.network._moId), None)
    conn = dev.connectable
    return NicInfo(key=int(dev.key), label=dev.deviceInfo.label if dev.deviceInfo else str(dev.key),
                   mac=str(dev.macAddress or "").lower(), network=net,
                   connected=bool(conn and conn.connected), start_connected=bool(conn and conn.startConnected))
