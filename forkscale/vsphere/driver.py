"""The vSphere driver: `forkscale.vsphere.ports.VSphere` implemented with pyVmomi on the async transport.

The engine never touches pyVmomi: it gets plain dataclasses (`forkscale.vsphere.model`) and
string morefs, and errors already mapped onto `PermanentError` (don't retry this rung) or
`TemporaryError` (retry later) — the fault mapping lives in `forkscale.vsphere.faults`, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pyVmomi import vim, vmodl

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.vsphere.faults import LoginRefused, TaskFailed, fault_name, map_fault
from forkscale.vsphere.fleetread import HOST_COUNTERS, host_memory, perf_counter_ids, read_fleet
from forkscale.vsphere.guest import GuestOps
from forkscale.vsphere.informer import Informer
from forkscale.vsphere.model import TAG_ID, TAG_POOL, CloneRequest, FleetRead, Inventory, VmDetail
from forkscale.vsphere.reads import (
    clone_tasks_in_flight,
    extra_value,
    first_vm_folder,
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


class Driver(GuestOps):
    """Connect, read inventory in one batched pass, clone, power, destroy, freeze, run programs and move
    files in guests — asynchronously."""

    def __init__(self, soap: Soap, *, task_timeout_s: float = 900.0, informer: Informer | None = None) -> None:
        self.soap = soap
        self.watcher = Watcher(soap)
        self.informer = informer  # inventory() and read_fleet() from a model kept current (serve, metrics)
        self.task_timeout_s = task_timeout_s
        self._counter_ids: dict[str, int] | None = None
        self._perf_warned = False
        self._guest_managers: dict[str, Any] = {}
        # Called as hook(method, seconds, fault name or None) when a task ends (e.g. Telemetry.observe_task).
        self.task_hooks: list[Callable[[str, float, str | None], None]] = []

    async def open(self) -> None:
        """Log in (a refused login is `LoginRefused`) and start the task watcher."""
        try:
            await self.soap.open()
        except vim.fault.InvalidLogin:
            raise LoginRefused(self.soap.user) from None
        await self.watcher.start()
        if self.informer is not None:
            await self.informer.start()

    async def close(self) -> None:
        if self.informer is not None:
            await self.informer.stop()
        await self.watcher.stop()
        await self.soap.close()

    @property
    def content(self) -> Any:
        return self.soap.content

    # reads --------------------------------------------------------------------------------
    async def inventory(self) -> Inventory:
        """Everything a plan needs, in a few batched reads (never one call per VM), or from the informer."""
        if self.informer is not None:
            return await self.informer.inventory()
        return await self._read("read the inventory", read_inventory(self.soap))

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
        more = [self._relocate(dataclasses.replace(req, nic_key=k, mac=m, network=n), instant=False)
                for k, m, n in req.more_nics]
        cfg = vim.vm.ConfigSpec(extraConfig=self._extra(req),
                                deviceChange=[self._relocate(req, instant=False), *more])
        spec = vim.vm.CloneSpec(location=loc, powerOn=True, template=False, config=cfg,
                                snapshot=vim.vm.Snapshot(snapshot) if snapshot else None)
        what = f"{'linked' if linked else 'full'} clone {req.name}"
        vm = await self._task(what, vim.VirtualMachine(source), "Clone", vim.Folder(req.folder), req.name, spec)
        return str(vm._moId)

    async def clone_tasks_in_flight(self) -> int:
        """Clone tasks (instant, linked, full) still queued or running in vCenter, in one read."""
        return await self._read("read recent tasks", clone_tasks_in_flight(self.soap))

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
        folder = await self._read("read the datacenters", first_vm_folder(self.soap))
        if folder is None:
            raise PermanentError("vCenter has no datacenter", "NotFound")
        return folder

    async def wait_ready(self, vm: str, timeout: float) -> str:
        try:
            return await self.watcher.wait_status(vm, timeout)
        except TimeoutError:
            return "timeout"

    async def freeze_guestops(self, vm: str, user: str, password: str, program: str, args: str) -> None:
        mgr = self.content.guestOperationsManager
        if mgr is None:
            raise PermanentError("this vCenter has no guest operations manager", "NotSupported")
        pm = await retrieve_one(self.soap, mgr, vim.vm.guest.GuestOperationsManager, "processManager")
        auth = vim.vm.guest.NamePasswordAuthentication(username=user, password=password, interactiveSession=False)
        spec = vim.vm.guest.ProcessManager.ProgramSpec(programPath=program, arguments=args)
        try:
            await self.soap.invoke(pm, "StartProgramInGuest", vim.VirtualMachine(vm), auth, spec)
        except vmodl.MethodFault as exc:
            raise map_fault(exc, f"start the freeze in {vm}") from None

    async def tagged_child(self, folder: str, name: str) -> tuple[str, str | None, str | None] | None:
        """(moref, forkscale.pool, forkscale.id) of the VM `name` in `folder`, in two calls, or None."""
        vm = await self.soap.invoke(self.content.searchIndex, "FindChild", vim.Folder(folder), name)
        if vm is None:
            return None
        props = (await self.vm_props([vm._moId], [f'config.extraConfig["{TAG_POOL}"]',
                                                   f'config.extraConfig["{TAG_ID}"]'])).get(vm._moId, {})
        return str(vm._moId), extra_value(props, TAG_POOL), extra_value(props, TAG_ID)

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
