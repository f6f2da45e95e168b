"""The twin's VirtualMachine: config, runtime, guest, snapshots, layoutEx and quickStats views.

State lives in plain attributes; the vSphere-shaped properties are rendered from it on read
(and cached per object version, since a ConfigInfo for 5,000 VMs is not free).
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

from .disks import DiskFile, backing_for, layout_files
from .inventory import Entity, Folder, Host, Network, ResourcePool
from .memory import MemState, vm_shared_private
from .mo import MO

if TYPE_CHECKING:
    from .inventory import Datastore
    from .world import World


NIC_CLASSES: dict[str, type] = {
    "vmxnet3": vim.vm.device.VirtualVmxnet3, "vmxnet2": vim.vm.device.VirtualVmxnet2,
    "e1000": vim.vm.device.VirtualE1000, "e1000e": vim.vm.device.VirtualE1000e, "pcnet32": vim.vm.device.VirtualPCNet32,
}


@dataclass
class Nic:
    key: int
    mac: str
    network: Network
    address_type: str = "assigned"
    connected: bool = True
    start_connected: bool = True
    label: str = "Network adapter 1"
    kind: str = "vmxnet3"  # a key of NIC_CLASSES: the adapter's device class, which no edit changes

    def device_class(self) -> type:
        return NIC_CLASSES[self.kind]


@dataclass
class Disk:
    key: int
    capacity_kb: int
    top: DiskFile
    unit: int = 0
    label: str = "Hard disk 1"
    mode: str = "persistent"  # VirtualDiskMode: independent_* disks are left out of snapshots and delta clones

    @property
    def independent(self) -> bool:
        return self.mode.startswith("independent")


@dataclass
class GuestState:
    tools_running: bool = True
    ip: str | None = None
    hostname: str | None = None
    agent: str = "simulated"  # "simulated": the twin plays the guest; "external": a real script does


@dataclass
class SnapshotNode:
    mo: Any  # Snapshot MO
    name: str
    description: str
    created: datetime
    disks: dict[int, DiskFile]  # device key -> file frozen at snapshot time
    power_state: str
    children: list[SnapshotNode] = field(default_factory=list)
    parent: SnapshotNode | None = None
    sid: int = 0


class Snapshot(MO):
    """A snapshot is a managed object but not a ManagedEntity."""

    kind = vim.vm.Snapshot

    def __init__(self, world: World, moid: str, vm: VM) -> None:
        super().__init__(world, moid)
        self.vm = vm
        self.node: SnapshotNode

    def p_vm(self) -> Any:
        return self.vm.ref

    def p_childSnapshot(self) -> list[Any]:  # noqa: N802
        return [c.mo.ref for c in self.node.children]

    def p_config(self) -> Any:
        # The VM's configuration, with each disk backed by the file frozen at snapshot time.
        cfg = self.vm._config()
        for dev in cfg.hardware.device:
            if isinstance(dev, vim.vm.device.VirtualDisk) and dev.key in self.node.disks:
                dev.backing = backing_for(self.node.disks[dev.key])
        return cfg


def _to_dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class VM(Entity):
    kind = vim.VirtualMachine
    parent: Folder  # a VM always lives in a folder


    def __init__(self, world: World, moid: str, name: str, folder: Folder, *, host: Host,
                 pool: ResourcePool, datastore: Datastore, memory_mb: int, num_cpu: int, guest_id: str,
                 guest_full_name: str) -> None:
        super().__init__(world, moid, name, folder)
        self.stem = name  # the VM's directory and file names: kept when the VM is renamed, as on vCenter
        self.host = host
        host.vms.add(self)
        self.pool = pool
        self.home = datastore
        self.memory_mb = memory_mb
        self.num_cpu = num_cpu
        self.guest_id = guest_id
        self.guest_full_name = guest_full_name
        self.uuid = str(uuidlib.UUID(int=world.rng.getrandbits(128)))
        self.instance_uuid = str(uuidlib.UUID(int=world.rng.getrandbits(128)))
        self.power_state = "poweredOff"
        self.frozen = False
        self.template = False
        self.extra: dict[str, str] = {}
        self.nics: list[Nic] = []
        self.disks: list[Disk] = []
        self.snapshots: list[SnapshotNode] = []
        self.current_snapshot: SnapshotNode | None = None
        self.guest = GuestState(tools_running=False)
        self.mem = MemState(touched_mb=int(memory_mb * world.memory.touched_fraction))
        self.last_fork_at: float | None = None
        self.fork_kids: set[VM] = set()
        self.boot_time: float | None = None
        self.created = world.now()
        self.modified = world.now()
        self.change = 0
        self.annotation = ""
        self.settings: dict[str, Any] = {}  # kept ConfigSpec settings (forkscale.sim.vmsettings)
        self.source_delta_done = False  # frozen source: its one extra delta exists
        self.guest_drawn_s = 0.0  # the guest boot/resume latency last drawn (bench/fanout.py computes the ideal)
        self._cache: dict[str, tuple[int, Any]] = {}

    @property
    def power_state(self) -> str:
        return self._power_state

    @power_state.setter
    def power_state(self, value: str) -> None:
        self._power_state = value
        self.host.mem_epoch += 1  # memory.admit counts powered-on VMs only

    # relations ----------------------------------------------------------------------------
    def move_host(self, host: Host) -> None:
        self.host.vms.discard(self)
        self.host = host
        host.vms.add(self)

    def fork_children(self) -> set[VM]:
        """The live instant clones forked from this VM (destroyed ones are forgotten here; a clone
        destroyed before a restart of the twin comes back from its state directory as None)."""
        live = {c for c in self.fork_kids if c is not None and c.alive}
        if len(live) != len(self.fork_kids):
            self.fork_kids = live
        return set(live)

    def datastores(self) -> list[Datastore]:
        seen: dict[str, Datastore] = {self.home.moid: self.home}
        for d in self.disks:
            for f in d.top.chain():
                seen[f.datastore.moid] = f.datastore
        return list(seen.values())

    def networks(self) -> list[Network]:
        return list({n.network.moid: n.network for n in self.nics}.values())

    def dir(self) -> str:
        return f"[{self.home.name}] {self.stem}"

    def vmx_path(self) -> str:
        return f"{self.dir()}/{self.stem}.vmx"

    def home_files(self) -> list[tuple[str, str, int]]:
        """(datastore path, layoutEx file type, size) of the files in the VM's directory besides disks."""
        from .vmx import NVRAM_SIZE, log_text, vmsd_text, vmx_text

        d, stem = self.dir(), self.stem
        files = [(self.vmx_path(), "config", len(vmx_text(self).encode())),
                 (f"{d}/{stem}.nvram", "nvram", NVRAM_SIZE),
                 (f"{d}/{stem}.vmsd", "snapshotList", len(vmsd_text(self).encode())),
                 (f"{d}/vmware.log", "log", len(log_text(self).encode()))]
        if self.power_state == "suspended":
            files.append((f"{d}/{stem}.vmss", "suspend", self.memory_mb * 1024 * 1024))
        return files

    def changed(self) -> None:
        self.change += 1
        self.modified = self.world.now()
        self.world.touch(self)

    def _cached(self, key: str, build: Any) -> Any:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        value = build()
        self._cache[key] = (self.version, value)
        return value

    # vSphere views -----------------------------------------------------------------------
    def p_resourcePool(self) -> Any:  # noqa: N802
        return None if self.template else self.pool.ref

    def p_datastore(self) -> list[Any]:
        return [d.ref for d in self.datastores()]

    def p_network(self) -> list[Any]:
        return [n.ref for n in self.networks()]

    def p_config(self) -> Any:
        return self._cached("config", self._config)

    def p_runtime(self) -> Any:
        return self._cached("runtime", self._runtime)

    def p_guest(self) -> Any:
        return self._cached("guest", self._guest)

    def p_layoutEx(self) -> Any:  # noqa: N802
        return self._layout()

    def p_snapshot(self) -> Any:
        if not self.snapshots:
            return None
        return vim.vm.SnapshotInfo(currentSnapshot=self.current_snapshot.mo.ref if self.current_snapshot else None,
                                   rootSnapshotList=[self._tree(n) for n in self.snapshots])

    def p_rootSnapshot(self) -> list[Any]:  # noqa: N802
        return [n.mo.ref for n in self.snapshots]

    def p_capability(self) -> Any:
        from .vminfo import CAPABILITY

        return CAPABILITY

    def p_environmentBrowser(self) -> Any:  # noqa: N802
        browser = getattr(self.host.parent, "env_browser", None)
        return browser.ref if browser is not None else None

    def p_storage(self) -> Any:
        from .vminfo import storage

        return storage(self)

    def p_resourceConfig(self) -> Any:  # noqa: N802
        from .compute import vm_resource_config

        return vm_resource_config(self)

    def p_guestHeartbeatStatus(self) -> str:  # noqa: N802
        return "green" if self.guest.tools_running and self.power_state == "poweredOn" else "gray"

    def p_summary(self) -> Any:
        cfg = vim.vm.Summary.ConfigSummary(
            name=self.name, template=self.template, vmPathName=self.vmx_path(),
            memorySizeMB=self.memory_mb, numCpu=self.num_cpu, numEthernetCards=len(self.nics),
            numVirtualDisks=len(self.disks), uuid=self.uuid, instanceUuid=self.instance_uuid,
            guestId=self.guest_id, guestFullName=self.guest_full_name, annotation=self.annotation)
        committed = sum(f.size(self.world.sim_seconds()) for d in self.disks for f in d.top.chain())
        return vim.vm.Summary(
            vm=self.ref, runtime=self.get("runtime"), config=cfg, quickStats=self.quick_stats(),
            guest=vim.vm.Summary.GuestSummary(guestId=self.guest_id, guestFullName=self.guest_full_name,
                                              toolsStatus=self._tools_status(), toolsRunningStatus=self._tools_running(),
                                              hostName=self.guest.hostname, ipAddress=self.guest.ip),
            storage=vim.vm.Summary.StorageSummary(committed=committed, uncommitted=0, unshared=committed,
                                                  timestamp=_to_dt(self.world.now())),
            overallStatus="green", customValue=self.world.custom_fields.of(self))

    def p_summary_quickStats(self) -> Any:  # noqa: N802 - `summary.quickStats...` without the whole summary
        return self.quick_stats()

    # `runtime.x` and `snapshot.currentSnapshot` without rendering the whole object (every property
    # collector reading these for 10,000 VMs: an inventory read, an informer's first full update)
    def p_runtime_host(self) -> Any:  # noqa: N802
        return self.host.ref

    def p_runtime_powerState(self) -> str:  # noqa: N802
        return self.power_state

    def p_runtime_instantCloneFrozen(self) -> bool:  # noqa: N802
        return self.frozen

    def p_runtime_connectionState(self) -> str:  # noqa: N802
        return "connected" if self.host.connected else "disconnected"

    def p_snapshot_currentSnapshot(self) -> Any:  # noqa: N802
        return self.current_snapshot.mo.ref if self.snapshots and self.current_snapshot else None

    def p_summary_runtime(self) -> Any:  # noqa: N802
        return self.get("runtime")

    def quick_stats(self) -> Any:
        from .cpu import vm_cpu_mhz

        now = self.world.sim_seconds()
        shared, private = vm_shared_private(self, now)
        on = self.power_state == "poweredOn"
        return vim.vm.Summary.QuickStats(
            sharedMemory=shared, privateMemory=private, guestMemoryUsage=self.mem.touched_mb if on else 0,
            hostMemoryUsage=private if on else 0, overallCpuUsage=vm_cpu_mhz(self, now), balloonedMemory=0,
            swappedMemory=0,
            compressedMemory=0, consumedOverheadMemory=40 if on else 0,
            guestHeartbeatStatus=self.p_guestHeartbeatStatus(),
            uptimeSeconds=int(self.world.now() - self.boot_time) if on and self.boot_time else 0)

    def _tools_running(self) -> str:
        ok = self.power_state == "poweredOn" and self.guest.tools_running and not self.frozen
        return "guestToolsRunning" if ok else "guestToolsNotRunning"

    def _tools_status(self) -> str:
        return "toolsOk" if self._tools_running() == "guestToolsRunning" else "toolsNotRunning"

    def _runtime(self) -> Any:
        return vim.vm.RuntimeInfo(
            host=self.host.ref, connectionState="connected" if self.host.connected else "disconnected",
            powerState=self.power_state, faultToleranceState="notConfigured", toolsInstallerMounted=False,
            numMksConnections=0, recordReplayState="inactive", onlineStandby=False, consolidationNeeded=False,
            instantCloneFrozen=self.frozen, bootTime=_to_dt(self.boot_time) if self.boot_time else None,
            maxMemoryUsage=self.memory_mb, maxCpuUsage=self.num_cpu * 2600)

    def _guest(self) -> Any:
        from .vminfo import ip_config, ip_stack

        on = self.power_state == "poweredOn"
        nets = []
        for n in self.nics:
            ips = [self.guest.ip] if (on and self.guest.ip and n is self.nics[0]) else []
            nets.append(vim.vm.GuestInfo.NicInfo(macAddress=n.mac, connected=n.connected, deviceConfigId=n.key,
                                                 network=n.network.name, ipAddress=ips,
                                                 ipConfig=ip_config(self, ips[0]) if ips else None))
        stack = ip_stack(self, self.guest.ip, 0) if on and self.guest.ip and self.nics else []
        return vim.vm.GuestInfo(ipStack=stack, toolsVersionStatus="guestToolsCurrent",
                                toolsInstallType=self.get_tools_type(), hwVersion="vmx-21",
            toolsStatus=self._tools_status(), toolsRunningStatus=self._tools_running(),
            toolsVersionStatus2="guestToolsCurrent", toolsVersion="12352",
            guestId=self.guest_id, guestFullName=self.guest_full_name, guestFamily=self._family(),
            hostName=self.guest.hostname if on else None, ipAddress=self.guest.ip if on else None, net=nets,
            guestState="running" if on else "notRunning", guestOperationsReady=self._tools_running() == "guestToolsRunning",
            interactiveGuestOperationsReady=False, guestStateChangeSupported=True)

    def _family(self) -> str:
        return "windowsGuest" if self.guest_id.startswith("win") else "linuxGuest"

    def get_tools_type(self) -> str:
        return "guestToolsTypeMSI" if self.guest_id.startswith("win") else "guestToolsTypeOpenVMTools"

    def device_list(self) -> list[Any]:
        from .vminfo import STATIC_DEVICES, pci_controller

        devices: list[Any] = [
            pci_controller([1000, *(n.key for n in self.nics)]), *STATIC_DEVICES,
            vim.vm.device.ParaVirtualSCSIController(key=1000, busNumber=0, sharedBus="noSharing", controllerKey=100,
                                                    unitNumber=3, device=[d.key for d in self.disks],
                                                    deviceInfo=vim.Description(label="SCSI controller 0", summary="VMware paravirtual SCSI")),
        ]
        for d in self.disks:
            devices.append(vim.vm.device.VirtualDisk(
                key=d.key, controllerKey=1000, unitNumber=d.unit, capacityInKB=d.capacity_kb,
                capacityInBytes=d.capacity_kb * 1024, backing=backing_for(d.top, mode=d.mode),
                deviceInfo=vim.Description(label=d.label, summary=f"{d.capacity_kb:,} KB")))
        for i, n in enumerate(self.nics):
            devices.append(n.device_class()(
                key=n.key, controllerKey=100, unitNumber=7 + i, macAddress=n.mac, addressType=n.address_type,
                backing=self.nic_backing(n), wakeOnLanEnabled=True,
                connectable=vim.vm.device.VirtualDevice.ConnectInfo(
                    connected=n.connected and self.power_state == "poweredOn", startConnected=n.start_connected,
                    allowGuestControl=True, status="ok"),
                deviceInfo=vim.Description(label=n.label, summary=n.network.name)))
        return devices

    @staticmethod
    def nic_backing(n: Nic) -> Any:
        from .inventory import DVPortgroup

        if isinstance(n.network, DVPortgroup):
            return vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(switchUuid=n.network.switch.uuid, portgroupKey=n.network.moid))
        return vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=n.network.name,
                                                                   network=n.network.ref)

    def _config(self) -> Any:
        from .vmsettings import render

        cfg = self._base_config()
        if self.settings:
            render(self, cfg)
        return cfg

    def _base_config(self) -> Any:
        from .compute import vm_cpu_allocation, vm_memory_allocation
        from .vminfo import BOOT_OPTIONS, tools_config

        return vim.vm.ConfigInfo(
            changeVersion=f"{self.change}", modified=_to_dt(self.modified), name=self.name,
            guestFullName=self.guest_full_name, version="vmx-21", uuid=self.uuid, instanceUuid=self.instance_uuid,
            createDate=_to_dt(self.created), template=self.template, guestId=self.guest_id, alternateGuestName="",
            annotation=self.annotation,
            files=vim.vm.FileInfo(vmPathName=self.vmx_path(), snapshotDirectory=self.dir(),
                                  suspendDirectory=self.dir(), logDirectory=self.dir()),
            flags=vim.vm.FlagInfo(), defaultPowerOps=vim.vm.DefaultPowerOpInfo(),
            hardware=vim.vm.VirtualHardware(numCPU=self.num_cpu, numCoresPerSocket=1, memoryMB=self.memory_mb,
                                            device=self.device_list(), virtualICH7MPresent=False,
                                            virtualSMCPresent=False, motherboardLayout="i440bxHostBridge",
                                            autoCoresPerSocket=True),
            tools=tools_config(self), bootOptions=BOOT_OPTIONS, cpuAllocation=vm_cpu_allocation(self),
            memoryAllocation=vm_memory_allocation(self), firmware="efi", swapPlacement="inherit",
            cpuHotAddEnabled=False, cpuHotRemoveEnabled=False, memoryHotAddEnabled=False, changeTrackingEnabled=False,
            nestedHVEnabled=False, vPMCEnabled=False, maxMksConnections=40, guestAutoLockEnabled=False,
            memoryReservationLockedToMax=False, vFlashCacheReservation=0, messageBusTunnelEnabled=False,
            initialOverhead=vim.vm.ConfigInfo.OverheadInfo(initialMemoryReservation=40 * 1024 * 1024,
                                                           initialSwapReservation=120 * 1024 * 1024),
            latencySensitivity=vim.LatencySensitivity(level="normal"), rebootPowerOff=False,
            extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in self.extra.items()],
            datastoreUrl=[vim.vm.ConfigInfo.DatastoreUrlPair(name=d.name, url=d.url) for d in self.datastores()])

    def _layout(self) -> Any:
        now = self.world.sim_seconds()
        files, disks = layout_files([(d.key, d.top) for d in self.disks], self.home_files(), now, self.world.disks)
        return vim.vm.FileLayoutEx(file=files, disk=disks, timestamp=_to_dt(self.world.now()))

    def _tree(self, n: SnapshotNode) -> Any:
        return vim.vm.SnapshotTree(snapshot=n.mo.ref, vm=self.ref, name=n.name, description=n.description, id=n.sid,
                                   createTime=n.created, state=n.power_state, quiesced=False,
                                   childSnapshotList=[self._tree(c) for c in n.children])

    # guestinfo ------------------------------------------------------------------------------
    def guestinfo(self, key: str) -> str | None:
        """`info-get guestinfo.X` as the guest sees it (extraConfig guestinfo.* values)."""
        return self.extra.get(key if key.startswith("guestinfo.") else f"guestinfo.{key}")
