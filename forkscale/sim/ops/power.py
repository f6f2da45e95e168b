"""Power operations of the twin's VMs, and what the simulated guest does when it comes up."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from pyVmomi import vim, vmodl

from ..disks import MiB
from ..dispatch import Ctx, method
from ..events import record, record_ex
from ..memory import admit
from ..tasks import Task
from ..vm import VM
from .common import as_vm, elapse, guest_later, invalid_power, require_placeable, submit


def power_on_now(vm: VM, *, boot: bool = True) -> None:
    """Power on immediately. With `boot`, the simulated guest comes up after guest_boot latency."""
    world = vm.world
    vm.power_state = "poweredOn"
    vm.boot_time = world.now()
    for d in vm.disks:
        d.top.thaw(world.sim_seconds(), rate=0.05 * MiB)
    if not boot:
        vm.guest.tools_running = True
        vm.changed()
        return
    vm.guest.tools_running = False
    vm.changed()
    guest_up_later(vm, "guest_boot")


def guest_up_later(vm: VM, op: str) -> None:
    """The simulated guest comes up (boots, or resumes in a clone) after `op`'s latency."""
    vm.guest_drawn_s = delay = vm.world.draw(op)
    guest_later(vm, delay, guest_up)


def guest_up(vm: VM) -> None:
    vm.guest.tools_running = True
    if vm.guest.agent == "simulated":
        apply_identity(vm)
    vm.changed()


#: A file on a VM's first disk that makes its simulated guest script fail: its text (`<step>:<reason>`)
#: is reported as `guestinfo.forkscale.status=error:<step>:<reason>`, as guest/linux/forkscale-guest
#: reports a failed step. Written (admin `disk_write`) into a golden VM before a snapshot, it makes
#: that snapshot a broken image: every clone of it reports the error.
GUEST_ERROR_FILE = "/etc/forkscale/guest-error"


def apply_identity(vm: VM) -> None:
    """What the guest script does after boot or resume, played by the twin for simulated guests."""
    ident = vm.extra.get("guestinfo.forkscale.id")
    if ident is None:
        return
    broken = vm.disks[0].top.read(GUEST_ERROR_FILE) if vm.disks else None
    if broken is not None:
        vm.extra["guestinfo.forkscale.status"] = "error:" + broken.decode(errors="replace").strip()
        return
    vm.guest.hostname = vm.extra.get("guestinfo.forkscale.hostname") or vm.name
    vm.guest.ip = vm.extra.get("guestinfo.forkscale.ip") or None
    vm.extra["guestinfo.forkscale.status"] = "ready"
    vm.extra["guestinfo.forkscale.machine_id"] = uuidlib.UUID(int=vm.world.rng.getrandbits(128)).hex


def power_off_now(vm: VM) -> None:
    world = vm.world
    vm.power_state = "poweredOff"
    vm.frozen = False
    vm.guest.tools_running = False
    vm.boot_time = None
    for d in vm.disks:
        d.top.freeze(world.sim_seconds())
    vm.changed()


def suspend_now(vm: VM) -> None:
    """Suspend at once: the memory goes to a .vmss file in the VM's directory, the disks stop growing."""
    world = vm.world
    vm.power_state = "suspended"
    vm.guest.tools_running = False
    for d in vm.disks:
        d.top.freeze(world.sim_seconds())
    vm.changed()


def resume_now(vm: VM) -> None:
    """Resume a suspended VM: the guest continues where it was (same boot), VMware Tools back shortly."""
    world = vm.world
    vm.power_state = "poweredOn"
    for d in vm.disks:
        d.top.thaw(world.sim_seconds(), rate=0.05 * MiB)
    vm.changed()
    delay = world.draw("guest_resume")

    def tools_back(v: VM) -> None:
        v.guest.tools_running = True
        v.changed()

    guest_later(vm, delay, tools_back)


def on_message(vm: VM) -> str:
    return f"{vm.name} on {vm.host.name}"


@method("PowerOnVM_Task")
def power_on(ctx: Ctx, this: Any, host: Any = None) -> Any:
    vm = as_vm(this)

    async def body(task: Task) -> None:
        await elapse(vm.world, "power_on")
        require_placeable(vm.host)
        if vm.template:
            raise vim.fault.InvalidState(msg="A template cannot be powered on")
        if vm.power_state == "poweredOn":
            raise invalid_power(vm, "poweredOff")
        if not admit(vm.host, vm.mem.touched_mb):
            raise vim.fault.InsufficientMemoryResourcesFault(
                msg=f"Insufficient memory resources on host {vm.host.name}", unreserved=0, requested=vm.mem.touched_mb)
        resuming = vm.power_state == "suspended"
        record(ctx, "VmResumingEvent" if resuming else "VmStartingEvent", vm,
               f"{on_message(vm)} is {'resuming' if resuming else 'starting'}", task=task)
        if resuming:
            resume_now(vm)
        else:
            power_on_now(vm)
        record(ctx, "VmPoweredOnEvent", vm, f"{on_message(vm)} is powered on", task=task)

    return submit(ctx, vm, body, op="VirtualMachine.powerOn")


@method("PowerOffVM_Task")
def power_off(ctx: Ctx, this: Any) -> Any:
    vm = as_vm(this)

    async def body(task: Task) -> None:
        await elapse(vm.world, "power_off")
        if vm.power_state == "poweredOff":
            raise invalid_power(vm, "poweredOn")
        record(ctx, "VmStoppingEvent", vm, f"{on_message(vm)} is stopping", task=task)
        power_off_now(vm)
        record(ctx, "VmPoweredOffEvent", vm, f"{on_message(vm)} is powered off", task=task)

    return submit(ctx, vm, body, op="VirtualMachine.powerOff")


@method("SuspendVM_Task")
def suspend(ctx: Ctx, this: Any) -> Any:
    vm = as_vm(this)

    async def body(task: Task) -> None:
        await elapse(vm.world, "suspend")
        if vm.power_state != "poweredOn":
            raise invalid_power(vm, "poweredOn")
        if vm.frozen:
            raise vim.fault.InvalidState(msg=f"{vm.name} is a frozen instant-clone source: it cannot be suspended")
        record(ctx, "VmSuspendingEvent", vm, f"{on_message(vm)} is being suspended", task=task)
        suspend_now(vm)
        record(ctx, "VmSuspendedEvent", vm, f"{on_message(vm)} is suspended", task=task)

    return submit(ctx, vm, body, op="VirtualMachine.suspend")


@method("ResetVM_Task")
def reset(ctx: Ctx, this: Any) -> Any:
    vm = as_vm(this)

    async def body(task: Task) -> None:
        await elapse(vm.world, "power_on")
        if vm.power_state != "poweredOn":
            raise invalid_power(vm, "poweredOn")
        vm.frozen = False
        record(ctx, "VmResettingEvent", vm, f"{on_message(vm)} is reset", task=task)
        power_on_now(vm)

    return submit(ctx, vm, body, op="VirtualMachine.reset")


@method("MarkAsTemplate")
def mark_as_template(ctx: Ctx, this: Any) -> None:
    vm = as_vm(this)
    if vm.power_state != "poweredOff":
        raise invalid_power(vm, "poweredOff")
    vm.template = True
    vm.world.moved(vm)  # a template leaves its resource pool's views
    vm.changed()
    record_ex(ctx, "com.vmware.vc.vm.VmConvertedToTemplateEvent", vm, f"{vm.name} converted to template")


@method("MarkAsVirtualMachine")
def mark_as_vm(ctx: Ctx, this: Any, pool: Any, host: Any = None) -> None:
    vm = as_vm(this)
    if not vm.template:
        raise vmodl.fault.NotSupported(msg="The VM is not a template")
    vm.template = False
    vm.world.moved(vm)
    vm.changed()
    record_ex(ctx, "com.vmware.vc.vm.TemplateConvertedToVmEvent", vm, f"Template {vm.name} converted to VM")
