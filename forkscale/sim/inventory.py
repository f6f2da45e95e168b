"""Inventory entities of the twin: folders, datacenter, cluster, hosts, pools, datastores, networks."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

from .mo import MO

if TYPE_CHECKING:
    from .vm import VM
    from .world import World

GiB = 1024**3
MiB = 1024**2


class Entity(MO):
    """A ManagedEntity: named, parented, and listed in its parent's children."""

    kind: type = vim.ManagedEntity
    in_tree = True

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None, **props: Any) -> None:
        super().__init__(world, moid, **props)
        self.parent = parent
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        old, self._name = self._name, value
        if isinstance(self.parent, Folder):
            self.parent.entries.renamed(self, old)

    def child_named(self, name: str) -> Entity | None:
        """The child called `name` (FindChild), if any."""
        return next((c for c in self.children() if c.name == name), None)

    def p_name(self) -> str:
        return self.name

    def p_parent(self) -> Any:
        return self.parent.ref if self.parent is not None else None

    def p_overallStatus(self) -> str:  # noqa: N802 - vSphere property name
        return "green"

    def p_configStatus(self) -> str:  # noqa: N802
        return "green"

    def p_alarmActionsEnabled(self) -> bool:  # noqa: N802
        return True

    def p_tag(self) -> list[Any]:
        return []

    def p_customValue(self) -> list[Any]:  # noqa: N802
        return self.world.custom_fields.of(self)

    def p_value(self) -> list[Any]:
        return self.world.custom_fields.of(self)

    def p_availableField(self) -> list[Any]:  # noqa: N802
        return self.world.custom_fields.available(self)

    def p_recentTask(self) -> list[Any]:  # noqa: N802
        return [t.ref for t in self.world.of_kind(vim.Task)
                if t.get("info").entity == self.ref and t.get("info").state in ("queued", "running")]

    def p_declaredAlarmState(self) -> list[Any]:  # noqa: N802
        return []

    def p_triggeredAlarmState(self) -> list[Any]:  # noqa: N802
        return []

    def p_disabledMethod(self) -> list[str]:  # noqa: N802
        return []

    def children(self) -> list[Entity]:
        return []

    def path(self) -> str:
        """Inventory path as SearchIndex.FindByInventoryPath spells it."""
        parts: list[str] = []
        node: Entity | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))


class Children:
    """A folder's entries in insertion order, by moid and by name: appending, removing and finding a
    name cost O(1) however many VMs the folder holds (a fan-out checks every clone's name)."""

    def __init__(self) -> None:
        self._items: dict[str, Entity] = {}
        self._names: dict[str, dict[str, Entity]] = {}

    def append(self, entity: Entity) -> None:
        self._items[entity.moid] = entity
        self._names.setdefault(entity.name, {})[entity.moid] = entity

    def remove(self, entity: Entity) -> None:
        if self._items.pop(entity.moid, None) is not None:
            self._forget(entity, entity.name)

    def _forget(self, entity: Entity, name: str) -> None:
        same = self._names.get(name)
        if same is not None:
            same.pop(entity.moid, None)
            if not same:
                del self._names[name]

    def renamed(self, entity: Entity, old: str) -> None:
        if entity.moid in self._items:
            self._forget(entity, old)
            self._names.setdefault(entity.name, {})[entity.moid] = entity

    def named(self, name: str) -> Entity | None:
        """The first live entry called `name`."""
        return next((e for e in self._names.get(name, {}).values() if e.alive), None)

    def __iter__(self) -> Iterator[Entity]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, entity: object) -> bool:
        return isinstance(entity, Entity) and self._items.get(entity.moid) is entity


class Folder(Entity):
    kind = vim.Folder

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None,
                 child_type: list[str]) -> None:
        super().__init__(world, moid, name, parent)
        self.child_type = child_type
        self.entries = Children()

    def child_named(self, name: str) -> Entity | None:
        return self.entries.named(name)

    def p_childEntity(self) -> list[Any]:  # noqa: N802
        return [e.ref for e in self.entries]

    def p_childType(self) -> list[str]:  # noqa: N802
        return list(self.child_type)

    def children(self) -> list[Entity]:
        return list(self.entries)

    def attach(self, entity: Entity) -> None:
        entity.parent = self
        self.entries.append(entity)
        self.world.moved(entity)
        self.world.touch(self, structural=True)

    def detach(self, entity: Entity) -> None:
        """Take `entity` out (it is being destroyed: `World.remove` tells the views)."""
        if entity in self.entries:
            self.entries.remove(entity)
            self.world.touch(self, structural=True)


class Datacenter(Entity):
    kind = vim.Datacenter

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None) -> None:
        super().__init__(world, moid, name, parent)
        self.vm_folder: Folder
        self.host_folder: Folder
        self.datastore_folder: Folder
        self.network_folder: Folder

    def p_vmFolder(self) -> Any:  # noqa: N802
        return self.vm_folder.ref

    def p_hostFolder(self) -> Any:  # noqa: N802
        return self.host_folder.ref

    def p_datastoreFolder(self) -> Any:  # noqa: N802
        return self.datastore_folder.ref

    def p_networkFolder(self) -> Any:  # noqa: N802
        return self.network_folder.ref

    def p_configuration(self) -> Any:
        return vim.Datacenter.ConfigInfo(defaultHardwareVersionKey="vmx-21", maximumHardwareVersionKey="vmx-21")

    def p_datastore(self) -> list[Any]:
        return [d.ref for d in self.datastore_folder.entries]

    def p_network(self) -> list[Any]:
        return [n.ref for n in self.network_folder.entries if not isinstance(n.ref, vim.DistributedVirtualSwitch)]

    def children(self) -> list[Entity]:
        return [self.vm_folder, self.host_folder, self.datastore_folder, self.network_folder]


class ResourcePool(Entity):
    kind = vim.ResourcePool

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None, owner: Entity) -> None:
        super().__init__(world, moid, name, parent)
        self.owner = owner
        self.pools: list[ResourcePool] = []
        self.allocation: tuple[Any, Any] | None = None  # a child pool's (cpu, memory) ResourceAllocationInfo

    def config_allocation(self) -> tuple[Any, Any]:
        from .compute import pool_config

        config = pool_config(self)
        return config.cpuAllocation, config.memoryAllocation

    def p_owner(self) -> Any:
        return self.owner.ref

    def p_resourcePool(self) -> list[Any]:  # noqa: N802
        return [p.ref for p in self.pools]

    def p_vm(self) -> list[Any]:
        return [v.ref for v in vms(self.world) if v.pool is self]

    def p_config(self) -> Any:
        from .compute import pool_config

        return pool_config(self)

    def p_runtime(self) -> Any:
        from .compute import pool_runtime

        return pool_runtime(self)

    def p_summary(self) -> Any:
        from .compute import pool_summary

        return pool_summary(self)

    def p_childConfiguration(self) -> list[Any]:  # noqa: N802
        from .compute import pool_config

        return [pool_config(p) for p in self.pools]

    def children(self) -> list[Entity]:
        return list(self.pools)


class HostVms(set["VM"]):
    """The VMs of a host; a change moves the host's memory epoch on (memory admission re-counts)."""

    def __init__(self, host: Host) -> None:
        super().__init__()
        self.host = host

    def add(self, vm: VM) -> None:
        super().add(vm)
        self.host.mem_epoch += 1

    def discard(self, vm: object) -> None:
        super().discard(vm)
        self.host.mem_epoch += 1


class Host(Entity):
    kind = vim.HostSystem

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None, *, memory_bytes: int,
                 cpu_cores: int, cpu_mhz: int = 2600) -> None:
        super().__init__(world, moid, name, parent)
        self.memory_bytes = memory_bytes
        self.cpu_cores = cpu_cores
        self.cpu_mhz = cpu_mhz
        self.connected = True
        self.in_maintenance = False
        self.vms: set[VM] = HostVms(self)
        self.mem_epoch = 0  # bumped when a VM arrives, leaves, or powers on or off here (memory.admit)
        self.admission: Any = None  # memory.admit's account of this host
        self.datastores: list[Datastore] = []
        self.networks: list[Entity] = []
        self.uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{moid}.{name}.forkscale-twin"))  # hardware.systemInfo
        self.config_managers: dict[str, Any] = {}  # configManager property -> moref (hostinfo.attach_managers)
        self.browser: MO | None = None
        self._config: Any = None

    def attach(self) -> None:
        """Create the host's own managed objects (configManager, datastore browser) once it has its storage."""
        from .hostinfo import attach_managers

        self.config_managers = attach_managers(self.world, self)

    def boot_time(self) -> Any:
        from .vm import _to_dt

        return _to_dt(self.world.now() - self.world.sim_seconds())

    def p_runtime(self) -> Any:
        return vim.host.RuntimeInfo(
            connectionState="connected" if self.connected else "notResponding",
            powerState="poweredOn" if self.connected else "unknown", inMaintenanceMode=self.in_maintenance,
            bootTime=self.boot_time() if self.connected else None, standbyMode="none",
            inQuarantineMode=False)

    def p_config(self) -> Any:
        if self._config is None:
            from .hostinfo import config

            self._config = config(self)
        return self._config

    def p_capability(self) -> Any:
        from .hostinfo import CAPABILITY

        return CAPABILITY

    def p_configManager(self) -> Any:  # noqa: N802
        return vim.host.ConfigManager(**self.config_managers)

    def p_datastoreBrowser(self) -> Any:  # noqa: N802
        return self.browser.ref if self.browser is not None else None

    def p_licensableResource(self) -> Any:  # noqa: N802
        from .hostinfo import licensable_resource

        return licensable_resource(self)

    def p_systemResources(self) -> Any:  # noqa: N802
        from .hostinfo import system_resources

        return system_resources(self)

    def p_hardware(self) -> Any:
        return vim.host.HardwareInfo(
            systemInfo=vim.host.SystemInfo(vendor="forkscale", model="twin", uuid=self.uuid),
            cpuInfo=vim.host.CpuInfo(numCpuPackages=2, numCpuCores=self.cpu_cores,
                                     numCpuThreads=self.cpu_cores * 2, hz=self.cpu_mhz * 1_000_000),
            cpuPkg=[vim.host.CpuPackage(index=i, vendor="intel", hz=self.cpu_mhz * 1_000_000, busHz=100_000_000,
                                        description="Twin CPU", threadId=list(range(self.cpu_cores)), cpuFeature=[])
                    for i in range(2)],
            memorySize=self.memory_bytes, smcPresent=False)

    def p_summary(self) -> Any:
        from .memory import host_quick_stats

        hw = vim.host.Summary.HardwareSummary(
            vendor="forkscale", model="twin", uuid=self.uuid, memorySize=self.memory_bytes,
            cpuModel="Twin CPU", cpuMhz=self.cpu_mhz, numCpuPkgs=2, numCpuCores=self.cpu_cores,
            numCpuThreads=self.cpu_cores * 2, numNics=2, numHBAs=1)
        from .hostinfo import summary_config

        return vim.host.Summary(
            host=self.ref, hardware=hw, runtime=self.get("runtime"), config=summary_config(self),
            quickStats=host_quick_stats(self), overallStatus="green", rebootRequired=False,
            customValue=self.world.custom_fields.of(self))

    def p_summary_quickStats(self) -> Any:  # noqa: N802 - `summary.quickStats...` without the whole summary
        from .memory import host_quick_stats

        return host_quick_stats(self)

    def p_vm(self) -> list[Any]:
        return [v.ref for v in self.vms]

    def p_datastore(self) -> list[Any]:
        return [d.ref for d in self.datastores]

    def p_network(self) -> list[Any]:
        return [n.ref for n in self.networks]


class Cluster(Entity):
    kind = vim.ClusterComputeResource

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None) -> None:
        super().__init__(world, moid, name, parent)
        self.hosts: list[Host] = []
        self.root_pool: ResourcePool
        self.env_browser: MO | None = None

    def p_host(self) -> list[Any]:
        return [h.ref for h in self.hosts]

    def p_resourcePool(self) -> Any:  # noqa: N802
        return self.root_pool.ref

    def p_datastore(self) -> list[Any]:
        seen: dict[str, Any] = {}
        for h in self.hosts:
            for d in h.datastores:
                seen[d.moid] = d.ref
        return list(seen.values())

    def p_network(self) -> list[Any]:
        seen: dict[str, Any] = {}
        for h in self.hosts:
            for n in h.networks:
                seen[n.moid] = n.ref
        return list(seen.values())

    def p_summary(self) -> Any:
        from .compute import cluster_summary

        return cluster_summary(self)

    def p_summaryEx(self) -> Any:  # noqa: N802
        return self.p_summary()

    def p_configurationEx(self) -> Any:  # noqa: N802
        from .compute import CONFIG_EX

        return CONFIG_EX

    def p_configuration(self) -> Any:
        from .compute import CONFIG

        return CONFIG

    def p_environmentBrowser(self) -> Any:  # noqa: N802
        return self.env_browser.ref if self.env_browser is not None else None

    def children(self) -> list[Entity]:
        return [*self.hosts, self.root_pool]


class Datastore(Entity):
    kind = vim.Datastore

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None, *, capacity: int,
                 ds_type: str = "VMFS") -> None:
        super().__init__(world, moid, name, parent)
        self.capacity = capacity
        self.ds_type = ds_type
        from .storage import volume_uuid

        self.url = f"ds:///vmfs/volumes/{volume_uuid(self)}/"
        self.hosts: list[Host] = []
        self.browser: MO | None = None

    def used(self) -> int:
        from .disks import datastore_used

        return datastore_used(self.world, self)

    def free(self) -> int:
        return max(0, self.capacity - self.used())

    def p_summary(self) -> Any:
        return vim.Datastore.Summary(datastore=self.ref, name=self.name, url=self.url, capacity=self.capacity,
                                     freeSpace=self.free(), uncommitted=0, accessible=True,
                                     multipleHostAccess=True, type=self.ds_type, maintenanceMode="normal")

    def p_host(self) -> list[Any]:
        return [vim.Datastore.HostMount(key=h.ref, mountInfo=vim.host.MountInfo(
            path=self.mount_path(), accessMode="readWrite", mounted=True, accessible=True))
            for h in self.hosts]

    def mount_path(self) -> str:
        return self.url.removeprefix("ds://").rstrip("/")

    def p_info(self) -> Any:
        from .storage import info

        return info(self)

    def p_capability(self) -> Any:
        from .storage import CAPABILITY

        return CAPABILITY

    def p_browser(self) -> Any:
        return self.browser.ref if self.browser is not None else None

    def p_vm(self) -> list[Any]:
        return [v.ref for v in vms(self.world) if self in v.datastores()]


class Network(Entity):
    kind = vim.Network

    def p_summary(self) -> Any:
        return vim.Network.Summary(network=self.ref, name=self.name, accessible=True, ipPoolName="")

    def p_host(self) -> list[Any]:
        return [h.ref for h in self.world.instances(Host) if self in h.networks]

    def p_vm(self) -> list[Any]:
        return [v.ref for v in vms(self.world) if self in v.networks()]


class DVSwitch(Entity):
    kind = vim.dvs.VmwareDistributedVirtualSwitch

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None) -> None:
        super().__init__(world, moid, name, parent)
        self.uuid = f"50 2a {moid[-2:]:>2} 00 11 22 33 44-55 66 77 88 99 aa bb cc"
        self.portgroups: list[DVPortgroup] = []

    def p_uuid(self) -> str:
        return self.uuid

    def p_portgroup(self) -> list[Any]:
        return [p.ref for p in self.portgroups]

    def p_config(self) -> Any:
        from .netinfo import switch_config

        return switch_config(self)

    def p_summary(self) -> Any:
        from .netinfo import switch_summary

        return switch_summary(self)

    def p_capability(self) -> Any:
        from .netinfo import CAPABILITY

        return CAPABILITY


class DVPortgroup(Network):
    kind = vim.dvs.DistributedVirtualPortgroup

    def __init__(self, world: World, moid: str, name: str, parent: Entity | None, switch: DVSwitch) -> None:
        super().__init__(world, moid, name, parent)
        self.switch = switch

    def p_key(self) -> str:
        return self.moid

    def p_config(self) -> Any:
        from .netinfo import portgroup_config

        return portgroup_config(self)

    def p_portKeys(self) -> list[str]:  # noqa: N802
        from .netinfo import port_keys

        return port_keys(self)


def vms(world: World) -> list[VM]:
    from .vm import VM

    return world.instances(VM)
