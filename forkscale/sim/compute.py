"""Compute resources as vCenter shows them: a cluster's configuration (DRS on, HA off), its
effective capacity, its resource pools' allocations and usage, and the EnvironmentBrowser that
clusters and VMs point to.

Capacity units follow the API: CPU in MHz; memory in MB in allocations and in the cluster
summary's `effectiveMemory`, in bytes in `totalMemory` and in resource-pool usage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyVmomi import vim

from .mo import MO
from .vmsettings import allocation

if TYPE_CHECKING:
    from .inventory import Cluster, Host, ResourcePool
    from .vm import VM

MiB = 1024**2
HOST_CPU_RESERVED = 0.03  # the hypervisor's own share, left out of the effective capacity
HOST_MEM_RESERVED = 0.04
CPU_SHARES, MEM_SHARES = 4000, 163840  # a resource pool's "normal" shares


def effective_cpu(hosts: list[Host]) -> int:
    """MHz available to VMs on the connected hosts."""
    return sum(int(h.cpu_cores * h.cpu_mhz * (1 - HOST_CPU_RESERVED)) for h in hosts if h.connected)


def effective_memory_mb(hosts: list[Host]) -> int:
    return sum(int(h.memory_bytes // MiB * (1 - HOST_MEM_RESERVED)) for h in hosts if h.connected)


def _drs() -> Any:
    return vim.cluster.DrsConfigInfo(enabled=True, enableVmBehaviorOverrides=True, defaultVmBehavior="fullyAutomated",
                                     vmotionRate=3, scaleDescendantsShares="disabled", option=[])


def _das() -> Any:
    return vim.cluster.DasConfigInfo(
        enabled=False, vmMonitoring="vmMonitoringDisabled", hostMonitoring="enabled",
        vmComponentProtecting="disabled", failoverLevel=1, admissionControlEnabled=True,
        admissionControlPolicy=vim.cluster.FailoverLevelAdmissionControlPolicy(failoverLevel=1),
        defaultVmSettings=vim.cluster.DasVmSettings(
            restartPriority="medium", isolationResponse="none",
            vmToolsMonitoringSettings=vim.cluster.VmToolsMonitoringSettings(
                enabled=False, vmMonitoring="vmMonitoringDisabled", clusterSettings=True, failureInterval=30,
                minUpTime=120, maxFailures=3, maxFailureWindow=3600)),
        option=[], heartbeatDatastore=[], hBDatastoreCandidatePolicy="allFeasibleDsWithUserPreference")


CONFIG_EX = vim.cluster.ConfigInfoEx(
    vmSwapPlacement="vmDirectory", drsConfig=_drs(), dasConfig=_das(), spbmEnabled=True,
    defaultHardwareVersionKey="vmx-21", maximumHardwareVersionKey="vmx-21",
    dpmConfigInfo=vim.cluster.DpmConfigInfo(enabled=False, defaultDpmBehavior="automated", hostPowerActionRate=3),
    dasVmConfig=[], drsVmConfig=[], rule=[], group=[], dpmHostConfig=[])
CONFIG = vim.cluster.ConfigInfo(dasConfig=_das(), drsConfig=_drs(), dasVmConfig=[], drsVmConfig=[], rule=[])


def cluster_summary(cluster: Cluster) -> Any:
    hosts = cluster.hosts
    from .inventory import vms

    all_vms = [v for v in vms(cluster.world) if v.host in hosts and not v.template]
    cpu, mem = effective_cpu(hosts), effective_memory_mb(hosts)
    usage = vim.cluster.UsageSummary(
        totalCpuCapacityMhz=cpu, totalMemCapacityMB=mem, cpuReservationMhz=0, memReservationMB=0, cpuDemandMhz=0,
        memDemandMB=sum(v.mem.touched_mb for v in all_vms if v.power_state == "poweredOn"), statsGenNumber=0,
        cpuEntitledMhz=0, memEntitledMB=0, totalVmCount=len(all_vms),
        poweredOffVmCount=sum(v.power_state != "poweredOn" for v in all_vms))
    return vim.ClusterComputeResource.Summary(
        totalCpu=sum(h.cpu_cores * h.cpu_mhz for h in hosts), totalMemory=sum(h.memory_bytes for h in hosts),
        numCpuCores=sum(h.cpu_cores for h in hosts), numCpuThreads=sum(h.cpu_cores * 2 for h in hosts),
        effectiveCpu=cpu, effectiveMemory=mem, numHosts=len(hosts), numEffectiveHosts=sum(h.connected for h in hosts),
        overallStatus="green", currentFailoverLevel=1, numVmotions=0, usageSummary=usage,
        clusterMaintenanceModeStatus="notInMaintenanceMode")


def _alloc(reservation: int, limit: int, expandable: bool, shares: int) -> Any:
    return vim.ResourceAllocationInfo(reservation=reservation, expandableReservation=expandable, limit=limit,
                                      shares=vim.SharesInfo(shares=shares, level="normal"), overheadLimit=-1)


def pool_config(pool: ResourcePool) -> Any:
    """The root pool holds the cluster's effective capacity (fixed); a child pool defaults to
    no reservation, expandable, unlimited, normal shares."""
    from .inventory import Cluster

    owner = pool.owner
    if pool.parent is owner and isinstance(owner, Cluster):
        cpu, mem = effective_cpu(owner.hosts), effective_memory_mb(owner.hosts)
        cpu_a, mem_a = _alloc(cpu, cpu, False, CPU_SHARES), _alloc(mem, mem, False, MEM_SHARES)
    elif pool.allocation is not None:
        cpu_a, mem_a = pool.allocation
    else:
        cpu_a, mem_a = _alloc(0, -1, True, CPU_SHARES), _alloc(0, -1, True, MEM_SHARES)
    return vim.ResourceConfigSpec(entity=pool.ref, changeVersion="1", cpuAllocation=cpu_a, memoryAllocation=mem_a)


def pool_runtime(pool: ResourcePool) -> Any:
    from .inventory import Cluster

    hosts = pool.owner.hosts if isinstance(pool.owner, Cluster) else []
    cpu, mem = effective_cpu(hosts), effective_memory_mb(hosts) * MiB
    running = [v for v in pool_vms(pool) if v.power_state == "poweredOn"]
    used_mem = sum(v.mem.touched_mb for v in running) * MiB
    usage = vim.ResourcePool.ResourceUsage
    return vim.ResourcePool.RuntimeInfo(
        cpu=usage(reservationUsed=0, reservationUsedForVm=0, unreservedForPool=cpu, unreservedForVm=cpu,
                  overallUsage=0, maxUsage=cpu),
        memory=usage(reservationUsed=0, reservationUsedForVm=0, unreservedForPool=mem, unreservedForVm=mem,
                     overallUsage=used_mem, maxUsage=mem),
        overallStatus="green", sharesScalable="notScalable")


def pool_vms(pool: ResourcePool) -> list[VM]:
    from .inventory import vms

    return [v for v in vms(pool.world) if v.pool is pool and not v.template]


def pool_summary(pool: ResourcePool) -> Any:
    running = [v for v in pool_vms(pool) if v.power_state == "poweredOn"]
    quick = vim.ResourcePool.Summary.QuickStats(
        overallCpuUsage=0, overallCpuDemand=0, guestMemoryUsage=sum(v.mem.touched_mb for v in running),
        hostMemoryUsage=sum(v.mem.touched_mb for v in running), distributedCpuEntitlement=0,
        distributedMemoryEntitlement=0, staticCpuEntitlement=0, staticMemoryEntitlement=0, privateMemory=0,
        sharedMemory=0, swappedMemory=0, balloonedMemory=0, overheadMemory=0, consumedOverheadMemory=0,
        compressedMemory=0)
    return vim.ResourcePool.Summary(name=pool.name, config=pool_config(pool), runtime=pool_runtime(pool),
                                    quickStats=quick, configuredMemoryMB=sum(v.memory_mb for v in running))


def vm_resource_config(vm: VM) -> Any:
    """A VM's own allocation: no reservation, unlimited, normal shares (1000 per vCPU, 10 per MB)."""
    return vim.ResourceConfigSpec(entity=vm.ref, changeVersion=str(vm.change),
                                  cpuAllocation=vm_cpu_allocation(vm), memoryAllocation=vm_memory_allocation(vm))


def vm_cpu_allocation(vm: VM) -> Any:
    default = vim.ResourceAllocationInfo(reservation=0, expandableReservation=False, limit=-1,
                                         shares=vim.SharesInfo(shares=1000 * vm.num_cpu, level="normal"))
    return allocation(vm, "cpuAllocation", default)


def vm_memory_allocation(vm: VM) -> Any:
    default = vim.ResourceAllocationInfo(reservation=0, expandableReservation=False, limit=-1,
                                         shares=vim.SharesInfo(shares=10 * vm.memory_mb, level="normal"))
    return allocation(vm, "memoryAllocation", default)


class EnvironmentBrowser(MO):
    """A compute resource's EnvironmentBrowser (its VMs point to it too)."""

    kind = vim.EnvironmentBrowser

    def __init__(self, world: Any, moid: str, owner: MO) -> None:
        super().__init__(world, moid)
        self.owner = owner

    def p_datastoreBrowser(self) -> Any:  # noqa: N802 - vSphere property name
        hosts = getattr(self.owner, "hosts", [])
        browser = getattr(hosts[0], "browser", None) if hosts else None
        return browser.ref if browser is not None else None
