"""Virtual disks added, removed and edited through a ConfigSpec (ReconfigVM_Task, CreateVM_Task).

* `add` with `fileOperation=create` makes a new thin flat file: at `backing.fileName` when it
  names one (`FileAlreadyExists` if it exists), else `[ds] <vm dir>/<vm>[_N].vmdk` on the
  datastore the backing (or the VM's home) says.
* `add` without a file operation attaches an existing disk file (`FileNotFound` if there is
  none; `FileLocked` while another VM has it attached).
* `remove` detaches: the file stays on the datastore, with what was written in it, for another
  VM to attach (a user's persistent disk survives its VM this way). With
  `fileOperation=destroy` the file is deleted.
* `edit` grows a disk (`InvalidDeviceSpec` for a shrink) or changes its mode.

`diskMode` `independent_persistent` (or `independent_nonpersistent`) keeps a disk out of
snapshots, linked and instant clones.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..disks import DiskFile, MiB
from ..files import split_ds_path
from ..inventory import Datastore
from ..vm import VM, Disk
from ..world import World

CONTROLLER_KEY = 1000
RESERVED_UNIT = 7  # the SCSI controller's own unit
MODES = {"persistent", "independent_persistent", "independent_nonpersistent", "nonpersistent", "undoable",
         "append"}


def _bad(path: str, msg: str, index: int) -> vim.fault.InvalidDeviceSpec:
    return vim.fault.InvalidDeviceSpec(msg=f"{path}: {msg}", property=path, deviceIndex=index)


def check_disk_changes(vm: VM, changes: list[tuple[int, Any]], controllers: set[int]) -> None:
    """Shape checks vCenter makes before it starts the task (`(index in deviceChange, spec)` pairs)."""
    units = {d.unit for d in vm.disks}
    for i, ch in changes:
        dev, path = ch.device, f"spec.deviceChange[{i}].device"
        if ch.operation == "add":
            key = dev.controllerKey if dev.controllerKey is not None else CONTROLLER_KEY
            if key not in controllers:
                raise _bad(f"{path}.controllerKey", f"no SCSI controller with key {key}", i)
            unit = dev.unitNumber
            if unit is not None and (unit == RESERVED_UNIT or unit in units or not 0 <= unit < 16):
                raise _bad(f"{path}.unitNumber", f"unit {unit} is not free on the controller", i)
            units.add(unit if unit is not None else -1 - i)
            backing = dev.backing
            if not isinstance(backing, vim.vm.device.VirtualDevice.FileBackingInfo):
                raise _bad(f"{path}.backing", "a disk needs a file backing", i)
            if getattr(backing, "diskMode", None) not in MODES:
                raise _bad(f"{path}.backing.diskMode", f"invalid disk mode {getattr(backing, 'diskMode', None)!r}", i)
            if ch.fileOperation == "create" and _capacity(dev) <= 0:
                raise _bad(f"{path}.capacityInKB", "a new disk needs a capacity", i)
            if ch.fileOperation not in (None, "create"):
                raise _bad(f"spec.deviceChange[{i}].fileOperation", f"{ch.fileOperation} is not valid to add", i)
            if ch.fileOperation is None and not backing.fileName:
                raise _bad(f"{path}.backing.fileName", "the disk to attach needs a file name", i)
        elif ch.operation in ("remove", "edit"):
            disk = next((d for d in vm.disks if d.key == dev.key), None)
            if disk is None:
                raise _bad(f"{path}.key", f"no virtual disk with key {dev.key}", i)
            if ch.operation == "remove" and ch.fileOperation not in (None, "destroy"):
                raise _bad(f"spec.deviceChange[{i}].fileOperation", f"{ch.fileOperation} is not valid to remove", i)
            size = _capacity(dev, disk.capacity_kb * 1024) if ch.operation == "edit" else 0
            if size and size < disk.capacity_kb * 1024:
                raise _bad(f"{path}.capacityInKB", "a disk cannot shrink", i)
        else:
            raise _bad(f"spec.deviceChange[{i}].operation", f"invalid operation {ch.operation!r}", i)


def _capacity(dev: Any, current: int = 0) -> int:
    """The size asked for, in bytes (0: unchanged). A client that edits one of capacityInKB and
    capacityInBytes of a device it read leaves the other at the current size: the changed one is meant."""
    kb = int(dev.capacityInKB or 0) * 1024
    nbytes = int(dev.capacityInBytes or 0)
    if kb and kb != current:
        return kb
    if nbytes and nbytes != current:
        return nbytes
    return 0 if current else max(kb, nbytes)


def apply_disk_changes(vm: VM, changes: list[tuple[int, Any]]) -> None:
    """Apply checked disk changes (at task time: files found, created, deleted)."""
    world = vm.world
    for i, ch in changes:
        dev = ch.device
        if ch.operation == "add":
            f = _create(vm, dev, i) if ch.fileOperation == "create" else _attach(vm, dev, i)
            unit = dev.unitNumber if dev.unitNumber is not None else _free_unit(vm)
            world.disks.retain(f)
            if vm.power_state == "poweredOn":
                f.thaw(world.sim_seconds(), rate=0.05 * MiB)
            vm.disks.append(Disk(key=2000 + unit, capacity_kb=f.capacity // 1024, top=f, unit=unit,
                                 label=f"Hard disk {len(vm.disks) + 1}", mode=dev.backing.diskMode))
        elif ch.operation == "remove":
            disk = next(d for d in vm.disks if d.key == dev.key)
            vm.disks.remove(disk)
            if ch.fileOperation == "destroy":
                world.disks.release(disk.top)
            else:
                disk.top.freeze(world.sim_seconds())
                world.disks.detach(disk.top)
        else:
            disk = next(d for d in vm.disks if d.key == dev.key)
            size = _capacity(dev, disk.capacity_kb * 1024)
            if size:
                disk.capacity_kb = size // 1024
                disk.top.capacity = size
            mode = getattr(dev.backing, "diskMode", None)
            if mode in MODES:
                disk.mode = mode


def _free_unit(vm: VM) -> int:
    used = {d.unit for d in vm.disks} | {RESERVED_UNIT}
    return next(u for u in range(16) if u not in used)


def _target(vm: VM, backing: Any) -> tuple[Datastore, str | None]:
    """The datastore and path a new disk goes to (the path None: name it after the VM)."""
    world = vm.world
    name = (backing.fileName or "").strip()
    ds: Datastore | None = None
    rel: str | None = None
    if name:
        ds_name, path = split_ds_path(name)
        ds = next((d for d in world.instances(Datastore) if d.name == ds_name), None)
        if ds is None:
            raise vim.fault.InvalidDatastore(msg=f"Datastore '{ds_name}' not found", name=ds_name)
        rel = path or None
    if ds is None and backing.datastore is not None:
        mo = world.objects.get(backing.datastore._moId)
        ds = mo if isinstance(mo, Datastore) else None
    return ds or vm.home, rel


def _create(vm: VM, dev: Any, index: int) -> DiskFile:
    world = vm.world
    ds, rel = _target(vm, dev.backing)
    if rel is None:
        n = len(vm.disks)
        base = vm.stem if n == 0 else f"{vm.stem}_{n}"
        while world.disks.by_name(f"[{ds.name}] {vm.stem}/{base}.vmdk") is not None:
            n += 1
            base = f"{vm.stem}_{n}"
        rel = f"{vm.stem}/{base}.vmdk"
    if not rel.endswith(".vmdk"):
        raise _bad(f"spec.deviceChange[{index}].device.backing.fileName", "a disk file name ends in .vmdk", index)
    name = f"[{ds.name}] {rel}"
    if world.disks.by_name(name) is not None:
        raise vim.fault.FileAlreadyExists(msg=f"Cannot complete the operation because the file or folder {name} "
                                              "already exists", file=name)
    capacity = _capacity(dev)
    if ds.free() < MiB:
        raise vim.fault.NoDiskSpace(msg=f"There is not enough space on datastore {ds.name}", datastore=ds.name)
    return world.disks.create(name, ds, capacity, size=MiB)


def _attach(vm: VM, dev: Any, index: int) -> DiskFile:
    world: World = vm.world
    name = dev.backing.fileName.strip()
    split_ds_path(name)
    f = world.disks.by_name(name)
    if f is None:
        raise vim.fault.FileNotFound(msg=f"File {name} was not found", file=name)
    user = next((v for v in _vms(world) if any(d.top is f for d in v.disks)), None)
    if user is not None:
        raise vim.fault.FileLocked(msg=f"Unable to access file {name} since it is locked (attached to {user.name})",
                                   file=name)
    return f


def _vms(world: World) -> list[VM]:
    return world.instances(VM) + list(world.files.unregistered.values())


def faults_for_vm(vm: VM) -> None:
    if vm.frozen:
        raise vim.fault.InvalidState(msg=f"{vm.name} is a frozen instant-clone source: its devices cannot change")


def split_changes(spec: Any, method: str) -> tuple[list[Any], list[tuple[int, Any]], list[tuple[int, Any]]]:
    """(NIC changes, disk changes, SCSI controller adds) of a ConfigSpec; anything else is NotSupported."""
    nics: list[Any] = []
    disks: list[tuple[int, Any]] = []
    controllers: list[tuple[int, Any]] = []
    for i, ch in enumerate(spec.deviceChange or []):
        dev = ch.device
        if isinstance(dev, vim.vm.device.VirtualEthernetCard):
            nics.append(ch)
        elif isinstance(dev, vim.vm.device.VirtualDisk):
            disks.append((i, ch))
        elif isinstance(dev, vim.vm.device.VirtualSCSIController) and ch.operation == "add":
            controllers.append((i, ch))
        else:
            kind = type(dev).__name__.rsplit(".", 1)[-1]
            raise vmodl.fault.NotSupported(msg=f"{method}: spec.deviceChange[{i}]: the twin adds, removes and edits "
                                               f"network adapters and virtual disks only, not a {kind}")
    return nics, disks, controllers
