"""The vSphere driver: `forkscale.vsphere.ports.VSphere` implemented with pyVmomi on the async transport.

The engine never touches pyVmomi: it gets plain dataclasses (`forkscale.vsphere.model`) and
string morefs, and errors already mapped onto `PermanentError` (don't retry this rung) or
`TemporaryError` (retry later) — the fault mapping lives in `forkscale.vsphere.faults`, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pyVmomi import vim, vmodl

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.vsphere import clonexml
from forkscale.vsphere.disks import UserDiskOps
from forkscale.vsphere.faults import LoginRefused, TaskFailed, describe, fault_name, map_fault
from forkscale.vsphere.fleetread import HOST_COUNTERS, host_memory, perf_counter_ids, read_fleet
from forkscale.vsphere.guest import GuestOps
from forkscale.vsphere.informer import Informer
from forkscale.vsphere.keyed import keyed
from forkscale.vsphere.model import (
    STATUS_KEY,
    TAG_ID,
    TAG_POOL,
    CloneRequest,
    FleetRead,
    Inventory,
    NetworkRef,
    VmDetail,
)
from forkscale.vsphere.ports import SourceThawed, TaskLost, TaskTimeout
from forkscale.vsphere.reads import (
    clone_tasks_in_flight,
    extra_value,
    first_vm_folder,
    hosts_entering_maintenance,
    read_inventory,
    read_vm_detail,
    retrieve_one,
    vm_props,
)
from forkscale.vsphere.transport import Soap, method_info
from forkscale.vsphere.watcher import Watcher

log = logging.getLogger("forkscale.vsphere")
PC = vmodl.query.PropertyCollector
T = TypeVar("T")


class Driver(GuestOps, UserDiskOps):
    """Connect, read inventory in one batched pass, clone, power, destroy, freeze, run programs and move
    files in guests — asynchronously."""

    def __init__(self, soap: Soap, *, task_timeout_s: float = 900.0, informer: Informer | None = None) -> None:
        self.soap = soap
        self.watcher = Watcher(soap, vms=informer is None)
        self.informer = informer  # inventory() and read_fleet() from a model kept current (serve, metrics)
        if informer is not None:
            informer.vm_hooks.append(self.watcher.vm_update)  # guest status from the model, not a 2nd filter
        self.task_timeout_s = task_timeout_s
        self._counter_ids: dict[str, int] | None = None
        self._perf_warned = False
        self._guest_managers: dict[str, Any] = {}
        self._nics: dict[str, asyncio.Task[dict[int, Any]]] = {}  # source moref -> its NICs by device key
        self._net_names: dict[str, str] = {}  # standard port group moref -> name (a backing's deviceName)
        # (source, NIC key, network, disconnected) -> that NIC edit written, its MAC `clonexml.MAC_MARK`
        self._nic_xml: dict[tuple[str, int | None, NetworkRef, bool], str] = {}
        self._writer: clonexml.Writer | None = None
        # Called as hook(method, seconds, fault name or None) when a task ends (e.g. Telemetry.observe_task).
        self.task_hooks: list[Callable[[str, float, str | None], None]] = []

    async def open(self) -> None:
        """Log in (a refused login is `LoginRefused`) and start the task watcher."""
        try:
            await self.soap.open()
        except vim.fault.InvalidLogin:
            raise LoginRefused(self.soap.user) from None
        except vmodl.MethodFault as exc:
            raise map_fault(exc, "log in to vCenter") from None
        await self._read("start the task watcher", self.watcher.start())
        if self.informer is not None:
            await self._read("read the inventory", self.informer.start())

    def stop_waiting(self) -> None:
        """Stopping: calls waiting through a vCenter outage give up now (`VCenterUnavailable`)."""
        self.soap.stop_waiting()

    async def close(self) -> None:
        if self.informer is not None:
            await self.informer.stop()
        await self.watcher.stop()
        await self.soap.close()

    @property
    def content(self) -> Any:
        return self.soap.content

    @property
    def epoch(self) -> int:
        return self.soap.epoch

    @property
    def api_version(self) -> str:
        about = getattr(self.content, "about", None)
        return str(getattr(about, "apiVersion", "") or "")

    # reads --------------------------------------------------------------------------------
    async def inventory(self) -> Inventory:
        """Everything a plan needs, in a few batched reads (never one call per VM), or from the informer."""
        if self.informer is not None:
            inv = await self.informer.inventory()
        else:
            inv = await self._read("read the inventory", read_inventory(self.soap))
        self._net_names.update({moref: name for name, (kind, moref, _) in inv.networks.items() if kind == "network"})
        return inv

    async def vm_detail(self, vm: str, *, tags: tuple[str, ...] = ()) -> VmDetail:
        """Power state, per-disk chain depth and NICs of one VM (+ the extraConfig `tags` asked for)."""
        return await self._read(f"read {vm}", read_vm_detail(self.soap, vm, tags=tags))

    async def vm_props(self, vms: list[str], paths: list[str]) -> dict[str, dict[str, Any]]:
        """Properties of several VMs in one read; VMs that vanished are left out."""
        return await self._read("read VMs", vm_props(self.soap, vms, paths))

    async def read_fleet(self, *, page_size: int = 1000) -> FleetRead:
        """VMs, hosts and host memory for the exporter: a fixed number of requests per refresh.

        The counter catalog is read once; a vCenter without the P-Share counters or statistics
        still yields the rest (warned once).
        """
        if self._counter_ids is None:
            self._counter_ids = await self._read("read the counter catalog", perf_counter_ids(self.soap, HOST_COUNTERS))
            missing = [n for n in HOST_COUNTERS if n not in self._counter_ids]
            if missing:
                log.warning("vCenter has no performance counter %s; host P-Share metrics stay empty",
                            ", ".join(missing))
        if self.informer is not None and self.informer.fleet_paths:
            read = await self.informer.fleet()
        else:
            read = await self._read("read the fleet", read_fleet(self.soap, page_size=page_size, counter_ids={}))
        try:
            read.host_memory = await host_memory(self.soap, read.hosts, self._counter_ids)
        except vmodl.MethodFault as exc:  # e.g. a vCenter without statistics: keep the rest
            if not self._perf_warned:
                log.warning("QueryPerf failed (%s); host P-Share metrics stay empty", fault_name(exc))
                self._perf_warned = True
        return read

    async def _read(self, what: str, read: Awaitable[T]) -> T:
        try:
            return await read
        except vmodl.MethodFault as exc:
            raise map_fault(exc, what) from None

    # tasks ----------------------------------------------------------------------------------
    async def _task(self, what: str, mo: Any, method: str, *args: Any) -> Any:
        return (await self._task_end(what, mo, method, *args))[0]

    async def _task_end(self, what: str, mo: Any, method: str, *args: Any,
                        body: bytes | None = None) -> tuple[Any, int | None]:
        """(result, the watcher update that reported its end) of one task, faults mapped once.

        `body`: the request already written (`Soap.invoke`). `TaskLost`: vCenter (restarted) no
        longer knows the task; what it did is for the caller to find.
        """
        started = time.monotonic()
        wsdl = str(method_info(type(mo), method).wsdlName)  # "PowerOff" -> "PowerOffVM_Task", as vSphere names it
        try:
            task = await self.soap.invoke(mo, method, *args, body=body)
            ended = await self.watcher.wait_task_end(task, self.task_timeout_s, entity=str(mo._moId))
            self._task_ended(wsdl, started, None)
            return ended
        except TimeoutError as exc:
            self._task_ended(wsdl, started, "Timeout")
            raise TaskTimeout(f"{what}: task {task._moId} did not finish in {self.task_timeout_s:g}s (it may "
                              "still succeed)", str(task._moId)) from exc
        except TaskLost as exc:
            self._task_ended(wsdl, started, "TaskLost")
            raise TaskLost(f"{what}: {exc}; vCenter restarted?", exc.task) from None
        except (vmodl.MethodFault, TaskFailed) as exc:
            err = map_fault(exc, what)
            self._task_ended(wsdl, started, getattr(err, "fault", "Fault"))
            raise err from None

    def _task_ended(self, wsdl: str, started: float, fault: str | None) -> None:
        seconds = time.monotonic() - started
        for hook in list(self.task_hooks):
            try:
                hook(wsdl, seconds, fault)
            except Exception:  # a broken metrics hook must never fail a clone
                log.exception("task hook %r failed", hook)

    async def _source_nics(self, source: str) -> dict[int, Any]:
        """The network adapters of a clone source by device key, read once per source (they do not change)."""
        read = self._nics.get(source)
        if read is None:
            read = self._nics[source] = asyncio.ensure_future(self._read_nics(source))
        try:
            return await asyncio.shield(read)
        except (PermanentError, TemporaryError):
            if self._nics.get(source) is read:
                self._nics.pop(source, None)  # read again next time
            raise

    async def _read_nics(self, source: str) -> dict[int, Any]:
        devices = await self._read(f"read the devices of {source}", retrieve_one(
            self.soap, vim.VirtualMachine(source), vim.VirtualMachine, "config.hardware.device"))
        return {int(d.key): d for d in devices or [] if isinstance(d, vim.vm.device.VirtualEthernetCard)}

    async def _network_name(self, moref: str) -> str:
        name = self._net_names.get(moref)
        if name is None:
            name = str(await self._read(f"read {moref}", retrieve_one(self.soap, vim.Network(moref), vim.Network, "name"))
                       or "")
            self._net_names[moref] = name
        return name

    async def _backing(self, network: NetworkRef) -> Any:
        kind, net, dvs = network
        if kind == "dvportgroup":
            return vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(switchUuid=dvs, portgroupKey=net))
        # deviceName is required (VirtualDeviceDeviceBackingInfo); `network` is "not used during configuration"
        return vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=await self._network_name(net),
                                                                    network=vim.Network(net))

    async def _nic_change(self, source: str, key: int | None, mac: str, network: NetworkRef, *, disconnect: bool,
                          instant: bool) -> Any:
        """An edit of one of the source's own NICs: its class, key, slot and label, with our MAC and port group.

        An edit never changes a device's class (an E1000 stays an E1000), so it is built from the
        device the source has; `key` None means the source's first NIC.
        """
        nics = await self._source_nics(source)
        dev = nics.get(key) if key is not None else (nics[min(nics)] if nics else None)
        if dev is None:
            raise PermanentError(f"source {source} has no network adapter" + (f" with key {key}" if key else "")
                                 + f" (its adapters: {sorted(nics) or 'none'})", "InvalidDeviceSpec")
        conn = vim.vm.device.VirtualDevice.ConnectInfo(startConnected=not disconnect, allowGuestControl=True,
                                                       connected=not disconnect)
        if instant:
            conn.migrateConnect = "disconnect" if disconnect else "connect"
        backing = await self._backing(network)
        label = dev.deviceInfo.label if dev.deviceInfo is not None else f"Network adapter {dev.key}"
        summary = backing.deviceName if hasattr(backing, "deviceName") else network[1]
        nic = type(dev)(key=dev.key, controllerKey=dev.controllerKey, unitNumber=dev.unitNumber,
                        deviceInfo=vim.Description(label=label, summary=summary), addressType="manual",
                        macAddress=mac, backing=backing, connectable=conn, wakeOnLanEnabled=dev.wakeOnLanEnabled)
        return vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)

    async def _nic_changes(self, source: str, req: CloneRequest, *, instant: bool) -> list[Any]:
        nics = [(req.nic_key, req.mac, req.network), *req.more_nics]
        return [await self._nic_change(source, k, m, n, disconnect=req.disconnect, instant=instant) for k, m, n in nics]

    def _extra(self, req: CloneRequest) -> list[Any]:
        return [vim.option.OptionValue(key=k, value=v) for k, v in req.extra.items()]

    async def _instant_clone_body(self, source: str, req: CloneRequest) -> bytes:
        """The `InstantClone_Task` request, written by `clonexml` (what pyVmomi would write for the
        spec `check_instant_clone` builds, at a fraction of the CPU)."""
        nics = [(req.nic_key, req.mac, req.network), *req.more_nics]
        written = []
        for key, mac, network in nics:
            mark = (source, key, network, req.disconnect)
            fragment = self._nic_xml.get(mark)
            if fragment is None:
                change = await self._nic_change(source, key, clonexml.MAC_MARK, network, disconnect=req.disconnect,
                                                instant=True)
                fragment = self._nic_xml[mark] = clonexml.device_change(self.soap.stub.version, change)
            written.append(clonexml.with_mac(fragment, mac))
        if self._writer is None or self._writer.stub is not self.soap.stub:
            self._writer = clonexml.Writer(self.soap.stub)
        loc = clonexml.Location(req.folder, req.datastore, req.resource_pool, written)
        return self._writer.instant_clone(source, req.name, loc, req.extra)

    async def instant_clone(self, source: str, req: CloneRequest) -> str:
        """The clone's moref. `SourceThawed` when the source is thawed, or thawed before the clone was
        made (then `clone` names the VM made: a copy of a running machine, for the caller to remove)."""
        what = f"instant clone {req.name} of {source}"
        await self._read(f"follow the source {source}", self.watcher.follow(source))
        self._refuse_thawed(source, what)
        body = await self._instant_clone_body(source, req)
        vm, seq = await self._task_end(what, vim.VirtualMachine(source), "InstantClone", body=body)
        moref = self._made(vm, what)
        # its end read directly (not in the stream): ask vCenter whether a source seen frozen still is
        late = seq is None and self.watcher.frozen.get(source) is True and not await self.is_frozen(source)
        if late or self.watcher.thawed_at(source, seq):
            raise SourceThawed(f"{what}: the source thawed before the clone was made; {moref} is a copy of a "
                               "running machine", source, clone=moref)
        return moref

    def source_thawed(self, source: str) -> bool:
        """Whether vCenter reported `source` thawed (it was frozen when first followed) and not frozen since."""
        return self.watcher.thawed_at(source, None)

    def _refuse_thawed(self, source: str, what: str) -> None:
        if self.watcher.thawed_at(source, None):
            raise SourceThawed(f"{what}: the source thawed (runtime.instantCloneFrozen is false); no instant "
                               "clone from it", source)

    @staticmethod
    def _made(vm: Any, what: str) -> str:
        """The moref of the VM a clone task made; a task that succeeded without one is a lost answer."""
        moref = getattr(vm, "_moId", None)
        if not moref:
            raise TemporaryError(f"{what}: the task ended without naming the VM it made", "ConnectionError")
        return str(moref)

    async def check_instant_clone(self, source: str, req: CloneRequest) -> list[str]:
        """Pre-flight: one line per fault that would stop this instant clone (empty list: go)."""
        checker = self.content.vmProvisioningChecker
        if checker is None:
            return []
        loc = vim.vm.RelocateSpec(folder=vim.Folder(req.folder), datastore=vim.Datastore(req.datastore),
                                  deviceChange=await self._nic_changes(source, req, instant=True))
        spec = vim.vm.InstantCloneSpec(name=req.name, location=loc, config=self._extra(req))
        results = await self._task(f"check instant clone of {source}", checker, "CheckInstantClone",
                                   vim.VirtualMachine(source), spec, None)
        return [describe(e) for r in results or [] for e in (r.error or []) if fault_name(e) != "DuplicateName"]

    async def clone(self, source: str, req: CloneRequest, *, linked: bool, snapshot: str | None) -> str:
        what = f"{'linked' if linked else 'full'} clone {req.name} of {source}"
        loc = vim.vm.RelocateSpec(datastore=vim.Datastore(req.datastore), host=vim.HostSystem(req.host),
                                  diskMoveType="createNewChildDiskBacking" if linked
                                  else "moveAllDiskBackingsAndDisallowSharing")
        if req.resource_pool:
            loc.pool = vim.ResourcePool(req.resource_pool)
        cfg = vim.vm.ConfigSpec(extraConfig=self._extra(req),
                                deviceChange=await self._nic_changes(source, req, instant=False))
        spec = vim.vm.CloneSpec(location=loc, powerOn=req.power_on, template=False, config=cfg,
                                snapshot=vim.vm.Snapshot(snapshot) if snapshot else None)
        vm = await self._task(what, vim.VirtualMachine(source), "Clone", vim.Folder(req.folder), req.name, spec)
        return self._made(vm, what)

    async def clone_tasks_in_flight(self) -> int:
        """Clone tasks (instant, linked, full) still queued or running in vCenter, in one read."""
        return await self._read("read recent tasks", clone_tasks_in_flight(self.soap))

    async def wait_clone_tasks_settled(self, timeout: float) -> bool:
        """Wait until vCenter shows no clone task queued or running; False if some still were at `timeout`."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while await self.clone_tasks_in_flight():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)
        return True

    async def task_ended(self, task: str) -> bool:
        """Whether a task has ended (success or error); one vCenter no longer knows has ended long ago."""
        try:
            state = await retrieve_one(self.soap, vim.Task(task), vim.Task, "info.state")
        except vmodl.fault.ManagedObjectNotFound:
            return True
        except vmodl.MethodFault as exc:
            raise map_fault(exc, f"read task {task}") from None
        return state not in ("queued", "running")

    async def power_on(self, vm: str) -> None:
        try:
            await self._task(f"power on {vm}", vim.VirtualMachine(vm), "PowerOn", None)
        except PermanentError as exc:
            if exc.fault not in ("InvalidPowerState", "InvalidState"):
                raise

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

    # moves (day-2) ------------------------------------------------------------------------------
    async def create_snapshot(self, vm: str, name: str) -> str:
        snap = await self._task(f"snapshot {vm}", vim.VirtualMachine(vm), "CreateSnapshot", name,
                                "forkscale: linked clones fork from here", False, False)
        return str(snap._moId)

    async def relocate(self, vm: str, *, host: str | None = None, datastore: str | None = None) -> None:
        spec = vim.vm.RelocateSpec()
        if host is not None:
            spec.host = vim.HostSystem(host)
        if datastore is not None:
            spec.datastore = vim.Datastore(datastore)
            spec.diskMoveType = "moveAllDiskBackingsAndDisallowSharing"
        where = " and ".join(x for x in (host and f"host {host}", datastore and f"datastore {datastore}") if x)
        await self._task(f"relocate {vm} to {where or 'where it is'}", vim.VirtualMachine(vm), "Relocate", spec)

    async def promote_disks(self, vm: str) -> None:
        await self._task(f"promote the disks of {vm}", vim.VirtualMachine(vm), "PromoteDisks", True, None)

    async def enter_maintenance(self, host: str, timeout_s: int) -> None:
        await self._task(f"enter maintenance mode on {host}", vim.HostSystem(host), "EnterMaintenanceMode",
                         int(timeout_s), False)

    async def exit_maintenance(self, host: str) -> None:
        await self._task(f"exit maintenance mode on {host}", vim.HostSystem(host), "ExitMaintenanceMode", 0)

    async def hosts_entering_maintenance(self) -> set[str]:
        return await self._read("read recent tasks", hosts_entering_maintenance(self.soap))

    async def create_folder(self, parent: str, name: str) -> str:
        """A folder `name` in `parent`: created, or the one already there (found by name, not trusted from the fault)."""
        try:
            f = await self.soap.invoke(vim.Folder(parent), "CreateFolder", name)
            return str(f._moId)
        except vim.fault.DuplicateName:
            found = await self.soap.invoke(self.content.searchIndex, "FindChild", vim.Folder(parent), name)
            if not isinstance(found, vim.Folder):
                raise PermanentError(f"cannot create folder {name!r}: the name is taken by {found}",
                                     "DuplicateName") from None
            return str(found._moId)
        except vmodl.MethodFault as exc:
            raise map_fault(exc, f"create folder {name}") from None

    async def vm_folder(self) -> str:
        """The first datacenter's VM folder (where the `folder:` of a spec is created)."""
        folder = await self._read("read the datacenters", first_vm_folder(self.soap))
        if folder is None:
            raise PermanentError("vCenter has no datacenter", "NotFound")
        return folder

    async def wait_ready(self, vm: str, timeout: float) -> str:
        """`ready`, `error:...` as the guest reports it, or `timeout`.

        On a server that refuses keyed extraConfig paths the watcher cannot follow the status,
        so it is polled (with backoff) instead.
        """
        if self.soap.keyed_paths_refused:
            return await self._poll_status(vm, timeout)
        try:
            return await self.watcher.wait_status(vm, timeout)
        except TimeoutError:
            return "timeout"

    async def _poll_status(self, vm: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            value = extra_value((await self.vm_props([vm], [keyed(STATUS_KEY)])).get(vm, {}), STATUS_KEY) or ""
            if value == "ready" or value.startswith("error"):
                return value
            if time.monotonic() >= deadline:
                return "timeout"
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 5.0)

    async def freeze_guestops(self, vm: str, user: str, password: str, program: str, args: str) -> None:
        mgr = self.content.guestOperationsManager
        if mgr is None:
            raise PermanentError("this vCenter has no guest operations manager", "NotSupported")
        pm = await self._read("read the guest process manager", retrieve_one(
            self.soap, mgr, vim.vm.guest.GuestOperationsManager, "processManager"))
        auth = vim.vm.guest.NamePasswordAuthentication(username=user, password=password, interactiveSession=False)
        spec = vim.vm.guest.ProcessManager.ProgramSpec(programPath=program, arguments=args)
        try:
            await self.soap.invoke(pm, "StartProgramInGuest", vim.VirtualMachine(vm), auth, spec)
        except vmodl.MethodFault as exc:
            raise map_fault(exc, f"start the freeze in {vm}") from None

    async def tagged_child(self, folder: str, name: str) -> tuple[str, str | None, str | None] | None:
        """(moref, forkscale.pool, forkscale.id) of the VM `name` in `folder`, in two calls, or None."""
        vm = await self._read(f"find {name}", self.soap.invoke(self.content.searchIndex, "FindChild",
                                                                vim.Folder(folder), name))
        if vm is None:
            return None
        props = (await self.vm_props([vm._moId], [keyed(TAG_POOL), keyed(TAG_ID)])).get(vm._moId, {})
        return str(vm._moId), extra_value(props, TAG_POOL), extra_value(props, TAG_ID)

    async def snapshot_names(self, vm: str) -> dict[str, str]:
        """Every snapshot of `vm`: moref -> name, from one read of the tree."""
        roots = await self._read(f"read the snapshots of {vm}", retrieve_one(
            self.soap, vim.VirtualMachine(vm), vim.VirtualMachine, "snapshot.rootSnapshotList"))
        found: dict[str, str] = {}
        todo = list(roots or [])
        while todo:
            node = todo.pop()
            found[str(node.snapshot._moId)] = str(node.name)
            todo.extend(node.childSnapshotList or [])
        return found

    async def snapshots_named(self, vm: str, name: str) -> list[str]:
        """The morefs of `vm`'s snapshots called `name` (vSphere allows several), from one read of the tree."""
        roots = await self._read(f"read the snapshots of {vm}", retrieve_one(
            self.soap, vim.VirtualMachine(vm), vim.VirtualMachine, "snapshot.rootSnapshotList"))
        found: list[str] = []
        todo = list(roots or [])
        while todo:
            node = todo.pop()
            if node.name == name:
                found.append(str(node.snapshot._moId))
            todo.extend(node.childSnapshotList or [])
        return found

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
        return bool(await self._read(f"read {vm}", retrieve_one(
            self.soap, vim.VirtualMachine(vm), vim.VirtualMachine, "runtime.instantCloneFrozen")))

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
