"""The specs the twin's VM methods accept, validated as vCenter validates them, before a task is
queued. Every refusal is one fault naming the offending property by its path in the call
(`spec.config.numCoresPerSocket`, `spec.location.deviceChange[0].device.backing.deviceName`):

* ConfigSpec (ReconfigVM_Task `spec`, CloneVM_Task `spec.config`): a changeVersion that is not
  the VM's — ConcurrentAccess; a name too long — InvalidName; memory not a positive multiple of
  4 MB or beyond the host — InvalidArgument / MemorySizeNotSupported; vCPUs the host cannot run —
  NotEnoughCpus; cores per socket that do not divide them, a firmware, swap placement or UUID
  that is not one — InvalidArgument; a guest OS id vSphere does not know — UnsupportedGuest; an
  extraConfig entry without a key — InvalidArgument; device changes as forkscale.sim.ops.devices
  says; any other field the twin does not model — NotSupported (never silently dropped).
* RelocateSpec (a clone's `location`): an unknown diskMoveType, a disk locator for a disk the VM
  lacks — InvalidArgument; placement or storage options the twin does not model (per-disk
  datastores, profiles, a remote service, encryption) — NotSupported; for an instant clone,
  anything but folder, datastore, pool, its own host and device edits — NotSupported.
* CloneSpec: guest customization and memory-state clones — NotSupported; a snapshot of another
  VM — InvalidArgument. InstantCloneSpec: a biosUuid that is not a UUID, a config entry without a
  key — InvalidArgument.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

from ..dispatch import Ctx
from ..inventory import Host
from ..vm import VM, Snapshot
from ..vmsettings import is_set
from .devices import check_device_changes
from .settings import SUPPORTED, set_fields

MAX_NAME = 80  # vCenter's limit on an entity name
MAX_VCPUS = 768
MAX_MEMORY_MB = 24 * 1024 * 1024


def _enum(wsdl: str) -> frozenset[str]:
    enum: Any = VmomiSupport.GetWsdlType("urn:vim25", wsdl)
    return frozenset(enum.values)


GUEST_IDS = _enum("VirtualMachineGuestOsIdentifier")
FIRMWARE = _enum("GuestOsDescriptorFirmwareType")
SWAP = _enum("VirtualMachineConfigInfoSwapPlacementType")
DISK_MOVES = _enum("VirtualMachineRelocateDiskMoveOptions")
INSTANT_LOCATION = frozenset({"folder", "datastore", "pool", "host", "deviceChange", "dynamicType", "dynamicProperty"})
CREATE_ONLY = frozenset({"files", "version"})  # what only a new VM's ConfigSpec sets
RELOCATE_MODELLED = frozenset({"folder", "datastore", "pool", "host", "diskMoveType", "deviceChange", "disk",
                               "dynamicType", "dynamicProperty"})


def invalid(prop: str, msg: str) -> vmodl.fault.InvalidArgument:
    return vmodl.fault.InvalidArgument(msg=f"{prop}: {msg}", invalidProperty=prop)


def not_supported(prop: str, what: str = "") -> vmodl.fault.NotSupported:
    return vmodl.fault.NotSupported(msg=f"{prop} is not supported by the forkscale twin{what}")


def check_name(name: str | None, prop: str) -> None:
    if not name:
        raise invalid(prop, "a name is required")
    if len(name) > MAX_NAME:
        raise vim.fault.InvalidName(msg=f"{prop}: the name is longer than {MAX_NAME} characters", name=name)


def _uuid_ok(value: str) -> bool:
    try:
        return len(value) == 36 and str(uuidlib.UUID(value)) == value.lower()
    except ValueError:
        return False


def check_options(options: list[Any], prop: str) -> None:
    """OptionValues (extraConfig, an instant clone's config): each needs a key and a plain value."""
    for i, opt in enumerate(options or []):
        if not opt.key:
            raise invalid(f"{prop}[{i}].key", "an option needs a key")
        if opt.value is not None and not isinstance(opt.value, (str, int, float, bool)):
            raise invalid(f"{prop}[{i}].value", f"a {type(opt.value).__name__} is not an option value")


def _check_cpu_memory(host: Host | None, spec: Any, prop: str, current_cpus: int = 1) -> None:
    """Memory and vCPUs as vSphere sizes them, and (with a host) as the host can run them."""
    mem = spec.memoryMB
    if mem is not None:
        if mem <= 0 or mem % 4:
            raise invalid(f"{prop}.memoryMB", f"{mem} MB is not a positive multiple of 4 MB")
        most = min(MAX_MEMORY_MB, host.memory_bytes // 1024**2) if host is not None else MAX_MEMORY_MB
        if mem > most:
            raise vim.fault.MemorySizeNotSupported(
                msg=f"{prop}.memoryMB: {mem} MB is more than {host.name if host else 'vSphere'} supports",
                memorySizeMB=int(mem), minMemorySizeMB=4, maxMemorySizeMB=most)
    cpus = spec.numCPUs
    if cpus is not None:
        if cpus <= 0:
            raise invalid(f"{prop}.numCPUs", f"{cpus} is not a number of virtual CPUs")
        threads = host.cpu_cores * 2 if host is not None else MAX_VCPUS
        if cpus > min(threads, MAX_VCPUS):
            raise vim.fault.NotEnoughCpus(msg=f"{prop}.numCPUs: {host.name if host else 'a host'} has {threads} "
                                              f"logical CPUs, fewer than {cpus}", numCpuDest=threads,
                                          numCpuVm=int(cpus))
    cores = spec.numCoresPerSocket
    if cores is not None and (cores <= 0 or (cpus or current_cpus) % cores):
        raise invalid(f"{prop}.numCoresPerSocket", f"{cores} cores per socket do not divide "
                                                    f"{cpus or current_cpus} virtual CPUs")


def _check_settings(spec: Any, prop: str) -> None:
    if spec.guestId is not None and spec.guestId not in GUEST_IDS:
        raise vim.fault.UnsupportedGuest(msg=f"{prop}.guestId: '{spec.guestId}' is not a guest OS vSphere knows",
                                         property=f"{prop}.guestId", unsupportedGuestOS=spec.guestId)
    if spec.firmware is not None and spec.firmware not in FIRMWARE:
        raise invalid(f"{prop}.firmware", f"'{spec.firmware}' is not one of {', '.join(sorted(FIRMWARE))}")
    if spec.swapPlacement is not None and spec.swapPlacement not in SWAP:
        raise invalid(f"{prop}.swapPlacement", f"'{spec.swapPlacement}' is not one of {', '.join(sorted(SWAP))}")
    for field in ("uuid", "instanceUuid"):
        value = getattr(spec, field)
        if value is not None and not _uuid_ok(value):
            raise invalid(f"{prop}.{field}", f"'{value}' is not a UUID")
    for field in ("cpuAllocation", "memoryAllocation"):
        alloc = getattr(spec, field)
        if alloc is None:
            continue
        if alloc.reservation is not None and alloc.reservation < 0:
            raise invalid(f"{prop}.{field}.reservation", "a reservation cannot be negative")
        if alloc.limit is not None and alloc.limit != -1 and alloc.limit < (alloc.reservation or 0):
            raise invalid(f"{prop}.{field}.limit", "a limit below the reservation (-1 is unlimited)")
        shares = alloc.shares
        if shares is not None and shares.level == "custom" and shares.shares <= 0:
            raise invalid(f"{prop}.{field}.shares.shares", "custom shares need a positive number of shares")


def check_config(vm: VM, spec: Any, prop: str, *, disks: bool = False) -> None:
    """A ConfigSpec the twin can apply to `vm` as vCenter would, or the fault vCenter answers.
    With `disks`, virtual disk changes are left to forkscale.sim.ops.vdisks (ReconfigVM_Task)."""
    unsupported = [f for f in set_fields(spec) if f not in SUPPORTED]
    if unsupported:
        raise not_supported(f"{prop}.{unsupported[0]}", " (it changes names, memory, CPUs, guest OS, settings, "
                                                          "extraConfig and network adapters)")
    if spec.changeVersion is not None and spec.changeVersion != str(vm.change):
        raise vim.fault.ConcurrentAccess(msg=f"{prop}.changeVersion '{spec.changeVersion}' is not the VM's "
                                             f"({vm.change}): its configuration changed since it was read")
    if spec.name is not None:
        check_name(spec.name, f"{prop}.name")
    _check_cpu_memory(vm.host, spec, prop, vm.num_cpu)
    _check_settings(spec, prop)
    check_options(spec.extraConfig, f"{prop}.extraConfig")
    check_device_changes(vm, spec.deviceChange, f"{prop}.deviceChange", instant=False, disks=disks)


def check_new_config(spec: Any, prop: str = "config") -> None:
    """CreateVM_Task's ConfigSpec: the same rules as a reconfiguration's, for a VM that has no host
    yet (its devices are added: forkscale.sim.ops.register and ops.vdisks check those)."""
    unsupported = [f for f in set_fields(spec) if f not in SUPPORTED | CREATE_ONLY]
    if unsupported:
        raise not_supported(f"{prop}.{unsupported[0]}", " for a new VM")
    check_name(spec.name, f"{prop}.name")
    _check_cpu_memory(None, spec, prop)
    _check_settings(spec, prop)
    check_options(spec.extraConfig, f"{prop}.extraConfig")


def check_relocate(src: VM, loc: Any, prop: str, *, instant: bool) -> None:
    """A clone's RelocateSpec: what it names exists and is something the twin places or moves."""
    allowed = INSTANT_LOCATION if instant else RELOCATE_MODELLED
    extra = [f for f in set_fields(loc) if f not in allowed]
    if extra:
        raise not_supported(f"{prop}.{extra[0]}", " for an instant clone" if instant else "")
    if loc.diskMoveType is not None and loc.diskMoveType not in DISK_MOVES:
        raise invalid(f"{prop}.diskMoveType", f"'{loc.diskMoveType}' is not one of {', '.join(sorted(DISK_MOVES))}")
    keys = {d.key for d in src.disks}
    for i, locator in enumerate(loc.disk or []):
        if locator.diskId not in keys:
            raise invalid(f"{prop}.disk[{i}].diskId", f"{src.name} has no disk with key {locator.diskId}")
        if is_set(locator.diskBackingInfo) or is_set(locator.profile) or (
                locator.datastore is not None and loc.datastore is not None and locator.datastore != loc.datastore):
            raise not_supported(f"{prop}.disk[{i}]", " (a disk goes where the VM goes)")
    check_device_changes(src, loc.deviceChange, f"{prop}.deviceChange", instant=instant)


def check_clone_spec(ctx: Ctx, src: VM, name: str, spec: Any) -> None:
    """CloneVM_Task's name and spec, as vCenter checks them before it queues the task."""
    check_name(name, "name")
    if spec.customization is not None:
        raise not_supported("spec.customization", " (no guest customization: set guestinfo in spec.config)")
    if spec.memory:
        raise not_supported("spec.memory", " (a clone does not keep the source's memory state)")
    if spec.snapshot is not None:
        snap = ctx.twin.world.objects.get(spec.snapshot._moId)
        if not isinstance(snap, Snapshot) or snap.vm is not src:
            raise invalid("spec.snapshot", f"not a snapshot of {src.name}")
    check_relocate(src, spec.location, "spec.location", instant=False)
    if spec.config is not None:
        check_config(src, spec.config, "spec.config")


def check_instant_spec(src: VM, spec: Any) -> None:
    """InstantClone_Task's spec, as vCenter checks it before it queues the task."""
    check_name(spec.name, "spec.name")
    if spec.biosUuid is not None and not _uuid_ok(spec.biosUuid):
        raise invalid("spec.biosUuid", f"'{spec.biosUuid}' is not a UUID")
    check_options(spec.config, "spec.config")
    check_relocate(src, spec.location, "spec.location", instant=True)
