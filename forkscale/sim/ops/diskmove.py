"""Moving and consolidating a VM's disks: what Storage vMotion and PromoteDisks_Task do to the files.

A VM's files for one disk are the chain under its current top plus the chains its snapshots pin.
A file is *shared* when something outside the VM references it (a linked or instant clone's
delta, another VM's snapshot) — and then so is everything under it; the rest is the VM's *own*.

* Without snapshots on the disk, a move to another datastore (the default
  `moveAllDiskBackingsAndDisallowSharing`, or `...Consolidate`) writes one flat file on the target
  with all the chain holds: chain depth 1, the full size consumed there, and the VM no longer
  counts against its old parent. With snapshots, the VM's own files move as they are and the
  shared part under them is copied (merged) to the target, so the snapshot tree survives.
* `moveAllDiskBackingsAndAllowSharing` keeps the sharing when the target already holds the
  parent; `moveChildMostDiskBacking` moves the child-most file only; `createNewChildDiskBacking`
  adds a new child delta on the target.
* Promoting with `unlink` does the consolidation in place (same datastore); without `unlink` it
  merges the VM's own unshared, unpinned deltas into their children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pyVmomi import vim

from ..disks import DiskFile, MiB
from ..inventory import Datastore
from ..vm import VM, Disk
from .snapshots import walk

ALLOW_SHARING = "moveAllDiskBackingsAndAllowSharing"
CHILD_MOST = "moveChildMostDiskBacking"
NEW_CHILD = "createNewChildDiskBacking"
MOVE_TYPES = {"moveAllDiskBackingsAndDisallowSharing", "moveAllDiskBackingsAndConsolidate", ALLOW_SHARING,
              CHILD_MOST, NEW_CHILD}


def pins(vm: VM, key: int) -> list[DiskFile]:
    """The files of disk `key` that the VM's snapshots hold."""
    return [n.disks[key] for n in walk(vm.snapshots) if key in n.disks]


def files_of(vm: VM, d: Disk) -> set[DiskFile]:
    out: set[DiskFile] = set(d.top.chain())
    for p in pins(vm, d.key):
        out.update(p.chain())
    return out


def shared_files(vm: VM, d: Disk) -> set[DiskFile]:
    """The files of disk `d` that something outside the VM also references, and all under them."""
    files = files_of(vm, d)
    inside: dict[int, int] = {}
    for f in files:
        if f.parent is not None:
            inside[f.parent.uid] = inside.get(f.parent.uid, 0) + 1
    for p in pins(vm, d.key):
        inside[p.uid] = inside.get(p.uid, 0) + 1
    inside[d.top.uid] = inside.get(d.top.uid, 0) + 1
    shared: set[DiskFile] = set()
    for f in files:
        if f.refs > inside.get(f.uid, 0):
            shared.update(f.chain())
    return shared


def disk_file_name(vm: VM, d: Disk, ds: Datastore, base: str | None = None) -> str:
    stem = base or (vm.stem if d.unit == 0 else f"{vm.stem}_{d.unit}")
    return f"[{ds.name}] {vm.stem}/{stem}.vmdk"


def _rename(f: DiskFile, vm: VM, ds: Datastore) -> None:
    base = f.name.rpartition("/")[2]
    f.name = f"[{ds.name}] {vm.stem}/{base}"
    f.datastore = ds


def bytes_to_move(vm: VM, d: Disk, target: Datastore, move_type: str | None, now: float) -> int:
    """What a move of disk `d` writes on `target` (0 when it stays where it is)."""
    if d.top.datastore is target:
        return 0
    if move_type == NEW_CHILD:
        return 16 * MiB
    if move_type == CHILD_MOST:
        return d.top.size(now)
    shared = shared_files(vm, d)
    own = files_of(vm, d) - shared
    keep_parent = move_type == ALLOW_SHARING and _parents_on(own, shared, target)
    if not pins(vm, d.key) and not keep_parent:
        return d.top.chain_size(now)
    copied = 0 if keep_parent else sum(f.size(now) for f in shared)
    return copied + sum(f.size(now) for f in own)


def _parents_on(own: Iterable[DiskFile], shared: set[DiskFile], target: Datastore) -> bool:
    boundary = [f.parent for f in own if f.parent is not None and f.parent in shared]
    return bool(boundary) and all(p.datastore is target for p in boundary)


def move_disk(vm: VM, d: Disk, target: Datastore, move_type: str | None) -> None:
    """Move disk `d` of `vm` to `target` as `move_type` says (see the module docstring)."""
    world = vm.world
    if d.top.datastore is target:
        return
    if move_type == NEW_CHILD:
        from .snapshots import push_delta

        push_delta(vm, d, on=target)
        return
    if move_type == CHILD_MOST:
        if d.top.refs == 1:
            _rename(d.top, vm, target)
        return
    shared = shared_files(vm, d)
    own = files_of(vm, d) - shared
    if move_type == ALLOW_SHARING and _parents_on(own, shared, target):
        for f in own:
            _rename(f, vm, target)
        return
    if not pins(vm, d.key):
        consolidate(vm, d, target)
        return
    copies: dict[int, DiskFile] = {}
    now = world.sim_seconds()

    def copy_of(f: DiskFile) -> DiskFile:
        if f.uid not in copies:
            base = f.name.rpartition("/")[2][:-5]
            copies[f.uid] = world.disks.copy_flat(f, disk_file_name(vm, d, target, base), target, now)
        return copies[f.uid]

    _replace_shared(vm, d, own, shared, copy_of)
    for f in own:
        _rename(f, vm, target)


def _replace_shared(vm: VM, d: Disk, own: set[DiskFile], shared: set[DiskFile],
                    copy_of: Callable[[DiskFile], DiskFile]) -> None:
    """Point the VM's own files and snapshots at private copies of the shared files they use."""
    store = vm.world.disks
    for f in own:
        if f.parent is not None and f.parent in shared:
            new = copy_of(f.parent)
            store.release(f.parent)
            new.refs += 1
            f.parent = new
    for node in walk(vm.snapshots):
        old = node.disks.get(d.key)
        if old is not None and old in shared:
            new = copy_of(old)
            store.retain(new)
            store.release(old)
            node.disks[d.key] = new


def consolidate(vm: VM, d: Disk, ds: Datastore) -> None:
    """Replace the disk's whole chain by one flat file on `ds` (the VM must hold no snapshot of it)."""
    world = vm.world
    now = world.sim_seconds()
    old = d.top
    name = disk_file_name(vm, d, ds)
    if world.disks.by_name(name) is not None:
        name = disk_file_name(vm, d, ds, f"{vm.stem}_{old.uid}")
    new = world.disks.copy_flat(old, name, ds, now)
    world.disks.retain(new)
    world.disks.release(old)
    d.top = new
    if vm.power_state == "poweredOn":
        new.thaw(now, rate=0.05 * MiB)


def promote(vm: VM, d: Disk, unlink: bool) -> None:
    """PromoteDisks_Task for one disk."""
    shared = shared_files(vm, d)
    if unlink:
        if not shared:
            return
        if not pins(vm, d.key):
            consolidate(vm, d, d.top.datastore)
            return
        world = vm.world
        now = world.sim_seconds()
        own = files_of(vm, d) - shared
        copies: dict[int, DiskFile] = {}

        def copy_of(f: DiskFile) -> DiskFile:
            if f.uid not in copies:
                base = f.name.rpartition("/")[2][:-5]
                ds = d.top.datastore
                copies[f.uid] = world.disks.copy_flat(f, disk_file_name(vm, d, ds, base), ds, now)
            return copies[f.uid]

        _replace_shared(vm, d, own, shared, copy_of)
        return
    _merge_own_deltas(vm, d, shared)


def _merge_own_deltas(vm: VM, d: Disk, shared: set[DiskFile]) -> None:
    """Merge each own, unpinned file under the top into its only child."""
    pinned = {p.uid for p in pins(vm, d.key)}
    world = vm.world
    now = world.sim_seconds()
    child = d.top
    while child.parent is not None:
        f = child.parent
        if f in shared or f.uid in pinned or f.refs != 1:
            child = f
            continue
        merged = {**f.content, **child.content}
        child.content = merged
        size = child.size(now) + f.size(now)
        if child.frozen_size is not None:
            child.frozen_size = size
        else:
            child.base_size = size
        child.parent = f.parent
        if f.parent is not None:
            f.parent.refs += 1
        f.refs = 0
        world.disks.delete(f)


def need_space(ds: Datastore, nbytes: int) -> None:
    if nbytes > ds.free():
        raise vim.fault.NoDiskSpace(msg=f"There is not enough space on datastore {ds.name} ({nbytes} bytes needed, "
                                        f"{ds.free()} free)", datastore=ds.name)
