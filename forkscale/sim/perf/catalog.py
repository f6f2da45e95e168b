"""The twin's performance counter catalog: vCenter's counters (ids, names, units, levels and
descriptions as a vCenter 6.x/7.x lists them) for the entities the twin samples.

Every level-1 counter of a vCenter's default statistics level that describes a VM, a host, a
cluster, a resource pool, a datastore or a datacenter is here, plus the level-2 memory counters
P-Share needs (`mem.shared`, `mem.sharedcommon`, `mem.zero`, `mem.granted`, `mem.active`) and
the common level-2 I/O counters. Left out: vCenter's statistics about itself (`vcDebugInfo`,
`vcResources`), Storage I/O Control's datastore counters (the twin has no SIOC) and the
minimum/maximum/none rollups of level 4. Clients must resolve ids by name, as on vSphere.
Values are aggregates (instance ""): the twin has no per-device or per-datastore instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

PM = vim.PerformanceManager
# entity kinds a counter is sampled for
VM, HOST, CLUSTER, POOL, DATASTORE, DATACENTER = "vm", "host", "cluster", "pool", "datastore", "datacenter"
REALTIME_KINDS = (VM, HOST)  # the kinds with a realtime (20 s) provider; the others are historical only

_UNITS = {"percent": ("%", "Percentage"), "megaHertz": ("MHz", "Megahertz"), "millisecond": ("ms", "Millisecond"),
          "number": ("num", "Number"), "megaBytes": ("MB", "Megabyte"), "kiloBytes": ("KB", "Kilobyte"),
          "kiloBytesPerSecond": ("KBps", "Kilobytes per second"), "second": ("s", "Second")}
_GROUPS = {"cpu": "CPU", "mem": "Memory", "disk": "Disk", "net": "Network", "sys": "System",
           "virtualDisk": "Virtual disk", "datastore": "Datastore", "clusterServices": "Cluster services",
           "vmop": "Virtual machine operations"}


@dataclass(frozen=True)
class Counter:
    key: int
    full_name: str  # group.name.rollup
    unit: str
    stats: str  # absolute, delta, rate
    level: int
    per_device_level: int
    label: str
    entities: tuple[str, ...]
    summary: str

    @property
    def group(self) -> str:
        return self.full_name.split(".")[0]

    @property
    def name(self) -> str:
        return self.full_name.split(".")[1]

    @property
    def rollup(self) -> str:
        return self.full_name.split(".")[2]

    def info(self) -> Any:
        unit_label, unit_summary = _UNITS[self.unit]
        group = _GROUPS[self.group]
        return PM.CounterInfo(
            key=self.key, nameInfo=vim.ElementDescription(key=self.name, label=self.label, summary=self.summary),
            groupInfo=vim.ElementDescription(key=self.group, label=group, summary=group),
            unitInfo=vim.ElementDescription(key=self.unit, label=unit_label, summary=unit_summary),
            rollupType=self.rollup, statsType=self.stats, level=self.level, perDeviceLevel=self.per_device_level,
            associatedCounterId=[])


C = Counter
COUNTERS = [
    C(2, "cpu.usage.average", "percent", "rate", 1, 3, "Usage", ('vm', 'host', 'cluster'),
      "CPU usage as a percentage during the interval"),
    C(6, "cpu.usagemhz.average", "megaHertz", "rate", 1, 3, "Usage in MHz", ('vm', 'host', 'pool', 'cluster'),
      "CPU usage in megahertz during the interval"),
    C(12, "cpu.ready.summation", "millisecond", "delta", 1, 3, "Ready", ('vm', 'host'),
      "Time that the virtual machine was ready, but could not get scheduled to run on the physical CPU during last measurement interval"),
    C(13, "cpu.idle.summation", "millisecond", "delta", 2, 3, "Idle", ('vm', 'host'),
      "Total time that the CPU spent in an idle state"),
    C(24, "mem.usage.average", "percent", "absolute", 1, 3, "Host consumed %", ('vm', 'host', 'cluster'),
      "Percentage of host physical memory that has been consumed"),
    C(29, "mem.granted.average", "kiloBytes", "absolute", 2, 3, "Granted", ('vm', 'host', 'pool', 'cluster'),
      "Amount of host physical memory or physical memory that is mapped for a virtual machine or a host"),
    C(33, "mem.active.average", "kiloBytes", "absolute", 2, 3, "Active", ('vm', 'host', 'pool', 'cluster'),
      "Amount of guest physical memory that is being actively read or written by guest. Activeness is estimated by ESXi"),
    C(37, "mem.shared.average", "kiloBytes", "absolute", 2, 3, "Shared", ('vm', 'host', 'pool', 'cluster'),
      "Amount of guest physical memory that is shared within a single virtual machine or across virtual machines"),
    C(41, "mem.zero.average", "kiloBytes", "absolute", 2, 3, "Zero pages", ('vm', 'host', 'pool', 'cluster'),
      "Guest physical memory pages whose content is 0x00"),
    C(49, "mem.swapused.average", "kiloBytes", "absolute", 2, 3, "Swap consumed", ('host', 'cluster'),
      "Swap storage space consumed"),
    C(57, "mem.sharedcommon.average", "kiloBytes", "absolute", 2, 3, "Shared common", ('host',),
      "Amount of host physical memory that backs shared guest physical memory (Shared)"),
    C(70, "mem.swapped.average", "kiloBytes", "absolute", 2, 3, "Swapped", ('vm', 'pool'),
      "Amount of guest physical memory that is swapped out to the swap space"),
    C(85, "mem.swapinRate.average", "kiloBytesPerSecond", "rate", 1, 3, "Swap in rate", ('vm', 'host'),
      "Rate at which guest physical memory is swapped in from the swap space"),
    C(86, "mem.swapoutRate.average", "kiloBytesPerSecond", "rate", 1, 3, "Swap out rate", ('vm', 'host'),
      "Rate at which guest physical memory is swapped out to the swap space"),
    C(90, "mem.vmmemctl.average", "kiloBytes", "absolute", 1, 3, "Ballooned memory", ('vm', 'host', 'pool', 'cluster'),
      "Amount of guest physical memory reclaimed from the virtual machine by the balloon driver in the guest"),
    C(98, "mem.consumed.average", "kiloBytes", "absolute", 1, 3, "Consumed", ('vm', 'host', 'pool', 'cluster'),
      "Amount of host physical memory consumed for backing up guest physical memory pages"),
    C(102, "mem.overhead.average", "kiloBytes", "absolute", 1, 1, "Overhead consumed", ('vm', 'host', 'pool', 'cluster'),
      "Host physical memory consumed by ESXi data structures for running the virtual machines"),
    C(105, "mem.compressed.average", "kiloBytes", "absolute", 2, 3, "Compressed", ('vm', 'host', 'pool', 'cluster'),
      "Guest physical memory pages that have undergone memory compression"),
    C(125, "disk.usage.average", "kiloBytesPerSecond", "rate", 1, 3, "Usage", ('vm', 'host'),
      "Aggregated disk I/O rate. For hosts, this metric includes the rates for all virtual machines running on the host during the collection interval."),
    C(130, "disk.read.average", "kiloBytesPerSecond", "rate", 2, 3, "Read rate", ('vm', 'host'),
      "Average number of kilobytes read from the disk each second during the collection interval"),
    C(131, "disk.write.average", "kiloBytesPerSecond", "rate", 2, 3, "Write rate", ('vm', 'host'),
      "Average number of kilobytes written to disk each second during the collection interval"),
    C(133, "disk.maxTotalLatency.latest", "millisecond", "absolute", 1, 3, "Highest latency", ('vm', 'host'),
      "Highest latency value across all disks used by the host"),
    C(136, "disk.numberReadAveraged.average", "number", "rate", 1, 3, "Average read requests per second", ('vm', 'host'),
      "Average number of disk reads per second during the collection interval"),
    C(137, "disk.numberWriteAveraged.average", "number", "rate", 1, 3, "Average write requests per second", ('vm', 'host'),
      "Average number of disk writes per second during the collection interval"),
    C(143, "net.usage.average", "kiloBytesPerSecond", "rate", 1, 3, "Usage", ('vm', 'host'),
      "Network utilization (combined transmit-rates and receive-rates) during the interval"),
    C(148, "net.received.average", "kiloBytesPerSecond", "rate", 2, 3, "Data receive rate", ('vm', 'host'),
      "Average rate at which data was received during the interval"),
    C(149, "net.transmitted.average", "kiloBytesPerSecond", "rate", 2, 3, "Data transmit rate", ('vm', 'host'),
      "Average rate at which data was transmitted during the interval"),
    C(155, "sys.uptime.latest", "second", "absolute", 1, 3, "Uptime", ('vm', 'host'),
      "Total time elapsed, in seconds, since last system startup"),
    C(156, "sys.heartbeat.summation", "number", "delta", 1, 3, "Heartbeat", ('vm',),
      "Number of heartbeats issued per virtual machine during the interval"),
    C(171, "virtualDisk.numberReadAveraged.average", "number", "rate", 1, 3, "Average read requests per second", ('vm',),
      "Average number of read commands issued per second to the virtual disk during the collection interval"),
    C(172, "virtualDisk.numberWriteAveraged.average", "number", "rate", 1, 3, "Average write requests per second", ('vm',),
      "Average number of write commands issued per second to the virtual disk during the collection interval"),
    C(175, "virtualDisk.totalReadLatency.average", "millisecond", "absolute", 1, 3, "Read latency", ('vm',),
      "The average time a read from the virtual disk takes"),
    C(176, "virtualDisk.totalWriteLatency.average", "millisecond", "absolute", 1, 3, "Write latency", ('vm',),
      "The average time a write to the virtual disk takes"),
    C(178, "datastore.numberReadAveraged.average", "number", "rate", 1, 3, "Average read requests per second", ('vm', 'host'),
      "Average number of read commands issued per second to the datastore during the collection interval"),
    C(179, "datastore.numberWriteAveraged.average", "number", "rate", 1, 3, "Average write requests per second", ('vm', 'host'),
      "Average number of write commands issued per second to the datastore during the collection interval"),
    C(182, "datastore.totalReadLatency.average", "millisecond", "absolute", 1, 3, "Read latency", ('vm', 'host'),
      "The average time a read from the datastore takes"),
    C(183, "datastore.totalWriteLatency.average", "millisecond", "absolute", 1, 3, "Write latency", ('vm', 'host'),
      "The average time a write to the datastore takes"),
    C(256, "vmop.numPoweron.latest", "number", "absolute", 1, 3, "VM power on count", ('cluster', 'datacenter'),
      "Number of virtual machine power on operations"),
    C(257, "vmop.numPoweroff.latest", "number", "absolute", 1, 3, "VM power off count", ('cluster', 'datacenter'),
      "Number of virtual machine power off operations"),
    C(258, "vmop.numSuspend.latest", "number", "absolute", 1, 3, "VM suspend count", ('cluster', 'datacenter'),
      "Number of virtual machine suspend operations"),
    C(259, "vmop.numReset.latest", "number", "absolute", 1, 3, "VM reset count", ('cluster', 'datacenter'),
      "Number of virtual machine reset operations"),
    C(260, "vmop.numRebootGuest.latest", "number", "absolute", 1, 3, "VM guest reboot count", ('cluster', 'datacenter'),
      "Number of virtual machine guest reboot operations"),
    C(261, "vmop.numStandbyGuest.latest", "number", "absolute", 1, 3, "VM standby guest count", ('cluster', 'datacenter'),
      "Number of virtual machine standby guest operations"),
    C(262, "vmop.numShutdownGuest.latest", "number", "absolute", 1, 3, "VM guest shutdown count", ('cluster', 'datacenter'),
      "Number of virtual machine guest shutdown operations"),
    C(263, "vmop.numCreate.latest", "number", "absolute", 1, 3, "VM create count", ('cluster', 'datacenter'),
      "Number of virtual machine create operations"),
    C(264, "vmop.numDestroy.latest", "number", "absolute", 1, 3, "VM delete count", ('cluster', 'datacenter'),
      "Number of virtual machine delete operations"),
    C(265, "vmop.numRegister.latest", "number", "absolute", 1, 3, "VM register count", ('cluster', 'datacenter'),
      "Number of virtual machine register operations"),
    C(266, "vmop.numUnregister.latest", "number", "absolute", 1, 3, "VM unregister count", ('cluster', 'datacenter'),
      "Number of virtual machine unregister operations"),
    C(267, "vmop.numReconfigure.latest", "number", "absolute", 1, 3, "VM reconfigure count", ('cluster', 'datacenter'),
      "Number of virtual machine reconfigure operations"),
    C(268, "vmop.numClone.latest", "number", "absolute", 1, 3, "VM clone count", ('cluster', 'datacenter'),
      "Number of virtual machine clone operations"),
    C(269, "vmop.numDeploy.latest", "number", "absolute", 1, 3, "VM template deploy count", ('cluster', 'datacenter'),
      "Number of virtual machine template deploy operations"),
    C(270, "vmop.numChangeHost.latest", "number", "absolute", 1, 3, "VM host change count (non-powered-on VMs)", ('cluster', 'datacenter'),
      "Number of host change operations for powered-off and suspended VMs"),
    C(271, "vmop.numChangeDS.latest", "number", "absolute", 1, 3, "VM datastore change count (non-powered-on VMs)", ('cluster', 'datacenter'),
      "Number of datastore change operations for powered-off and suspended virtual machines"),
    C(272, "vmop.numChangeHostDS.latest", "number", "absolute", 1, 3, "VM host and datastore change count (non-powered-on VMs)", ('cluster', 'datacenter'),
      "Number of host and datastore change operations for powered-off and suspended virtual machines"),
    C(273, "vmop.numVMotion.latest", "number", "absolute", 1, 3, "vMotion count", ('cluster', 'datacenter'),
      "Number of migrations with vMotion (host change operations for powered-on VMs)"),
    C(274, "vmop.numSVMotion.latest", "number", "absolute", 1, 3, "Storage vMotion count", ('cluster', 'datacenter'),
      "Number of migrations with Storage vMotion (datastore change operations for powered-on VMs)"),
    C(275, "vmop.numXVMotion.latest", "number", "absolute", 1, 3, "VM host and datastore change count (powered-on VMs)", ('cluster', 'datacenter'),
      "Number of host and datastore change operations for powered-on and suspended virtual machines"),
    C(276, "clusterServices.effectivecpu.average", "megaHertz", "rate", 1, 3, "Effective CPU resources", ('cluster',),
      "Total available CPU resources of all hosts within a cluster"),
    C(277, "clusterServices.effectivemem.average", "megaBytes", "absolute", 1, 3, "Effective memory resources", ('cluster',),
      "Total amount of machine memory of all hosts in the cluster that is available for use for virtual machine memory and overhead memory"),
    C(278, "cpu.totalmhz.average", "megaHertz", "rate", 1, 3, "Total", ('cluster',),
      "Total amount of CPU resources of all hosts in the cluster"),
    C(279, "mem.totalmb.average", "megaBytes", "absolute", 1, 3, "Total", ('cluster',),
      "Total amount of host physical memory of all hosts in the cluster that is available for virtual machine memory (physical memory for use by the guest OS) and virtual machine overhead memory"),
    C(281, "disk.used.latest", "kiloBytes", "absolute", 1, 1, "Space actually used", ('datastore',),
      "Amount of space actually used by the virtual machine or the datastore"),
    C(282, "disk.provisioned.latest", "kiloBytes", "absolute", 1, 1, "Space potentially used", ('datastore',),
      "Amount of storage set aside for use by a datastore or a virtual machine"),
    C(283, "disk.capacity.latest", "kiloBytes", "absolute", 1, 3, "Capacity", ('datastore',),
      "Configured size of the datastore"),
    C(284, "disk.unshared.latest", "kiloBytes", "absolute", 1, 1, "Space not shared", ('datastore',),
      "Amount of space associated exclusively with a virtual machine"),
    C(398, "cpu.demand.average", "megaHertz", "absolute", 2, 3, "Demand", ('vm', 'host'),
      "The amount of CPU resources a virtual machine would use if there were no CPU contention or CPU limit"),
]
BY_KEY = {c.key: c for c in COUNTERS}
BY_NAME = {c.full_name: c for c in COUNTERS}


def for_kind(kind: str | None) -> list[Counter]:
    return [c for c in COUNTERS if kind in c.entities] if kind else []
