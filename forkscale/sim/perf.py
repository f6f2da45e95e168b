"""PerformanceManager for the twin: a counter catalog and realtime samples from the memory model.

Counter ids are resolved by name (as vSphere clients must: ids differ between vCenter and ESXi).
Hosts and VMs carry realtime statistics (20 s samples, one hour kept) and the historical
intervals of a default vCenter. Every value is computed from the same P-Share model that
renders `summary.quickStats` (`memory.vm_shared_private`, `memory.host_memory`), evaluated at
the sample's simulated time, so a host's `mem.shared − mem.sharedcommon` is exactly what its
VMs' quick stats imply once the model is steady.

Sample times live on the simulated clock (a sample every 20 simulated seconds) and are reported
on the server's wall clock: with time scale `s`, realtime samples are `20·s` real seconds apart
while `sampleInfo.interval` stays 20. A VM contributes to samples from its birth (fork or
creation) on; history is rebuilt from the current inventory, so a destroyed VM leaves no trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import vim, vmodl

from .dispatch import Ctx, method
from .inventory import Host
from .memory import host_memory, vm_shared_private
from .mo import MO, Manager
from .vm import VM

if TYPE_CHECKING:
    from .world import World

PM = vim.PerformanceManager
REALTIME = 20  # seconds between realtime samples (the providers' refreshRate)
REALTIME_SAMPLES = 180  # one hour of realtime samples, as ESXi keeps
# (key, samplingPeriod, name, length) of vCenter's default historical intervals
HISTORICAL = [(1, 300, "Past day", 86400), (2, 1800, "Past week", 604800), (3, 7200, "Past month", 2592000),
              (4, 86400, "Past year", 31536000)]
MAX_HISTORICAL_SAMPLES = 400

_UNITS = {"kiloBytes": ("KB", "Kilobytes"), "percent": ("%", "Percentage"), "megaHertz": ("MHz", "Megahertz")}


@dataclass(frozen=True)
class Counter:
    key: int
    group: str
    name: str
    rollup: str
    unit: str
    level: int
    summary: str
    entities: tuple[str, ...] = ("host", "vm")
    stats: str = "absolute"

    @property
    def full_name(self) -> str:
        return f"{self.group}.{self.name}.{self.rollup}"

    def info(self) -> Any:
        unit_label, unit_summary = _UNITS[self.unit]
        return PM.CounterInfo(
            key=self.key,
            nameInfo=vim.ElementDescription(key=self.name, label=self.name.capitalize(), summary=self.summary),
            groupInfo=vim.ElementDescription(key=self.group, label={"mem": "Memory", "cpu": "CPU"}[self.group],
                                             summary={"mem": "Memory", "cpu": "CPU"}[self.group]),
            unitInfo=vim.ElementDescription(key=self.unit, label=unit_label, summary=unit_summary),
            rollupType=self.rollup, statsType=self.stats, level=self.level, perDeviceLevel=3,
            associatedCounterId=[])


COUNTERS = [
    Counter(2, "cpu", "usage", "average", "percent", 1, "CPU usage as a percentage during the interval", stats="rate"),
    Counter(6, "cpu", "usagemhz", "average", "megaHertz", 1, "CPU usage in megahertz during the interval",
            stats="rate"),
    Counter(24, "mem", "usage", "average", "percent", 1, "Memory usage as percent of total configured or "
                                                            "available memory"),
    Counter(29, "mem", "granted", "average", "kiloBytes", 2, "Amount of host physical memory or physical memory "
                                                                 "that is mapped for a virtual machine or a host"),
    Counter(37, "mem", "shared", "average", "kiloBytes", 2, "Amount of guest physical memory that is shared "
                                                                "within a single virtual machine or across virtual "
                                                                "machines"),
    Counter(41, "mem", "zero", "average", "kiloBytes", 2, "Guest physical memory pages whose content is 0x00"),
    Counter(65, "mem", "swapused", "average", "kiloBytes", 2, "Swap storage space consumed"),
    Counter(70, "mem", "vmmemctl", "average", "kiloBytes", 1, "Amount of guest physical memory reclaimed from "
                                                                  "the virtual machine by the balloon driver"),
    Counter(86, "mem", "sharedcommon", "average", "kiloBytes", 2, "Amount of machine memory that is shared by "
                                                                      "all powered-on virtual machines",
            entities=("host",)),
    Counter(90, "mem", "overhead", "average", "kiloBytes", 1, "Host physical memory consumed by the "
                                                                  "virtualization infrastructure"),
    Counter(98, "mem", "consumed", "average", "kiloBytes", 1, "Amount of host physical memory consumed"),
]
BY_KEY = {c.key: c for c in COUNTERS}
BY_NAME = {c.full_name: c for c in COUNTERS}


def _entity_kind(mo: MO) -> str | None:
    if isinstance(mo.ref, vim.VirtualMachine):
        return "vm"
    if isinstance(mo.ref, vim.HostSystem):
        return "host"
    return None


def manager(world: World) -> Manager:
    """The PerfMgr object, with its catalog properties."""
    # pyVmomi's stubs leave out an enum type's `values` (set at run time): [attr-defined] below
    rollups: list[str] = PM.CounterInfo.RollupType.values  # type: ignore[attr-defined]
    stats: list[str] = PM.CounterInfo.StatsType.values  # type: ignore[attr-defined]
    return world.add(Manager(
        world, "PerfMgr", vim.PerformanceManager,
        perfCounter=[c.info() for c in COUNTERS],
        historicalInterval=[vim.HistoricalInterval(key=k, samplingPeriod=p, name=n, length=length, level=1,
                                                   enabled=True) for k, p, n, length in HISTORICAL],
        description=vim.PerformanceDescription(
            counterType=[vim.ElementDescription(key=r, label=r.capitalize(), summary=r.capitalize()) for r in rollups],
            statsType=[vim.ElementDescription(key=s, label=s.capitalize(), summary=s.capitalize()) for s in stats])))


# clocks ---------------------------------------------------------------------------------------
def _scale(world: World) -> float:
    return world.time_scale if world.time_scale > 0 else 1.0


def to_wall(world: World, sim_t: float) -> datetime:
    return datetime.fromtimestamp(world.started_wall + sim_t * _scale(world), tz=UTC)


def to_sim(world: World, when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    sim = (when.timestamp() - world.started_wall) / _scale(world)
    # A timestamp we sent comes back rounded to the microsecond: snap it onto its sample.
    nearest = round(sim / REALTIME) * REALTIME
    return float(nearest) if abs(sim - nearest) <= 2e-6 / _scale(world) else sim


def birth(vm: VM) -> float:
    """Simulated time the VM came to be (its fork, or its creation)."""
    if vm.mem.forked_at is not None:
        return vm.mem.forked_at
    return max(0.0, (vm.created - vm.world.started_wall) / _scale(vm.world))


# the model, sampled ---------------------------------------------------------------------------
def _fork_grouped(vm: VM) -> bool:
    return vm.mem.group is not None or bool(vm.fork_children())


def vm_values(vm: VM, t: float) -> dict[int, int]:
    """Counter values of one VM at simulated time `t` (same numbers as its quickStats)."""
    shared, private = vm_shared_private(vm, t)
    on = vm.power_state == "poweredOn"
    touched = vm.mem.touched_mb if on else 0
    kb = 1024
    return {
        2: 0, 6: 0,  # quickStats.overallCpuUsage is 0 in the twin
        24: int(touched * 10000 / vm.memory_mb) if vm.memory_mb else 0,
        29: touched * kb,
        37: shared * kb,
        41: 0 if _fork_grouped(vm) else shared * kb,
        65: 0, 70: 0,
        90: (vm.world.memory.overhead_mb if on else 0) * kb,
        98: private * kb,
    }


def host_values(host: Host, t: float) -> dict[int, int]:
    """Counter values of a host at simulated time `t`: `memory.host_memory` over the VMs alive then."""
    m = host_memory(host, t, vms=[vm for vm in host.vms if birth(vm) <= t])
    total_kb = host.memory_bytes // 1024
    return {
        2: 0, 6: 0,
        24: int(m["consumed"] * 10000 / total_kb) if total_kb else 0,
        29: m["granted"], 37: m["shared"], 41: m["zero"], 65: 0, 70: 0, 86: m["sharedcommon"],
        90: m["overhead"], 98: m["consumed"],
    }


def available(mo: MO) -> list[Counter]:
    kind = _entity_kind(mo)
    return [c for c in COUNTERS if kind in c.entities] if kind else []


def sample_times(now: float, interval: int, start: float | None, end: float | None,
                 max_sample: int | None, first: float) -> list[float]:
    """Sample instants (simulated seconds, oldest first) on the interval's grid, up to `now`."""
    last = math.floor(min(now, end if end is not None else now) / interval) * interval
    keep = REALTIME_SAMPLES if interval == REALTIME else MAX_HISTORICAL_SAMPLES
    lowest = max(first, 0.0, now - keep * interval)
    times: list[float] = []
    t = last
    while t >= lowest and (start is None or t > start):
        times.append(float(t))
        t -= interval
        if len(times) >= keep:
            break
    if max_sample and interval == REALTIME:
        times = times[:max_sample]
    times.reverse()
    return times


def _intervals(world: World) -> set[int]:
    return {REALTIME} | {p for _, p, _, _ in HISTORICAL}


def _entity(ctx: Ctx, ref: Any) -> MO:
    if ref is None:
        raise vmodl.fault.InvalidArgument(msg="entity is required", invalidProperty="entity")
    return ctx.twin.resolve(ref, ctx.session)


def _wanted(metric_ids: list[Any] | None, counters: list[Counter]) -> list[Counter]:
    """The counters asked for (all of the entity's when none are named), each once."""
    if not metric_ids:
        return counters
    wanted: list[Counter] = []
    for mid in metric_ids:
        c = BY_KEY.get(mid.counterId)
        if c is not None and c in counters and (mid.instance or "") in ("", "*") and c not in wanted:
            wanted.append(c)
    return wanted


def query_one(ctx: Ctx, spec: Any, now: float) -> Any:
    """The samples one QuerySpec asks for, as of `now` (simulated seconds)."""
    world = ctx.twin.world
    mo = _entity(ctx, spec.entity)
    counters = available(mo)
    if not counters:
        return None
    interval = spec.intervalId or REALTIME
    if interval not in _intervals(world):
        raise vmodl.fault.InvalidArgument(msg=f"intervalId {interval} is not a sampling period of this server",
                                          invalidProperty="querySpec.intervalId")
    fmt = spec.format or "normal"
    if fmt not in PM.Format.values:  # type: ignore[attr-defined]  # (an enum's `values`, as above)
        raise vmodl.fault.InvalidArgument(msg=f"unknown format {fmt!r}", invalidProperty="querySpec.format")
    wanted = _wanted(spec.metricId, counters)
    if not wanted:
        return None
    start = to_sim(world, spec.startTime) if spec.startTime else None
    end = to_sim(world, spec.endTime) if spec.endTime else None
    first = birth(mo) if isinstance(mo, VM) else 0.0
    times = sample_times(now, interval, start, end, spec.maxSample, first)
    if not times:
        return None
    if isinstance(mo, VM):
        rows = [vm_values(mo, t) for t in times]
    elif isinstance(mo, Host):
        rows = [host_values(mo, t) for t in times]
    else:
        return None
    stamps = [to_wall(world, t) for t in times]
    if fmt == "csv":
        info = ",".join(f"{interval},{s.isoformat().replace('+00:00', 'Z')}" for s in stamps)
        return PM.EntityMetricCSV(entity=mo.ref, sampleInfoCSV=info, value=[
            PM.MetricSeriesCSV(id=PM.MetricId(counterId=c.key, instance=""),
                               value=",".join(str(r[c.key]) for r in rows)) for c in wanted])
    return PM.EntityMetric(
        entity=mo.ref, sampleInfo=[PM.SampleInfo(timestamp=s, interval=interval) for s in stamps],
        value=[PM.IntSeries(id=PM.MetricId(counterId=c.key, instance=""), value=[r[c.key] for r in rows])
               for c in wanted])


@method("QueryPerf")
def query_perf(ctx: Ctx, this: MO, querySpec: list[Any]) -> list[Any]:  # noqa: N803
    now = ctx.twin.world.sim_seconds()  # every spec is answered as of the same instant
    out = []
    for spec in querySpec or []:
        metric = query_one(ctx, spec, now)
        if metric is not None:
            out.append(metric)
    return out


@method("QueryAvailablePerfMetric")
def query_available(ctx: Ctx, this: MO, entity: Any, beginTime: Any = None, endTime: Any = None,  # noqa: N803
                    intervalId: int | None = None) -> list[Any]:  # noqa: N803
    mo = _entity(ctx, entity)
    if intervalId is not None and intervalId not in _intervals(ctx.twin.world):
        raise vmodl.fault.InvalidArgument(msg=f"intervalId {intervalId} is not a sampling period of this server",
                                          invalidProperty="intervalId")
    return [PM.MetricId(counterId=c.key, instance="") for c in available(mo)]


@method("QueryPerfCounter")
def query_counter(ctx: Ctx, this: MO, counterId: list[int]) -> list[Any]:  # noqa: N803
    return [BY_KEY[k].info() for k in counterId or [] if k in BY_KEY]


@method("QueryPerfCounterByLevel")
def query_counter_by_level(ctx: Ctx, this: MO, level: int) -> list[Any]:
    if not 1 <= level <= 4:
        raise vmodl.fault.InvalidArgument(msg="level must be within 1..4", invalidProperty="level")
    return [c.info() for c in COUNTERS if c.level <= level]


@method("QueryPerfProviderSummary")
def query_provider_summary(ctx: Ctx, this: MO, entity: Any) -> Any:
    mo = _entity(ctx, entity)
    current = _entity_kind(mo) is not None
    return PM.ProviderSummary(entity=mo.ref, currentSupported=current, summarySupported=True,
                              refreshRate=REALTIME if current else -1)
