"""What the vSphere layer hands upward: plain dataclasses and string morefs, no pyVmomi.

The engine, sources, exporter and workloads see vCenter only through these types and the
protocols in `forkscale.vsphere.ports`; the pyVmomi-speaking implementation is
`forkscale.vsphere.driver.Driver`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TAG_POOL, TAG_ID = "forkscale.pool", "forkscale.id"
TAG_SOURCE = "forkscale.source"  # on a pool's per-host source VMs: their generation (see forkscale/fleet/sources.py)
#: on a pool's replicas for linked clones: "<pool>:<replica id>" (see forkscale/fleet/replicas.py); a replica
#: carries no `forkscale.pool`, so nothing that looks for a pool's clones or sources ever takes it for one
TAG_REPLICA = "forkscale.replica"
STATUS_KEY = "guestinfo.forkscale.status"
MAC_KEY = "guestinfo.forkscale.mac"
#: (kind, moref, dvs uuid): kind is "network" (standard port group) or "dvportgroup".
NetworkRef = tuple[str, str, str | None]


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
    instance_uuid: str | None = None  # config.instanceUuid: vCenter's own identity of the VM
    replica_tag: str | None = None  # forkscale.replica: "<pool>:<replica id>" on a replica for linked clones

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
    datastore_capacity: dict[str, int] = field(default_factory=dict)  # name -> capacity bytes
    host_maintenance: dict[str, bool] = field(default_factory=dict)  # host moref -> runtime.inMaintenanceMode
    host_memory: dict[str, int] = field(default_factory=dict)  # host moref -> hardware.memorySize bytes
    networks: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)  # name -> (kind, moref, dvs uuid)
    folders: dict[str, str] = field(default_factory=dict)  # name -> moref
    pools: dict[str, str] = field(default_factory=dict)  # resource pool name -> moref
    macs: set[str] = field(default_factory=set)
    taken_at: float = 0.0
    avoid: set[str] = field(default_factory=set)  # host names the controller places nothing on (being evacuated)

    def vm_by_name(self, name: str) -> VmInfo | None:
        return next((v for v in self.vms.values() if v.name == name), None)

    def datastore_name(self, moref: str) -> str | None:
        return next((name for name, (m, _) in self.datastores.items() if m == moref), None)

    def placeable(self, host: str) -> bool:
        """Whether a host (by name) may take a new VM: connected, not in maintenance mode, not avoided."""
        moref = self.hosts.get(host, "")
        return (self.host_connected.get(moref, False) and not self.host_maintenance.get(moref, False)
                and host not in self.avoid)


@dataclass
class CloneRequest:
    name: str
    folder: str
    datastore: str
    host: str
    resource_pool: str | None
    network: NetworkRef  # from Inventory.networks
    mac: str
    nic_key: int | None  # the source NIC to edit (None: its first); the edit keeps that NIC's class
    extra: dict[str, str]
    disconnect: bool = False
    # further NICs to edit alike, as (nic key, manual MAC, network); a live clone of a multi-NIC
    # source must move (or disconnect) every NIC, not just the first
    more_nics: tuple[tuple[int, str, NetworkRef], ...] = ()
    power_on: bool = True  # linked/full clones only (an instant clone runs as its source did)


@dataclass
class NicInfo:
    key: int
    label: str
    mac: str
    network: NetworkRef  # as in Inventory.networks
    connected: bool
    start_connected: bool


@dataclass
class VmDetail:
    """Power state, per-disk delta-chain depth (from layoutEx) and NICs of one VM, read at once."""

    power: str
    chains: dict[int, int]  # disk device key -> files in its chain (layoutEx.disk[].chain), base first
    nics: list[NicInfo]
    extra: dict[str, str] = field(default_factory=dict)  # the extraConfig keys asked for (when set)


@dataclass(frozen=True, slots=True)
class VmRow:
    moref: str
    name: str
    host: str | None
    """Host moref."""
    power: str
    frozen: bool
    shared_mb: int
    private_mb: int
    pool_tag: str | None
    source_tag: str | None
    """`forkscale.source` (a per-host source replica's generation); None on clones and golden VMs."""
    chains: dict[int, int]
    """Disk device key -> links in its chain (layoutEx.disk[].chain)."""
    delta_bytes: int
    """uniqueSize of every delta link of every disk."""


@dataclass(frozen=True, slots=True)
class HostRow:
    moref: str
    name: str
    connected: bool


@dataclass(slots=True)
class FleetRead:
    """What one refresh read from vCenter."""

    vms: list[VmRow] = field(default_factory=list)
    hosts: list[HostRow] = field(default_factory=list)
    host_memory: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Host moref -> (mem.shared, mem.sharedcommon) in bytes, from the latest realtime sample."""
    taken_at: float = 0.0




@dataclass(frozen=True)
class GuestLogin:
    """A guest account for guest operations; the password is never in a repr (or a log line)."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class GuestProcess:
    """One process as `ListProcessesInGuest` reports it (times are the guest's clock, epoch seconds)."""

    pid: int
    name: str
    start: float | None
    end: float | None
    exit_code: int | None

    @property
    def ended(self) -> bool:
        return self.end is not None
