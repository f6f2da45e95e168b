"""The P-Share memory model: what instant clones share with their parent, and how it decays.

At fork a clone shares every page its parent has touched; it then diverges (private pages
grow) at `write_rate_mb_s` simulated MB/s up to `divergence_cap` of its touched memory. A VMFork
parent and its children form one sharing domain even with inter-VM TPS salted, while unrelated
VMs only share zero pages. Host counters follow from the same numbers:
`mem.shared` = sum of guest pages shared, `mem.sharedcommon` = machine pages backing them
(one copy per fork group), saved = shared − sharedcommon.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

if TYPE_CHECKING:
    from .inventory import Host
    from .vm import VM

ZERO_FRACTION = 0.02  # pages a lone VM shares with itself (zero pages), salted TPS


@dataclass
class MemoryModel:
    write_rate_mb_s: float = 2.0
    divergence_cap: float = 0.3
    touched_fraction: float = 0.6
    overhead_mb: int = 40


@dataclass
class MemState:
    touched_mb: int
    group: str | None = None  # fork group: the moid of the root source
    forked_at: float | None = None  # sim seconds
    parent: VM | None = None


def vm_shared_private(vm: VM, now: float) -> tuple[int, int]:
    """(sharedMemory, privateMemory) in MB for a powered-on VM; zeros when off."""
    if vm.power_state != "poweredOn":
        return 0, 0
    model: MemoryModel = vm.world.memory
    touched = vm.mem.touched_mb
    if vm.mem.forked_at is not None:
        diverged = min(touched * model.divergence_cap, model.write_rate_mb_s * max(0.0, now - vm.mem.forked_at))
        shared = int(touched - diverged)
        return shared, touched - shared
    if vm.last_fork_at is not None and vm.fork_children():
        # The parent's pages stay shared while its least-diverged (newest) child still maps them.
        diverged = min(touched * model.divergence_cap, model.write_rate_mb_s * max(0.0, now - vm.last_fork_at))
        best = int(touched - diverged)
        return best, touched - best
    zero = int(touched * ZERO_FRACTION)
    return zero, touched - zero


def host_memory(host: Host, now: float, vms: Iterable[VM] | None = None,
                groups: dict[str, int] | None = None) -> dict[str, int]:
    """Host counters in KB, all derived from the VMs on the host (or those of them in `vms`);
    `groups` is filled with each fork group's shared MB."""
    shared = private = granted = zero = running = 0
    groups = {} if groups is None else groups
    for vm in host.vms if vms is None else vms:
        if vm.power_state != "poweredOn":
            continue
        running += 1
        s, p = vm_shared_private(vm, now)
        shared += s
        private += p
        granted += vm.mem.touched_mb
        group = vm.mem.group or (vm.moid if vm.fork_children() else None)
        if group is not None:
            groups[group] = max(groups.get(group, 0), s)
        else:
            zero += s
    common = sum(groups.values()) + (1 if zero else 0)
    model: MemoryModel = host.world.memory
    overhead = model.overhead_mb * running
    kb = 1024
    return {
        "shared": shared * kb,
        "sharedcommon": common * kb,
        "zero": zero * kb,
        "consumed": (private + common + overhead) * kb,
        "granted": granted * kb,
        "overhead": overhead * kb,
    }


def host_quick_stats(host: Host) -> Any:
    from .cpu import host_cpu_mhz

    now = host.world.sim_seconds()
    m = host_memory(host, now)
    return vim.host.Summary.QuickStats(overallMemoryUsage=m["consumed"] // 1024,
                                       overallCpuUsage=host_cpu_mhz(host, now), uptime=int(now))


ADMISSION_TTL_S = 1.0
"""Simulated seconds an admission count stays good for (VMs diverge at `write_rate_mb_s` meanwhile)."""


@dataclass
class Admission:
    """A host's consumed memory as counted at `at` (sim seconds), and its fork groups' shared MB;
    good while the host's memory epoch is `epoch`."""

    consumed_mb: int
    groups: dict[str, int]
    at: float
    epoch: int


def admit(host: Host, need_mb: int) -> bool:
    """Whether the host has `need_mb` of machine memory left (no overcommit in the twin).

    The host's count is kept between calls (`Host.admission`): recounted over its VMs when a VM
    arrived, left, or powered on or off other than by an instant clone (which `forked` adds in
    O(1)), or when it is older than ADMISSION_TTL_S. A fan-out of N clones costs O(N), not O(N^2).
    """
    now = host.world.sim_seconds()
    acc: Admission | None = host.admission
    if acc is None or acc.epoch != host.mem_epoch or now - acc.at > ADMISSION_TTL_S:
        acc = host.admission = _count(host, now)
    return acc.consumed_mb + need_mb <= host.memory_bytes // (1024 * 1024)


def _count(host: Host, now: float) -> Admission:
    groups: dict[str, int] = {}
    m = host_memory(host, now, groups=groups)
    return Admission(consumed_mb=m["consumed"] // 1024, groups=groups, at=now, epoch=host.mem_epoch)


def forked(host: Host, clone: VM, epoch_before: int) -> None:
    """An instant clone joined `host`: add what it costs to the host's count, when that count was
    current before the clone (a fresh clone shares all it touched: the overhead, plus what it
    raises its fork group's shared pages by). The source's own pages shared again are not taken
    off: the count errs on the full side until it is redone."""
    acc: Admission | None = host.admission
    if acc is None or acc.epoch != epoch_before or clone.mem.group is None:
        return
    touched = clone.mem.touched_mb
    top = acc.groups.get(clone.mem.group, 0)
    acc.consumed_mb += host.world.memory.overhead_mb + max(0, touched - top)
    acc.groups[clone.mem.group] = max(top, touched)
    acc.epoch = host.mem_epoch
