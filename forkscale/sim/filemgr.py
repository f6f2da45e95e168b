"""FileManager and VirtualDiskManager methods over the datastore namespace (forkscale.sim.namespace):
MakeDirectory, DeleteDatastoreFile_Task, DeleteVirtualDisk_Task — and the same deletion for
`DELETE /folder/...`.

A file in use cannot go (`FileLocked`): a disk a VM has attached or a snapshot holds, the files
of a registered VM. Deleting an unregistered VM's `.vmx` or directory deletes that VM's files
(disks and snapshots with them); deleting a detached disk frees its space.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from pyVmomi import vim

from .dispatch import Ctx, method
from .files import split_ds_path
from .inventory import Datastore
from .mo import MO
from .namespace import directories, entries
from .ops.common import elapse, submit
from .ops.snapshots import walk

if TYPE_CHECKING:
    from .tasks import Task
    from .vm import VM
    from .world import World


def locate(world: World, name: str) -> tuple[Datastore, str]:
    """A datastore path (`[ds] dir/file`) or a `/folder` URL -> (datastore, relative path)."""
    if name.startswith(("http://", "https://")):
        url = urlsplit(name)
        query = parse_qs(url.query)
        ds_name = (query.get("dsName") or [""])[0]
        rel = unquote(url.path.removeprefix("/folder").strip("/"))
    else:
        ds_name, rel = split_ds_path(name)
    ds = next((d for d in world.instances(Datastore) if d.name == ds_name), None)
    if ds is None:
        raise vim.fault.InvalidDatastore(msg=f"Datastore '{ds_name}' not found", name=ds_name)
    return ds, rel


def _locked(path: str, why: str) -> vim.fault.FileLocked:
    return vim.fault.FileLocked(msg=f"Unable to delete {path}: {why}", file=path)


def delete_path(world: World, ds: Datastore, rel: str) -> None:
    """Delete a file or a directory (with all under it) on `ds`, as DeleteDatastoreFile_Task does."""
    path = f"[{ds.name}] {rel}"
    if not rel:
        raise vim.fault.InvalidDatastorePath(msg=f"Cannot delete the root of datastore {ds.name}", datastorePath=path)
    files = entries(world, ds)
    dirs = directories(world, ds, files)
    prefix = rel.rstrip("/") + "/"
    if rel in dirs:
        doomed = [e for p, e in files.items() if p.startswith(prefix)]
    elif rel in files:
        doomed = [files[rel]]
    else:
        raise vim.fault.FileNotFound(msg=f"File {path} was not found", file=path)
    vms: dict[int, VM] = {}
    disks = {}
    for e in doomed:
        if e.vm is not None:
            if e.vm.vmx_path() not in world.files.unregistered:
                raise _locked(path, f"it belongs to the registered virtual machine {e.vm.name}")
            if e.kind == "config" or rel in dirs:
                vms[id(e.vm)] = e.vm
        if e.disk is not None:
            disks[e.disk.uid] = e.disk
    for vm in vms.values():
        _discard(world, vm)
    for f in disks.values():
        if f.uid not in world.disks.files:
            continue  # went with its VM
        if f.refs > 0:
            raise _locked(f"[{ds.name}] {rel}", f"{f.name} is in use (attached, in a snapshot, or a parent disk)")
        world.disks.delete(f)
    world.files.delete(ds.moid, rel)
    world.touch(ds)


def _discard(world: World, vm: VM) -> None:
    """An unregistered VM's files are deleted: its disks and snapshot points go with it."""
    world.files.unregistered.pop(vm.vmx_path(), None)
    for d in vm.disks:
        world.disks.release(d.top)
    for node in walk(vm.snapshots):
        for f in node.disks.values():
            world.disks.release(f)
    vm.disks.clear()
    vm.snapshots.clear()


@method("DeleteDatastoreFile_Task")
def delete_datastore_file(ctx: Ctx, this: MO, name: str, datacenter: Any = None) -> Any:
    world = ctx.twin.world
    ds, rel = locate(world, name)

    async def body(task: Task) -> None:
        await elapse(world, "destroy")
        delete_path(world, ds, rel)

    return submit(ctx, ds, body, op="FileManager.deleteFile")


@method("DeleteVirtualDisk_Task")
def delete_virtual_disk(ctx: Ctx, this: MO, name: str, datacenter: Any = None) -> Any:
    world = ctx.twin.world
    ds, rel = locate(world, name)

    async def body(task: Task) -> None:
        await elapse(world, "destroy")
        f = world.disks.by_name(f"[{ds.name}] {rel}")
        if f is None:
            raise vim.fault.FileNotFound(msg=f"File [{ds.name}] {rel} was not found", file=f"[{ds.name}] {rel}")
        if f.refs > 0:
            raise _locked(f.name, "the disk is in use (attached, in a snapshot, or a parent disk)")
        world.disks.delete(f)
        world.touch(ds)

    return submit(ctx, ds, body, op="VirtualDiskManager.deleteVirtualDisk")


@method("MakeDirectory")
def make_directory(ctx: Ctx, this: MO, name: str, datacenter: Any = None,
                   createParentDirectories: bool | None = None) -> None:  # noqa: N803
    world = ctx.twin.world
    ds, rel = locate(world, name)
    files = entries(world, ds)
    dirs = directories(world, ds, files)
    if rel in dirs or rel in files:
        raise vim.fault.FileAlreadyExists(msg=f"Cannot complete the operation because the file or folder {name} "
                                              "already exists", file=name)
    parent = posixpath.dirname(rel)
    if parent not in dirs and not createParentDirectories:
        raise vim.fault.CannotCreateFile(msg=f"Cannot create {name}: its parent directory does not exist", file=name)
    made = world.files.directories.setdefault(ds.moid, set())
    while rel and rel not in dirs:
        made.add(rel)
        rel = posixpath.dirname(rel)
