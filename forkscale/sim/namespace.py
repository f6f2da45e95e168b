"""A datastore's files, as its browser, `/folder` over HTTP and the file manager all see them.

The listing is computed from the world on each call, so it cannot drift from the API: every disk
file on the datastore (its descriptor `x.vmdk`, text rendered from the disk, and its extent
`x-flat.vmdk` / `x-delta.vmdk`, as large as the disk model says), the home files of every VM that
lives there, registered or not (`.vmx`, `.nvram`, `.vmsd`, `vmware.log`, `.vmss` when suspended),
the files clients uploaded, and the directories all of these imply or clients made.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .disks import DiskFile, ds_vms
from .vmx import descriptor_text, log_text, vmsd_text, vmx_text

if TYPE_CHECKING:
    from .inventory import Datastore
    from .vm import VM
    from .world import World


@dataclass
class Entry:
    path: str  # relative to the datastore's root
    kind: str  # layoutEx file type: config, nvram, snapshotList, log, suspend, diskDescriptor, diskExtent; or file
    size: int
    modified: float
    read: Callable[[], bytes] | None  # None: `size` bytes of zeros (extents, memory images)
    disk: DiskFile | None = None
    vm: VM | None = None


def relative(ds_path: str) -> str:
    return ds_path.split("] ", 1)[1] if "] " in ds_path else ""


def entries(world: World, ds: Datastore) -> dict[str, Entry]:
    """Every file on `ds`, by path relative to its root."""
    now = world.sim_seconds()
    out: dict[str, Entry] = {}
    born = world.started_wall
    for f in list(world.disks.files.values()):
        if f.datastore is not ds:
            continue
        rel = relative(f.name)
        out[rel] = Entry(rel, "diskDescriptor", len(descriptor_text(f).encode()), born, _descriptor(f), disk=f)
        ext = relative(f.extent_name())
        out[ext] = Entry(ext, "diskExtent", f.size(now), born, None, disk=f)
    for vm in ds_vms(world, ds):
        for path, kind, size in vm.home_files():
            rel = relative(path)
            out[rel] = Entry(rel, kind, size, vm.modified, _reader(vm, kind), vm=vm)
    for rel, up in world.files.uploads.get(ds.moid, {}).items():
        out[rel] = Entry(rel, "file", len(up.data), up.modified, _constant(up.data))
    return out


def _descriptor(f: DiskFile) -> Callable[[], bytes]:
    return lambda: descriptor_text(f).encode()


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _reader(vm: VM, kind: str) -> Callable[[], bytes] | None:
    render = {"config": vmx_text, "snapshotList": vmsd_text, "log": log_text}.get(kind)
    return None if render is None else (lambda: render(vm).encode())


def directories(world: World, ds: Datastore, files: dict[str, Entry]) -> set[str]:
    """Every directory on `ds` (relative paths, the root as "")."""
    dirs = {""} | set(world.files.directories.get(ds.moid, set()))
    for path in list(files) + list(dirs):
        parent = posixpath.dirname(path)
        while parent:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    return dirs


def children(files: dict[str, Entry], dirs: set[str], folder: str) -> tuple[list[str], list[Entry]]:
    """The sub-directory names and the files directly in `folder`."""
    subdirs = sorted(posixpath.basename(d) for d in dirs if d and posixpath.dirname(d) == folder)
    here = sorted((e for p, e in files.items() if posixpath.dirname(p) == folder), key=lambda e: e.path)
    return subdirs, here
