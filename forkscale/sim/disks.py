"""Virtual disk files and delta chains.

A disk is the top file of a chain of `DiskFile`s linked by `parent`. Instant clones, linked
clones and snapshots all work by freezing the current top and adding a child delta; a full
clone copies to a fresh flat file. Files are reference counted (children + VMs/snapshots using
them as top) so destroying a clone frees exactly what only it used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

if TYPE_CHECKING:
    from .inventory import Datastore
    from .world import World

MiB = 1024**2
DELTA_INITIAL = 16 * MiB
MAX_CHAIN = 255

_file_ids = count(1)


@dataclass(eq=False)
class DiskFile:
    name: str  # "[ds-ssd] vm/vm-000001.vmdk"
    datastore: Datastore
    capacity: int
    parent: DiskFile | None = None
    base_size: int = DELTA_INITIAL
    grow_rate: float = 0.0  # bytes per simulated second while this file is a running VM's top
    grow_since: float | None = None
    frozen_size: int | None = None
    refs: int = 0
    uid: int = field(default_factory=lambda: next(_file_ids))
    born: float = 0.0  # simulated time the file was created (datastore statistics count it from then)
    content: dict[str, bytes] = field(default_factory=dict)  # guest files written in this layer

    def read(self, path: str) -> bytes | None:
        """A guest file as seen through the chain: the child-most layer that wrote it wins."""
        node: DiskFile | None = self
        while node is not None:
            if path in node.content:
                return node.content[path]
            node = node.parent
        return None

    def merged_content(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for f in self.chain():
            out.update(f.content)
        return out

    def chain_size(self, now: float) -> int:
        return sum(f.size(now) for f in self.chain())

    @property
    def is_delta(self) -> bool:
        return self.parent is not None

    def size(self, now: float) -> int:
        if self.frozen_size is not None:
            return self.frozen_size
        grown = 0.0
        if self.grow_since is not None and self.grow_rate > 0:
            grown = self.grow_rate * max(0.0, now - self.grow_since)
        limit = self.capacity if self.is_delta else self.base_size
        return int(min(limit, self.base_size + grown))

    def freeze(self, now: float) -> None:
        """This file stops receiving writes (it became a parent or its VM stopped)."""
        if self.frozen_size is None:
            self.frozen_size = self.size(now)

    def thaw(self, now: float, rate: float) -> None:
        base = self.size(now)
        self.frozen_size = None
        self.base_size = base
        self.grow_since = now
        self.grow_rate = rate

    def chain(self) -> list[DiskFile]:
        """Base first, this file last (as layoutEx lists it)."""
        out: list[DiskFile] = []
        node: DiskFile | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        out.reverse()
        return out

    def depth(self) -> int:
        return len(self.chain())

    def extent_name(self) -> str:
        stem = self.name[:-5] if self.name.endswith(".vmdk") else self.name
        return f"{stem}-delta.vmdk" if self.is_delta else f"{stem}-flat.vmdk"


class DiskStore:
    """All disk files of the world, for datastore accounting and reference counting."""

    def __init__(self, clock: Callable[[], float] = lambda: 0.0) -> None:
        self.files: dict[int, DiskFile] = {}
        self.clock = clock  # simulated seconds now

    def create(self, name: str, datastore: Datastore, capacity: int, *, parent: DiskFile | None = None,
               size: int = DELTA_INITIAL) -> DiskFile:
        f = DiskFile(name=name, datastore=datastore, capacity=capacity, parent=parent, base_size=size,
                     born=self.clock())
        if parent is not None:
            parent.refs += 1
        self.files[f.uid] = f
        return f

    def retain(self, f: DiskFile) -> None:
        f.refs += 1

    def copy_flat(self, top: DiskFile, name: str, datastore: Datastore, now: float) -> DiskFile:
        """A new flat file holding what the chain under `top` holds (a full copy, or a consolidation)."""
        f = self.create(name, datastore, top.capacity, size=top.chain_size(now))
        f.content = top.merged_content()
        return f

    def detach(self, f: DiskFile) -> None:
        """A VM lets go of a disk it keeps on the datastore: one reference less, the file stays."""
        f.refs -= 1

    def delete(self, f: DiskFile) -> None:
        """Delete a file nobody references (a detached disk): its parents lose a reference."""
        self.files.pop(f.uid, None)
        self.release(f.parent)

    def by_name(self, name: str) -> DiskFile | None:
        """The disk whose descriptor is `[ds] path.vmdk`, if it exists."""
        return next((f for f in self.files.values() if f.name == name), None)

    def release(self, f: DiskFile | None) -> None:
        """Drop one reference; delete files (walking up the chain) nobody uses any more."""
        while f is not None:
            f.refs -= 1
            if f.refs > 0:
                return
            self.files.pop(f.uid, None)
            f = f.parent

    def shared(self, f: DiskFile) -> bool:
        return f.refs > 1


def datastore_used(world: World, ds: Datastore) -> int:
    """Disks, memory images of suspended VMs and uploaded files on `ds`."""
    now = world.sim_seconds()
    store: DiskStore = world.disks
    disks = sum(f.size(now) for f in store.files.values() if f.datastore is ds)
    images = sum(vm.memory_mb * MiB for vm in ds_vms(world, ds) if vm.power_state == "suspended")
    return disks + images + world.files.used(ds.moid)


def ds_vms(world: World, ds: Datastore) -> list[Any]:
    """The VMs whose home is `ds`, registered or not."""
    from .vm import VM

    vms = [v for v in world.instances(VM) if v.home is ds]
    return vms + [v for v in world.files.unregistered.values() if v.home is ds]


def backing_for(f: DiskFile, *, with_parent: bool = True, mode: str = "persistent") -> Any:
    """Device backing as vSphere shows it: FlatVer2 with `parent` linking the chain."""
    b = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=f.name, diskMode=mode, thinProvisioned=True, datastore=f.datastore.ref,
        uuid=f"6000C29{f.uid:025x}"[:32], contentId=f"{f.uid:032x}",
        deltaDiskFormat="redoLogFormat" if f.is_delta else None)
    if with_parent and f.parent is not None:
        b.parent = backing_for(f.parent)
    return b


def layout_files(disks: list[tuple[int, DiskFile]], extra: list[tuple[str, str, int]], now: float,
                 store: DiskStore) -> Any:
    """`layoutEx` for a VM: its home files plus, per disk, the chain of descriptor+extent files."""
    files: list[Any] = []
    keys = count(0)
    for name, ftype, size in extra:
        files.append(vim.vm.FileLayoutEx.FileInfo(key=next(keys), name=name, type=ftype, size=size,
                                                  uniqueSize=size, accessible=True))
    disk_layouts = []
    for dev_key, top in disks:
        units = []
        for f in top.chain():
            dk, ek = next(keys), next(keys)
            size = f.size(now)
            unique = 0 if store.shared(f) and f is not top else size
            files.append(vim.vm.FileLayoutEx.FileInfo(key=dk, name=f.name, type="diskDescriptor", size=512,
                                                      uniqueSize=512 if unique else 0, accessible=True))
            files.append(vim.vm.FileLayoutEx.FileInfo(key=ek, name=f.extent_name(), type="diskExtent",
                                                      size=size, uniqueSize=unique, accessible=True))
            units.append(vim.vm.FileLayoutEx.DiskUnit(fileKey=[dk, ek]))
        disk_layouts.append(vim.vm.FileLayoutEx.DiskLayout(key=dev_key, chain=units))
    return files, disk_layouts
