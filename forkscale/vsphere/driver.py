"""The vSphere driver: the small interface the engine sees, implemented on the async transport.

The engine never touches pyVmomi: it gets plain dataclasses (`Inventory`, `VmInfo`) and string
morefs, and errors already mapped onto `PermanentError` (don't retry this rung) or
`TemporaryError` (retry later) — the fault mapping lives here, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.vsphere.transport import Soap, method_info
from forkscale.vsphere.watcher import STATUS_KEY, TaskFailed, Watcher

log = logging.getLogger("forkscale.vsphere")
PC = vmodl.query.PropertyCollector
TAG_POOL, TAG_ID = "forkscale.pool", "forkscale.id"
TAG_SOURCE = "forkscale.source"  # on a pool's per-host source VMs: their generation (see forkscale/sources.py)
TEMPORARY_FAULTS = {"TaskInProgress", "ConnectionError", "HostCommunication", "InsufficientResourcesFault",
                    "InsufficientMemoryResourcesFault", "NotAuthenticated", "RequestCanceled", "Timedout",
                    "HostNotConnected", "SystemError"}
VM_PATHS = ["name", "parent", "runtime.host", "runtime.powerState", "runtime.instantCloneFrozen",
            "snapshot.currentSnapshot", "datastore", "config.template",
            f'config.extraConfig["{TAG_POOL}"]', f'config.extraConfig["{TAG_ID}"]',
            f'config.extraConfig["{STATUS_KEY}"]', 'config.extraConfig["guestinfo.forkscale.mac"]',
            f'config.extraConfig["{TAG_SOURCE}"]']


@dataclass
class VmInfo:
    moref: str
    name: str
    folder: str | None
    host: str | None
    power: str
    frozen: bool
    snapshot: str | None
    datastores: list[str]
    template: bool
    pool: str | None = None
    clone_id: str | None = None
    status: str | None = None
    source_tag: str | None = None  # forkscale.source: set on per-host sources (and only there with no clone_id)

    @property
    def is_source(self) -> bool:
        """A pool's per-host source VM (made by `forkscale prepare`), not a clone."""
        return self.source_tag is not None and self.clone_id is None


@dataclass
class Inventory:
    vms: dict[str, VmInfo] = field(default_factory=dict)  # moref -> info
    hosts: dict[str, str] = field(default_factory=dict)  # name -> moref
    host_names: dict[str, str] = field(default_factory=dict)  # moref -> name
    host_connected: dict[str, bool] = field(default_factory=dict)  # moref -> connected
    host_parent: dict[str, str] = field(default_factory=dict)  # host moref -> cluster (compute resource) moref
    datastores: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (moref, free bytes)
    networks: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)  # name -> (kind, moref, dvs uuid)
    folders: dict[str, str] = field(default_factory=dict)  # name -> moref
    pools: dict[str, str] = field(default_factory=dict)  # resource pool name -> moref
    macs: set[str] = field(default_factory=set)
    taken_at: float = 0.0

    def vm_by_name(self, name: str) -> VmInfo | None:
        return next((v for v in self.vms.values() if v.name == name), None)


@dataclass
class CloneRequest:
    name: str
    folder: str
    datastore: str
    host: str
    resource_pool: str | None
    network: tuple[str, str, str | None]  # (kind, moref, dvs uuid) from Inventory.networks
    mac: str
    nic_key: int
    extra: dict[str, str]
    disconnect: bool = False
    # instant clones only: further NICs to edit alike, as (nic key, manual MAC, network); a live
    # clone of a multi-NIC source must move (or disconnect) every NIC, not just the first
    more_nics: tuple[tuple[int, str, tuple[str, str, str | None]], ...] = ()


def fault_name(fault: Any) -> str:
    return type(fault).__name__.rsplit(".", 1)[-1]


def map_fault(fault: BaseException, what: str) -> Exception:
    """One place that decides: retry later, or give up on this rung."""
    if isinstance(fault, (PermanentError, TemporaryError)):
        return fault
    inner = fault.fault if isinstance(fault, TaskFailed) else fault
    name = fault_name(inner)
    msg = getattr(inner, "msg", None) or str(inner) or name
    if name == "SystemError" and "migrate.prepare" in (getattr(inner, "reason", "") or msg):
        return PermanentError(f"{what}: {msg}", "ChainTooDeep")
    if name in TEMPORARY_FAULTS:
        return TemporaryError(f"{what}: {msg}", name, delay=2.0)
    return PermanentError(f"{what}: {msg}", name)


class Driver:
    """Connect, read inventory in one batched pass, clone, power, destroy, freeze — asynchronously."""

    def __init__(self, soap: Soap, *, task_timeout_s: float = 900.0) -> None:
        self.soap = soap
        self.watcher = Watcher(soap)
        self.task_timeout_s = task_timeout_s
        self.task_seconds: list[tuple[str, float]] = []
        self.task_faults: list[tuple[str, str]] = []
        # Called as hook(method, seconds, fault name or None) when a task ends (e.g. Telemetry.observe_task).
        self.task_hooks: list[Callable[[str, float, str | None], None]] = []

    async def open(self) -> None:
        await self.soap.open()
        await self.watcher.start()

    async def close(self) -> None:
        await self.watcher.stop()
        await self.soap.close()

    @property
    def content(self) -> Any:
        return self.soap.content

    # inventory ------------------------------------------------------------------------------
    async def _view(self, kind: type, paths: list[str], page: int = 1000) -> list[Any]:
        c = self.content
        view = await self.soap.invoke(c.viewManager, "CreateContainerView", c.rootFolder, [kind], True)
        try:
            spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
                PC.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)])],
                propSet=[PC.PropertySpec(type=kind, pathSet=paths)])
            res = await self.soap.invoke(c.propertyCollector, "RetrievePropertiesEx", [spec],
                                         PC.RetrieveOptions(maxObjects=page))
            out = list(res.objects) if res else []
            while res is not None and res.token:
                res = await self.soap.invoke(c.propertyCollector, "ContinueRetrievePropertiesEx", res.token)
                out.extend(res.objects if res else [])
            return out
        finally:
            await self.soap.invoke(view, "DestroyView")

    async def inventory(self) -> Inventory:
        """Everything a plan needs, in a few batched reads (never one call per VM)."""
        inv = Inventory(taken_at=time.time())
        vms, hosts, dss, nets, folders, pools = await asyncio.gather(
            self._view(vim.VirtualMachine, VM_PATHS),
            self._view(vim.HostSystem, ["name", "runtime.connectionState", "parent"]),
            self._view(vim.Datastore, ["name", "summary.freeSpace"]),
            self._view(vim.Network, ["name"]),
            self._view(vim.Folder, ["name"]),
            self._view(vim.ResourcePool, ["name"]),
        )
        for oc in hosts:
            p = _props(oc)
            inv.hosts[p["name"]] = oc.obj._moId
            inv.host_names[oc.obj._moId] = p["name"]
            inv.host_connected[oc.obj._moId] = p.get("runtime.connectionState") == "connected"
            if p.get("parent") is not None:
                inv.host_parent[oc.obj._moId] = p["parent"]._moId
        for oc in dss:
            p = _props(oc)
            inv.datastores[p["name"]] = (oc.obj._moId, int(p.get("summary.freeSpace", 0)))
        dvs_uuid: dict[str, str] = {}
        dvpgs = [oc for oc in nets if isinstance(oc.obj, vim.dvs.DistributedVirtualPortgroup)]
        if dvpgs:
            pgs = await self._view(vim.dvs.DistributedVirtualPortgroup, ["config.distributedVirtualSwitch"])
            switches = await self._view(vim.DistributedVirtualSwitch, ["uuid"])
            uuids = {oc.obj._moId: _props(oc).get("uuid") for oc in switches}
            for oc in pgs:
                sw = _props(oc).get("config.distributedVirtualSwitch")
                if sw is not None and uuids.get(sw._moId):
                    dvs_uuid[oc.obj._moId] = uuids[sw._moId]
        for oc in nets:
            p = _props(oc)
            moid = oc.obj._moId
            if moid in dvs_uuid:
                inv.networks[p["name"]] = ("dvportgroup", moid, dvs_uuid[moid])
            elif not isinstance(oc.obj, vim.dvs.DistributedVirtualPortgroup):
                inv.networks.setdefault(p["name"], ("network", moid, None))
        for oc in folders:
            inv.folders.setdefault(_props(oc)["name"], oc.obj._moId)
        for oc in pools:
            inv.pools.setdefault(_props(oc)["name"], oc.obj._moId)
        for oc in vms:
            p = _props(oc)
            extra = {k: (v.value if v is not None else None) for k, v in p.items() if k.startswith("config.extraConfig")}
            mac = extra.get('config.extraConfig["guestinfo.forkscale.mac"]')
            info = VmInfo(
                moref=oc.obj._moId, name=p.get("name", ""),
                folder=p["parent"]._moId if p.get("parent") is not None else None,
                host=p["runtime.host"]._moId if p.get("runtime.host") is not None else None,
                power=str(p.get("runtime.powerState", "poweredOff")), frozen=bool(p.get("runtime.instantCloneFrozen")),
                snapshot=p["snapshot.currentSnapshot"]._moId if p.get("snapshot.currentSnapshot") is not None else None,
                datastores=[d._moId for d in p.get("datastore", [])], template=bool(p.get("config.template")),
                pool=extra.get(f'config.extraConfig["{TAG_POOL}"]'),
                clone_id=extra.get(f'config.extraConfig["{TAG_ID}"]'),
                status=extra.get(f'config.extraConfig["{STATUS_KEY}"]'),
                source_tag=extra.get(f'config.extraConfig["{TAG_SOURCE}"]'))
            inv.vms[info.moref] = info
            if mac:
                inv.macs.add(str(mac).lower())
        return inv

    # tasks ----------------------------------------------------------------------------------
    async def _task(self, what: str, mo: Any, method: str, *args: Any) -> Any:
        started = time.monotonic()
        wsdl = str(method_info(type(mo), method).wsdlName)  # "PowerOff" -> "PowerOffVM_Task", as vSphere names it
        try:
            task = await self.soap.invoke(mo, method, *args)
            result = await self.watcher.wait_task(task, self.task_timeout_s)
            self._task_ended(wsdl, started, None)
            return result
        except TimeoutError as exc:
            self._task_ended(wsdl, started, "Timeout")
            raise TemporaryError(f"{what}: task did not finish in {self.task_timeout_s:.0f}s", "Timeout") from exc
        except (vmodl.MethodFault, TaskFailed) as exc:
            err = map_fault(exc, what)
            self._task_ended(wsdl, started, getattr(err, "fault", "Fault"))
            raise err from None

    def _task_ended(self, wsdl: str, started: float, fault: str | None) -> None:
        seconds = time.monotonic() - started
        if fault is None:
            self.task_seconds.append((wsdl, seconds))
        else:
            self.task_faults.append((wsdl, fault))
        for hook in list(self.task_hooks):
            try:
                hook(wsdl, seconds, fault)
            except Exception:  # a broken metrics hook must never fail a clone
                log.exception("task hook %r failed", hook)

    def _relocate(self, req: CloneRequest, *, instant: bool) -> Any:
        kind, net, dvs = req.network
        if kind == "dvportgroup":
            backing: Any = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(switchUuid=dvs, portgroupKey=net))
        else:
            backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(network=vim.Network(net))
        conn = vim.vm.device.VirtualDevice.ConnectInfo(startConnected=not req.disconnect, allowGuestControl=True,
                                                       connected=not req.disconnect)
        if instant:
            conn.migrateConnect = "disconnect" if req.disconnect else "connect"
        nic = vim.vm.device.VirtualVmxnet3(key=req.nic_key, addressType="manual", macAddress=req.mac,
                                           backing=backing, connectable=conn)
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)
        return change

    def _extra(self, req: CloneRequest) -> list[Any]:
        return [vim.option.OptionValue(key=k, value=v) for k, v in req.extra.items()]

    async def instant_clone(self, source: str, req: CloneRequest) -> str:
        more = [self._relocate(dataclasses.replace(req, nic_key=k, mac=m, network=n), instant=True)
                for k, m, n in req.more_nics]
        loc = vim.vm.RelocateSpec(folder=vim.Folder(req.folder), datastore=vim.Datastore(req.datastore),
                                  deviceChange=[self._relocate(req, instant=True), *more])
        if req.resource_pool:
            loc.pool = vim.ResourcePool(req.resource_pool)
        spec = vim.vm.InstantCloneSpec(name=req.name, location=loc, config=self._extra(req))
        vm = await self._task(f"instant clone {req.name}", vim.VirtualMachine(source), "InstantClone", spec)
        return str(vm._moId)

    async def check_instant_clone(self, source: str, req: CloneRequest) -> list[str]:
        """Pre-flight: fault names that would stop this instant clone (empty list: go)."""
        loc = vim.vm.RelocateSpec(folder=vim.Folder(req.folder), datastore=vim.Datastore(req.datastore),
                                  deviceChange=[self._relocate(req, instant=True)])
        spec = vim.vm.InstantCloneSpec(name=req.name, location=loc, config=self._extra(req))
        checker = self.content.vmProvisioningChecker
        if checker is None:
            return []
        results = await self._task("check instant clone", checker, "CheckInstantClone", vim.VirtualMachine(source),
                                   spec, None)
        return [f"{fault_name(e)}: {getattr(e, 'msg', '') or ''}".strip(": ") for r in results or []
                for e in (r.error or []) if fault_name(e) != "DuplicateName"]

    async def clone(self, source: str, req: CloneRequest, *, linked: bool, snapshot: str | None) -> str:
        loc = vim.vm.RelocateSpec(datastore=vim.Datastore(req.datastore), host=vim.HostSystem(req.host),
                                  diskMoveType="createNewChildDiskBacking" if linked
                                  else "moveAllDiskBackingsAndDisallowSharing")
        if req.resource_pool:
            loc.pool = vim.ResourcePool(req.resource_pool)
        cfg = vim.vm.ConfigSpec(extraConfig=self._extra(req), deviceChange=[self._relocate(req, instant=False)])
        spec = vim.vm.CloneSpec(location=loc, powerOn=True, template=False, config=cfg,
                                snapshot=vim.vm.Snapshot(snapshot) if snapshot else None)
        what = f"{'linked' if linked else 'full'} clone {req.name}"
        vm = await self._task(what, vim.VirtualMachine(source), "Clone", vim.Folder(req.folder), req.name, spec)
        return str(vm._moId)

    async def clone_tasks_in_flight(self) -> int:
        """Clone tasks (instant, linked, full) still queued or running in vCenter, in one read."""
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=self.content.taskManager, skip=True, selectSet=[
            PC.TraversalSpec(type=vim.TaskManager, path="recentTask", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state", "info.descriptionId"])])
        res = await self.soap.invoke(self.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                     PC.RetrieveOptions())
        busy = 0
        for oc in (res.objects if res else []) or []:
            p = _props(oc)
            if p.get("info.state") in ("queued", "running") and str(p.get("info.descriptionId", "")).lower().endswith("clone"):
                busy += 1
        return busy

    async def wait_clone_tasks_settled(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.2
        while await self.clone_tasks_in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    async def power_off(self, vm: str) -> None:
        try:
            await self._task(f"power off {vm}", vim.VirtualMachine(vm), "PowerOff")
        except PermanentError as exc:
            if exc.fault not in ("InvalidPowerState", "InvalidState"):
                raise

    async def destroy(self, vm: str) -> None:
        """Power off (if on) and destroy; a VM that is already gone counts as destroyed."""
        try:
            await self.power_off(vm)
            await self._task(f"destroy {vm}", vim.VirtualMachine(vm), "Destroy")
        except PermanentError as exc:
            if exc.fault != "ManagedObjectNotFound":
                raise
        except vmodl.fault.ManagedObjectNotFound:
            return

    async def create_folder(self, parent: str, name: str) -> str:
        try:
            f = await self.soap.invoke(vim.Folder(parent), "CreateFolder", name)
            return str(f._moId)
        except vim.fault.DuplicateName as exc:
            return str(exc.object._moId)

    async def vm_folder(self) -> str:
        """The first datacenter's VM folder (where the `folder:` of a spec is created)."""
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=self.content.rootFolder, skip=True, selectSet=[
            PC.TraversalSpec(type=vim.Folder, path="childEntity", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.Datacenter, pathSet=["vmFolder"])])
        res = await self.soap.invoke(self.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                     PC.RetrieveOptions())
        for oc in res.objects if res else []:
            return str(_props(oc)["vmFolder"]._moId)
        raise PermanentError("vCenter has no datacenter", "NotFound")

    async def wait_ready(self, vm: str, timeout: float) -> str:
        try:
            return await self.watcher.wait_status(vm, timeout)
        except TimeoutError:
            return "timeout"

    async def freeze_guestops(self, vm: str, user: str, password: str, program: str, args: str) -> None:
        mgr = self.content.guestOperationsManager
        if mgr is None:
            raise PermanentError("this vCenter has no guest operations manager", "NotSupported")
        pm = await self._prop(mgr, vim.vm.guest.GuestOperationsManager, "processManager")
        auth = vim.vm.guest.NamePasswordAuthentication(username=user, password=password, interactiveSession=False)
        spec = vim.vm.guest.ProcessManager.ProgramSpec(programPath=program, arguments=args)
        try:
            await self.soap.invoke(pm, "StartProgramInGuest", vim.VirtualMachine(vm), auth, spec)
        except vmodl.MethodFault as exc:
            raise map_fault(exc, f"start the freeze in {vm}") from None

    async def _prop(self, mo: Any, kind: type, path: str) -> Any:
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=mo)], propSet=[PC.PropertySpec(type=kind, pathSet=[path])])
        res = await self.soap.invoke(self.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                     PC.RetrieveOptions())
        if not res or not res.objects or not res.objects[0].propSet:
            return None
        return res.objects[0].propSet[0].val

    async def tagged_child(self, folder: str, name: str) -> tuple[str, str | None, str | None] | None:
        """(moref, forkscale.pool, forkscale.id) of the VM `name` in `folder`, in two calls, or None."""
        vm = await self.soap.invoke(self.content.searchIndex, "FindChild", vim.Folder(folder), name)
        if vm is None:
            return None
        props = (await self.vm_props([vm._moId], [f'config.extraConfig["{TAG_POOL}"]',
                                                   f'config.extraConfig["{TAG_ID}"]'])).get(vm._moId, {})
        pool, ident = (props.get(f'config.extraConfig["{t}"]') for t in (TAG_POOL, TAG_ID))
        return vm._moId, (pool.value if pool is not None else None), (ident.value if ident is not None else None)

    async def vm_props(self, vms: list[str], paths: list[str]) -> dict[str, dict[str, Any]]:
        """Properties of several VMs in one RetrievePropertiesEx (paged); VMs that vanished are left out."""
        if not vms:
            return {}
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.VirtualMachine(m)) for m in vms],
                             propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=paths)],
                             reportMissingObjectsInResults=True)
        pc = self.content.propertyCollector
        res = await self.soap.invoke(pc, "RetrievePropertiesEx", [spec], PC.RetrieveOptions())
        out: dict[str, dict[str, Any]] = {}
        while res is not None:
            for oc in res.objects or []:
                if not oc.missingSet:
                    out[oc.obj._moId] = _props(oc)
            res = await self.soap.invoke(pc, "ContinueRetrievePropertiesEx", res.token) if res.token else None
        return out

    async def chain_depths(self, vms: list[str]) -> dict[str, int]:
        """Deepest delta chain of each VM's disks, from `layoutEx.disk[].chain` (one batched read).

        layoutEx is the only place the deltas a running source gets per instant clone show up
        (they are not in the snapshot tree).
        """
        out: dict[str, int] = {}
        for moref, props in (await self.vm_props(vms, ["layoutEx.disk"])).items():
            out[moref] = max((len(d.chain or []) for d in props.get("layoutEx.disk") or []), default=0)
        return out

    async def is_frozen(self, vm: str) -> bool:
        return bool(await self._prop(vim.VirtualMachine(vm), vim.VirtualMachine, "runtime.instantCloneFrozen"))

    async def wait_frozen(self, vm: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.2
        while time.monotonic() < deadline:
            if await self.is_frozen(vm):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 3.0)
        raise PermanentError(f"the source {vm} did not report runtime.instantCloneFrozen within {timeout:.0f}s; "
                             "check that the guest ran `vmware-rpctool \"instantclone.freeze\"`", "FreezeTimeout")


@dataclass
class NicInfo:
    key: int
    label: str
    mac: str
    network: tuple[str, str, str | None]  # (kind, moref, dvs uuid), as in Inventory.networks
    connected: bool
    start_connected: bool


@dataclass
class VmDetail:
    """Power state, per-disk delta-chain depth (from layoutEx) and NICs of one VM, read at once."""

    power: str
    chains: dict[int, int]  # disk device key -> files in its chain (layoutEx.disk[].chain), base first
    nics: list[NicInfo]
    extra: dict[str, str] = field(default_factory=dict)  # the extraConfig keys asked for (when set)


async def vm_detail(driver: Driver, vm: str, *, tags: tuple[str, ...] = ()) -> VmDetail:
    """One property read: `runtime.powerState`, `layoutEx`, `config.hardware.device` (+ extraConfig `tags`).

    The running-source deltas of instant clones are invisible in the snapshot tree; only
    layoutEx (or walking `backing.parent`) shows them.
    """
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.VirtualMachine(vm))], propSet=[PC.PropertySpec(
        type=vim.VirtualMachine, pathSet=["runtime.powerState", "layoutEx", "config.hardware.device",
                                          *(f'config.extraConfig["{t}"]' for t in tags)])])
    try:
        res = await driver.soap.invoke(driver.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                       PC.RetrieveOptions())
    except vmodl.MethodFault as exc:
        raise map_fault(exc, f"read {vm}") from None
    p = _props(res.objects[0]) if res and res.objects else {}
    layout = p.get("layoutEx")
    chains = {int(d.key): len(d.chain or []) for d in (layout.disk if layout is not None else None) or []}
    nics = []
    for dev in p.get("config.hardware.device") or []:
        if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
            continue
        b = dev.backing
        net: tuple[str, str, str | None] = ("network", "", None)
        if isinstance(b, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo) and b.port:
            net = ("dvportgroup", str(b.port.portgroupKey or ""), b.port.switchUuid)
        elif isinstance(b, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo) and b.network is not None:
            net = ("network", str(b.network._moId), None)
        conn = dev.connectable
        nics.append(NicInfo(key=int(dev.key), label=dev.deviceInfo.label if dev.deviceInfo else str(dev.key),
                            mac=str(dev.macAddress or "").lower(), network=net,
                            connected=bool(conn and conn.connected), start_connected=bool(conn and conn.startConnected)))
    extra = {t: str(p[f'config.extraConfig["{t}"]'].value) for t in tags
             if p.get(f'config.extraConfig["{t}"]') is not None}
    return VmDetail(power=str(p.get("runtime.powerState", "unknown")), chains=chains, nics=nics, extra=extra)


def _props(oc: Any) -> dict[str, Any]:
    return {p.name: p.val for p in oc.propSet or []}
