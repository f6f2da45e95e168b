"""What a ConfigSpec changes on a VM, applied the same way by ReconfigVM_Task and CloneVM_Task
(whose `spec.config` vCenter applies to the clone).

The twin models a VM's name, annotation, memory, vCPUs, cores per socket, guest OS, UUIDs,
extraConfig and network adapter edits; the ConfigSpec fields that mirror a ConfigInfo field of the
same name and type (tools, flags, bootOptions, cpuAllocation, hot-add switches, firmware...) are
kept as the VM's settings and read back in `config` (forkscale.sim.vmsettings) — a data object
merges field by field, as an unset field of a ConfigSpec means "leave it". Anything else a
ConfigSpec can ask for (adding disks, vApp properties, encryption...) is refused with
NotSupported naming the field, never dropped (forkscale.sim.ops.validate).
"""

from __future__ import annotations

from typing import Any

from ..vm import VM
from ..vmsettings import HARDWARE, STORED, is_set, merged

# Applied to the VM's own state (or checked: changeVersion).
APPLIED = frozenset({"name", "annotation", "memoryMB", "numCPUs", "guestId", "uuid", "instanceUuid", "extraConfig",
                     "deviceChange", "changeVersion"})
IGNORED = frozenset({"dynamicType", "dynamicProperty"})
SUPPORTED = STORED | HARDWARE | APPLIED | IGNORED


def set_fields(spec: Any) -> list[str]:
    """The ConfigSpec fields a client set (an empty array counts as unset)."""
    return [p.name for p in type(spec)._GetPropertyList() if is_set(getattr(spec, p.name, None))]


def apply_settings(vm: VM, spec: Any) -> None:
    """Keep what `spec` sets of the stored and hardware fields (the caller marks the VM changed)."""
    for name in set_fields(spec):
        if name in STORED or name in HARDWARE:
            vm.settings[name] = merged(vm.settings.get(name), getattr(spec, name))
    if spec.guestId:
        vm.guest_id = spec.guestId
        vm.guest_full_name = _full_name(spec.guestId)
    if spec.uuid:
        vm.uuid = spec.uuid.lower()
    if spec.instanceUuid:
        vm.instance_uuid = spec.instanceUuid.lower()


def _full_name(guest_id: str) -> str:
    words = guest_id.removesuffix("Guest").replace("_", " ")
    bits = " (64-bit)" if "64" in words else ""
    return f"{words[:1].upper()}{words[1:].replace('64', '').strip()}{bits}"
