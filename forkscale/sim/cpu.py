"""The CPU model: what a VM's vCPUs use, and the ready time that contention for host cores adds.

A powered-off or frozen VM (a frozen instant-clone source is paused) uses nothing. A guest that
is booting (its tools not up yet) works hard: half of its vCPUs, a third for a clone resuming
from a frozen source; once up, a guest idles at `IDLE_FRACTION` of its vCPUs. Like the rest of
the twin's statistics, the past is rebuilt from the present: a VM is taken to have been in its
current state since its current power-on. Ready time grows with the vCPUs running on the host
beyond its hardware threads; the hypervisor takes `HYPERVISOR_FRACTION` of the host's capacity.
Times are simulated seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .inventory import Host
    from .vm import VM
    from .world import World

IDLE_FRACTION = 0.03
BOOT_FRACTION = 0.5
RESUME_FRACTION = 0.3
HYPERVISOR_FRACTION = 0.01
READY_BASE = 0.002  # of each running vCPU's time, on an idle host


def sim_time(world: World, epoch: float) -> float:
    """Simulated seconds since the world started, of a wall-clock instant."""
    scale = world.time_scale if world.time_scale > 0 else 1.0
    return (epoch - world.started_wall) / scale


def booted_at(vm: VM) -> float | None:
    """Simulated time of the VM's current power-on (its fork, for an instant clone)."""
    if vm.power_state != "poweredOn" or vm.boot_time is None:
        return None
    return sim_time(vm.world, vm.boot_time)


def vm_cpu_mhz(vm: VM, t: float) -> int:
    """MHz the VM's vCPUs use at simulated time `t` (of its current power-on)."""
    boot = booted_at(vm)
    if boot is None or t < boot or vm.frozen:
        return 0
    if vm.guest.tools_running:
        busy = IDLE_FRACTION
    else:
        busy = RESUME_FRACTION if vm.mem.forked_at is not None else BOOT_FRACTION
    return int(vm.num_cpu * vm.host.cpu_mhz * busy)


def running_vcpus(vms: Iterable[VM], t: float) -> int:
    """vCPUs that compete for the host's cores at `t`."""
    return sum(vm.num_cpu for vm in vms if vm_cpu_mhz(vm, t) > 0)


def ready_fraction(host: Host, vcpus: int) -> float:
    """Share of a running vCPU's time spent ready but not scheduled, with `vcpus` running on the host."""
    threads = max(1, host.cpu_cores * 2)
    return READY_BASE + 0.05 * max(0.0, vcpus / threads - 1.0)


def host_cpu_mhz(host: Host, t: float, vms: Iterable[VM] | None = None) -> int:
    """MHz used on the host: its VMs' and the hypervisor's."""
    used = sum(vm_cpu_mhz(vm, t) for vm in (host.vms if vms is None else vms))
    return used + int(host.cpu_cores * host.cpu_mhz * HYPERVISOR_FRACTION)
