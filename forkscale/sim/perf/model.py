"""Counter values of the twin's entities at one simulated instant, from the world's own models.

Memory comes from the P-Share model (`memory.vm_shared_private`, `memory.host_memory`: the same
numbers as `summary.quickStats`), CPU from `forkscale.sim.cpu`, disk throughput from the disk
model (a running VM writes at its top delta's growth rate and reads as much), datastore space
from the disk files alive then, uptime from the power-on, VM operations from the event journal.
A `Sample` computes a family of values (memory, CPU, I/O) the first time one of its counters is
asked for, so a query for two counters costs two counters' work. Delta counters (`*.summation`)
are per realtime interval (20 s); the rollup scales them to longer intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..cpu import HYPERVISOR_FRACTION, booted_at, ready_fraction, running_vcpus, vm_cpu_mhz
from ..inventory import Cluster, Datacenter, Datastore, Host, ResourcePool
from ..memory import host_memory, vm_shared_private
from ..vm import VM
from .catalog import CLUSTER, DATACENTER, DATASTORE, HOST, POOL
from .catalog import VM as VM_KIND

if TYPE_CHECKING:
    from ..events import EventLog
    from ..mo import MO
    from ..world import World

REALTIME = 20  # seconds per realtime sample
KB = 1024
ACTIVE_FRACTION = 0.2  # of the pages a guest touched, those it keeps using (mem.active)
IO_SIZE_KB = 16  # per I/O, to turn throughput into IOPS
NET_KBPS = 1  # each way, per running guest (and for a host's management network)


def kind_of(mo: MO) -> str | None:
    for cls, kind in ((VM, VM_KIND), (Host, HOST), (Cluster, CLUSTER), (ResourcePool, POOL),
                      (Datastore, DATASTORE), (Datacenter, DATACENTER)):
        if isinstance(mo, cls):
            return kind
    return None


def _scale(world: World) -> float:
    return world.time_scale if world.time_scale > 0 else 1.0


def birth(vm: VM) -> float:
    """Simulated time the VM came to be (its fork, or its creation)."""
    if vm.mem.forked_at is not None:
        return vm.mem.forked_at
    return max(0.0, (vm.created - vm.world.started_wall) / _scale(vm.world))


def first_sample(mo: MO) -> float:
    """Simulated time the entity's statistics start."""
    return birth(mo) if isinstance(mo, VM) else 0.0


@dataclass
class Env:
    """What samples of one query share: the world, the events, the sampling interval, a memo."""

    world: World
    events: EventLog
    interval: int = REALTIME
    memo: dict[Any, Any] = field(default_factory=dict)

    def once(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


class VmSample:
    def __init__(self, vm: VM, t: float, env: Env) -> None:
        self.vm = vm
        self.t = t
        self.env = env
        boot = booted_at(vm)
        self.boot = boot
        self.running = boot is not None and boot <= t

    @cached_property
    def mem(self) -> tuple[int, int, int]:
        """(touched, shared, private) MB."""
        shared, private = vm_shared_private(self.vm, self.t)
        return (self.vm.mem.touched_mb if self.running else 0), shared, private

    @property
    def active_kb(self) -> int:
        return int(self.mem[0] * ACTIVE_FRACTION) * KB

    @cached_property
    def mhz(self) -> int:
        return vm_cpu_mhz(self.vm, self.t) if self.running else 0

    @cached_property
    def ready_ms(self) -> int:
        if not self.mhz:
            return 0
        host = self.vm.host
        vcpus = self.env.once(("vcpus", host.moid, self.t), lambda: running_vcpus(vms_at(host, self.t), self.t))
        return int(REALTIME * 1000 * self.vm.num_cpu * ready_fraction(host, vcpus))

    @cached_property
    def write_kbps(self) -> int:
        if not self.running:
            return 0
        rate = 0.0
        for d in self.vm.disks:
            f = d.top
            growing = f.frozen_size is None and f.grow_since is not None and f.grow_since <= self.t
            if growing and f.size(self.t) < (f.capacity if f.is_delta else f.base_size + 1):
                rate += f.grow_rate
        return int(rate / KB)

    @property
    def latency_ms(self) -> int:
        return datastore_latency(self.vm.home, self.t, self.env) if self.running else 0

    @property
    def net_kbps(self) -> int:
        return NET_KBPS if self.running and self.tools_up() else 0

    def tools_up(self) -> bool:
        return bool(self.vm.guest.tools_running and not self.vm.frozen)

    def fork_grouped(self) -> bool:
        """In a VMFork group: its shared pages are its parent's, not zero pages."""
        return self.vm.mem.group is not None or bool(self.vm.fork_children())

    def overhead_kb(self) -> int:
        return (self.vm.world.memory.overhead_mb if self.running else 0) * KB

    def idle_ms(self) -> int:
        if not self.running:
            return 0
        busy_ms = self.mhz * REALTIME * 1000 // max(1, self.vm.host.cpu_mhz)
        return max(0, REALTIME * 1000 * self.vm.num_cpu - busy_ms - self.ready_ms)


def vms_at(host: Host, t: float) -> list[VM]:
    """The host's VMs that existed at simulated time `t`."""
    return [vm for vm in host.vms if birth(vm) <= t]


def datastore_latency(ds: Datastore, t: float, env: Env) -> int:
    """Milliseconds per I/O on the datastore: 1, plus 1 for every 64 guests running from it."""
    def compute() -> int:
        running = sum(1 for vm in env.world.instances(VM) if vm.home is ds and vm.power_state == "poweredOn")
        return 1 + running // 64
    return int(env.once(("latency", ds.moid), compute))


VM_VALUES: dict[int, Callable[[VmSample], float]] = {
    2: lambda s: s.mhz * 10000 // max(1, s.vm.num_cpu * s.vm.host.cpu_mhz),
    6: lambda s: s.mhz,
    12: lambda s: s.ready_ms,
    13: lambda s: s.idle_ms(),
    398: lambda s: s.mhz,
    24: lambda s: s.active_kb * 10000 // max(1, s.vm.memory_mb * KB),
    29: lambda s: s.mem[0] * KB,
    33: lambda s: s.active_kb,
    37: lambda s: s.mem[1] * KB,
    41: lambda s: 0 if s.fork_grouped() else s.mem[1] * KB,
    70: lambda s: 0, 85: lambda s: 0, 86: lambda s: 0, 90: lambda s: 0, 105: lambda s: 0,
    98: lambda s: s.mem[2] * KB,
    102: lambda s: s.overhead_kb(),
    125: lambda s: 2 * s.write_kbps, 130: lambda s: s.write_kbps, 131: lambda s: s.write_kbps,
    136: lambda s: s.write_kbps // IO_SIZE_KB, 137: lambda s: s.write_kbps // IO_SIZE_KB,
    171: lambda s: s.write_kbps // IO_SIZE_KB, 172: lambda s: s.write_kbps // IO_SIZE_KB,
    178: lambda s: s.write_kbps // IO_SIZE_KB, 179: lambda s: s.write_kbps // IO_SIZE_KB,
    133: lambda s: s.latency_ms + 1 if s.running else 0,
    175: lambda s: s.latency_ms, 176: lambda s: s.latency_ms + 1 if s.running else 0,
    182: lambda s: s.latency_ms, 183: lambda s: s.latency_ms + 1 if s.running else 0,
    143: lambda s: 2 * s.net_kbps, 148: lambda s: s.net_kbps, 149: lambda s: s.net_kbps,
    155: lambda s: int(s.t - s.boot) if s.running and s.boot is not None else 0,
    156: lambda s: REALTIME if s.running and s.tools_up() else 0,
}


@dataclass
class HostTotals:
    """What a host's running VMs add up to at one instant (one pass over them)."""

    mhz: int = 0
    ready_ms: int = 0
    active_kb: int = 0
    write_kbps: int = 0
    iops: int = 0
    net_kbps: int = 0
    latency_ms: int = 0


class HostSample:
    def __init__(self, host: Host, t: float, env: Env) -> None:
        self.host = host
        self.t = t
        self.env = env

    @cached_property
    def vms(self) -> list[VM]:
        return vms_at(self.host, self.t)

    @cached_property
    def mem(self) -> dict[str, int]:
        return host_memory(self.host, self.t, vms=self.vms)

    @cached_property
    def totals(self) -> HostTotals:
        out = HostTotals()
        running = [s for s in (VmSample(vm, self.t, self.env) for vm in self.vms) if s.running]
        vcpus = sum(s.vm.num_cpu for s in running if s.mhz)
        self.env.memo[("vcpus", self.host.moid, self.t)] = vcpus  # what each VM's ready time needs
        for s in running:
            out.mhz += s.mhz
            out.ready_ms += s.ready_ms
            out.active_kb += s.active_kb
            out.write_kbps += s.write_kbps
            out.iops += s.write_kbps // IO_SIZE_KB
            out.net_kbps += s.net_kbps
            out.latency_ms = max(out.latency_ms, s.latency_ms)
        return out

    @property
    def mhz(self) -> int:
        return self.totals.mhz + int(self.capacity_mhz * HYPERVISOR_FRACTION)

    @property
    def capacity_mhz(self) -> int:
        return self.host.cpu_cores * self.host.cpu_mhz


HOST_VALUES: dict[int, Callable[[HostSample], float]] = {
    2: lambda s: s.mhz * 10000 // max(1, s.capacity_mhz),
    6: lambda s: s.mhz, 398: lambda s: s.mhz,
    12: lambda s: s.totals.ready_ms,
    13: lambda s: max(0, REALTIME * 1000 * s.host.cpu_cores * 2 * (s.capacity_mhz - s.mhz) // max(1, s.capacity_mhz)),
    24: lambda s: s.mem["consumed"] * 10000 // max(1, s.host.memory_bytes // KB),
    29: lambda s: s.mem["granted"], 37: lambda s: s.mem["shared"], 41: lambda s: s.mem["zero"],
    33: lambda s: s.totals.active_kb + s.mem["overhead"],
    49: lambda s: 0, 85: lambda s: 0, 86: lambda s: 0, 90: lambda s: 0, 105: lambda s: 0,
    57: lambda s: s.mem["sharedcommon"], 98: lambda s: s.mem["consumed"], 102: lambda s: s.mem["overhead"],
    125: lambda s: 2 * s.totals.write_kbps, 130: lambda s: s.totals.write_kbps, 131: lambda s: s.totals.write_kbps,
    136: lambda s: s.totals.iops, 137: lambda s: s.totals.iops, 178: lambda s: s.totals.iops,
    179: lambda s: s.totals.iops,
    133: lambda s: s.totals.latency_ms + 1 if s.totals.latency_ms else 0,
    182: lambda s: s.totals.latency_ms, 183: lambda s: s.totals.latency_ms + 1 if s.totals.latency_ms else 0,
    143: lambda s: 2 * (s.totals.net_kbps + NET_KBPS), 148: lambda s: s.totals.net_kbps + NET_KBPS,
    149: lambda s: s.totals.net_kbps + NET_KBPS,
    155: lambda s: int(s.t) if s.host.connected else 0,
}


class GroupSample:
    """A cluster or a resource pool: sums over its hosts or its VMs."""

    def __init__(self, mo: Cluster | ResourcePool, t: float, env: Env) -> None:
        self.mo = mo
        self.t = t
        self.env = env

    @cached_property
    def hosts(self) -> list[HostSample]:
        hosts = self.mo.hosts if isinstance(self.mo, Cluster) else []
        return [HostSample(h, self.t, self.env) for h in hosts if h.connected]

    @cached_property
    def vms(self) -> list[VmSample]:
        """The pool's VMs (with its child pools') that existed then."""
        return [VmSample(vm, self.t, self.env) for vm in pool_vms(self.mo, self.env) if birth(vm) <= self.t] \
            if isinstance(self.mo, ResourcePool) else []

    def host_total(self, key: int) -> int:
        return int(sum(HOST_VALUES[key](h) for h in self.hosts))

    def vm_total(self, key: int) -> int:
        return int(sum(VM_VALUES[key](v) for v in self.vms))

    @property
    def cluster(self) -> Cluster:
        assert isinstance(self.mo, Cluster)
        return self.mo

    @cached_property
    def ops(self) -> OpsSample:
        return OpsSample(self.cluster, self.t, self.env)

    def capacity_mhz(self) -> int:
        return sum(h.cpu_cores * h.cpu_mhz for h in self.cluster.hosts)

    def memory_mb(self) -> int:
        return sum(h.memory_bytes for h in self.cluster.hosts) // (KB * KB)


def pool_vms(pool: ResourcePool, env: Env) -> list[VM]:
    """The VMs of a pool and of its child pools (templates belong to no pool)."""
    def index() -> dict[str, list[VM]]:
        out: dict[str, list[VM]] = {}
        for vm in env.world.instances(VM):
            if not vm.template:
                out.setdefault(vm.pool.moid, []).append(vm)
        return out
    by_pool: dict[str, list[VM]] = env.once("pool-vms", index)
    found: list[VM] = []
    stack = [pool]
    while stack:
        p = stack.pop()
        found.extend(by_pool.get(p.moid, []))
        stack.extend(p.pools)
    return found


CLUSTER_VALUES: dict[int, Callable[[GroupSample], float]] = {
    2: lambda s: s.host_total(6) * 10000 // max(1, s.capacity_mhz()),
    6: lambda s: s.host_total(6),
    24: lambda s: s.host_total(98) * 10000 // max(1, s.memory_mb() * KB),
    29: lambda s: s.host_total(29), 33: lambda s: s.host_total(33), 37: lambda s: s.host_total(37),
    41: lambda s: s.host_total(41), 49: lambda s: 0, 90: lambda s: 0, 105: lambda s: 0,
    98: lambda s: s.host_total(98), 102: lambda s: s.host_total(102),
    278: lambda s: s.capacity_mhz(), 279: lambda s: s.memory_mb(),
    276: lambda s: sum(h.capacity_mhz for h in s.hosts),
    277: lambda s: sum(h.host.memory_bytes for h in s.hosts) // (KB * KB),
}
POOL_VALUES: dict[int, Callable[[GroupSample], float]] = {
    key: (lambda k: lambda s: s.vm_total(k))(key) for key in (6, 29, 33, 37, 41, 70, 90, 98, 102, 105)
}


class DatastoreSample:
    def __init__(self, ds: Datastore, t: float, env: Env) -> None:
        self.ds = ds
        self.t = t
        self.env = env

    @cached_property
    def space(self) -> tuple[int, int, int]:
        """(used, provisioned, unshared) bytes: the disk files on the datastore that existed at `t`."""
        files = [f for f in self.env.world.disks.files.values() if f.datastore is self.ds and f.born <= self.t]
        parents = {id(f.parent) for f in files if f.parent is not None}
        used = provisioned = unshared = 0
        for f in files:
            size = f.size(self.t)
            used += size
            provisioned += f.capacity if id(f) not in parents else size  # a top can grow to its capacity
            if f.refs <= 1:
                unshared += size
        return used, max(provisioned, used), unshared


DATASTORE_VALUES: dict[int, Callable[[DatastoreSample], float]] = {
    281: lambda s: s.space[0] // KB, 282: lambda s: s.space[1] // KB, 283: lambda s: s.ds.capacity // KB,
    284: lambda s: s.space[2] // KB,
}

# vmop counters: the events that count as each kind of VM operation
VMOP_EVENTS: dict[int, tuple[str, ...]] = {
    256: ("VmPoweredOnEvent",), 257: ("VmPoweredOffEvent",), 258: ("VmSuspendedEvent",),
    259: ("VmResettingEvent",), 260: ("VmGuestRebootEvent",), 261: ("VmGuestStandbyEvent",),
    262: ("VmGuestShutdownEvent",), 263: ("VmCreatedEvent",), 264: ("VmRemovedEvent",),
    265: ("VmRegisteredEvent",), 266: (), 267: ("VmReconfiguredEvent",),
    268: ("VmClonedEvent", "com.vmware.vc.VmInstantClonedEvent"), 269: ("VmDeployedEvent",),
    270: (), 271: (), 272: (), 273: ("VmMigratedEvent",), 274: ("VmRelocatedEvent",), 275: (),
}


class OpsSample:
    """VM operations in a cluster or datacenter during the sample's interval (from the event journal)."""

    def __init__(self, mo: Cluster | Datacenter, t: float, env: Env) -> None:
        self.mo = mo
        self.t = t
        self.env = env

    def count(self, key: int) -> int:
        names = VMOP_EVENTS[key]
        if not names:
            return 0
        begin = self.t - self.env.interval
        return sum(1 for when, name in operations(self.mo, self.env) if begin < when <= self.t and name in names)


def operations(mo: Cluster | Datacenter, env: Env) -> list[tuple[float, str]]:
    """(simulated time, event type) of the events about VMs in the cluster or datacenter."""
    def collect() -> list[tuple[float, str]]:
        from ..events import type_id

        out = []
        for _, r in env.events.items.forward(0):
            e = r.event
            arg = e.computeResource if isinstance(mo, Cluster) else e.datacenter
            target = getattr(arg, "computeResource" if isinstance(mo, Cluster) else "datacenter", None)
            if e.vm is not None and target is not None and target._moId == mo.moid:
                out.append(((e.createdTime.timestamp() - env.world.started_wall) / _scale(env.world), type_id(e)))
        return out
    return list(env.once(("ops", mo.moid), collect))


OPS_VALUES: dict[int, Callable[[OpsSample], float]] = {
    key: (lambda k: lambda s: s.count(k))(key) for key in VMOP_EVENTS
}
CLUSTER_VALUES.update({key: (lambda k: lambda s: s.ops.count(k))(key) for key in VMOP_EVENTS})


def sampler(mo: MO, env: Env) -> tuple[Callable[[float], Any], dict[int, Callable[[Any], float]]]:
    """(a sample of the entity at a simulated time, its counters' value functions)."""
    if isinstance(mo, VM):
        return (lambda t: VmSample(mo, t, env)), dict(VM_VALUES)
    if isinstance(mo, Host):
        return (lambda t: HostSample(mo, t, env)), dict(HOST_VALUES)
    if isinstance(mo, Cluster):
        return (lambda t: GroupSample(mo, t, env)), dict(CLUSTER_VALUES)
    if isinstance(mo, ResourcePool):
        return (lambda t: GroupSample(mo, t, env)), dict(POOL_VALUES)
    if isinstance(mo, Datastore):
        return (lambda t: DatastoreSample(mo, t, env)), dict(DATASTORE_VALUES)
    if isinstance(mo, Datacenter):
        return (lambda t: OpsSample(mo, t, env)), dict(OPS_VALUES)
    return (lambda t: None), {}
