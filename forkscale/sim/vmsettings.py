"""A VM's kept ConfigSpec settings (tools, flags, bootOptions, allocations, hot-add switches...),
laid over the ConfigInfo the twin renders. forkscale.sim.ops.settings decides what is kept."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport

if TYPE_CHECKING:
    from .vm import VM

# ConfigSpec fields kept as they are and rendered into the ConfigInfo field of the same name.
STORED = frozenset({
    "alternateGuestName", "tools", "flags", "consolePreferences", "memoryHotAddEnabled", "cpuHotAddEnabled",
    "cpuHotRemoveEnabled", "cpuAllocation", "memoryAllocation", "latencySensitivity", "swapPlacement",
    "bootOptions", "changeTrackingEnabled", "firmware", "maxMksConnections", "guestAutoLockEnabled",
    "memoryReservationLockedToMax", "nestedHVEnabled", "vPMCEnabled", "messageBusTunnelEnabled", "rebootPowerOff",
    "vAssertsEnabled", "vmxStatsCollectionEnabled", "defaultPowerOps",
})
# Hardware fields (ConfigSpec -> ConfigInfo.hardware) kept the same way.
HARDWARE = frozenset({"numCoresPerSocket", "virtualICH7MPresent", "virtualSMCPresent", "motherboardLayout"})


def is_set(val: Any) -> bool:
    return val is not None and not (isinstance(val, list) and not val)


def merged(old: Any, new: Any) -> Any:
    """`new` over `old`: a data object's set fields replace the old ones, field by field."""
    if old is None or not isinstance(new, VmomiSupport.DataObject) or type(old) is not type(new):
        return copy.deepcopy(new)
    out = copy.deepcopy(old)
    for p in type(new)._GetPropertyList():
        val = getattr(new, p.name, None)
        if is_set(val):
            setattr(out, p.name, merged(getattr(old, p.name, None), val))
    return out


def render(vm: VM, cfg: Any) -> None:
    """Lay a VM's kept settings over its rendered ConfigInfo."""
    for name, value in vm.settings.items():
        if name in HARDWARE:
            setattr(cfg.hardware, name, value)
        else:
            setattr(cfg, name, merged(getattr(cfg, name, None), value))


def allocation(vm: VM, name: str, default: Any) -> Any:
    """A VM's cpuAllocation/memoryAllocation: its settings over the default."""
    kept = vm.settings.get(name)
    return merged(default, kept) if kept is not None else default
