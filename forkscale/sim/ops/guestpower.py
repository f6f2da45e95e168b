"""Guest power operations: the guest is asked to shut down, reboot or sleep; the call returns at once.

As on vCenter, `ShutdownGuest`, `RebootGuest` and `StandbyGuest` only ask VMware Tools in the
guest: the event is posted when asked, and the guest goes down later (after the `guest_shutdown`
latency), so a client waits for `runtime.powerState` to change. They need VMware Tools running
(`ToolsUnavailable` otherwise, also for a frozen source, whose guest is not executing).
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from ..dispatch import Ctx, method
from ..events import record
from ..vm import VM
from .common import as_vm, guest_later, invalid_power
from .power import guest_up, on_message, power_off_now, suspend_now


def _guest_vm(this: Any) -> VM:
    vm = as_vm(this)
    if vm.power_state != "poweredOn":
        raise invalid_power(vm, "poweredOn")
    if not vm.guest.tools_running or vm.frozen or not vm.host.connected:
        raise vim.fault.ToolsUnavailable(msg=f"Cannot complete operation because VMware Tools is not running in "
                                             f"this virtual machine ({vm.name}).")
    return vm


def _going_down(vm: VM) -> float:
    """The guest starts going down: VMware Tools stop answering. Returns the real delay until it is down."""
    vm.guest.tools_running = False
    vm.changed()
    return vm.world.delay("guest_shutdown")


@method("ShutdownGuest")
def shutdown_guest(ctx: Ctx, this: Any) -> None:
    vm = _guest_vm(this)
    record(ctx, "VmGuestShutdownEvent", vm, f"Guest OS shut down for {on_message(vm)}")

    def down(v: VM) -> None:
        power_off_now(v)
        record(ctx, "VmPoweredOffEvent", v, f"{on_message(v)} is powered off")

    guest_later(vm, _going_down(vm), down)


@method("RebootGuest")
def reboot_guest(ctx: Ctx, this: Any) -> None:
    vm = _guest_vm(this)
    record(ctx, "VmGuestRebootEvent", vm, f"Guest OS reboot for {on_message(vm)}")
    world = vm.world

    def rebooting(v: VM) -> None:
        guest_later(v, world.draw("guest_boot"), guest_up)

    guest_later(vm, _going_down(vm), rebooting)


@method("StandbyGuest")
def standby_guest(ctx: Ctx, this: Any) -> None:
    vm = _guest_vm(this)
    record(ctx, "VmGuestStandbyEvent", vm, f"Guest OS standby for {on_message(vm)}")

    def asleep(v: VM) -> None:
        suspend_now(v)
        record(ctx, "VmSuspendedEvent", v, f"{on_message(v)} is suspended")

    guest_later(vm, _going_down(vm), asleep)
