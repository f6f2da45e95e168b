"""HostDatastoreBrowser: SearchDatastore_Task and SearchDatastoreSubFolders_Task over the files
forkscale.sim.namespace lists.

As on ESXi, a disk shows as its descriptor (`x.vmdk`, a `VmDiskFileInfo` whose size counts its
extent), never as the extent file itself; queries choose kinds of file (`VmConfigFileQuery` for
`.vmx`, `VmDiskFileQuery`, `VmLogFileQuery`, `VmNvramFileQuery`, `FolderFileQuery`, ...; no query
means every file); `matchPattern` globs names; `details` says which fields to fill. A folder that
does not exist is `FileNotFound`, a malformed path `InvalidDatastorePath`, a datastore the browser
does not browse `InvalidDatastore`.
"""

from __future__ import annotations

import fnmatch
import posixpath
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from .dispatch import Ctx, method
from .files import split_ds_path
from .mo import MO
from .namespace import Entry, children, directories, entries
from .ops.common import elapse, submit

if TYPE_CHECKING:
    from .inventory import Datastore
    from .tasks import Task
    from .world import World

B = vim.host.DatastoreBrowser
RESULTS = vim.host.DatastoreBrowser.SearchResults
RESULTS_ARRAY = VmomiSupport.GetVmodlType("vim.host.DatastoreBrowser.SearchResults[]")
_BY_EXT = {".vmx": B.VmConfigInfo, ".vmtx": B.TemplateVmConfigInfo, ".vmdk": B.VmDiskInfo, ".log": B.VmLogInfo,
           ".nvram": B.VmNvramInfo, ".vmsn": B.VmSnapshotInfo, ".iso": B.IsoImageInfo, ".flp": B.FloppyImageInfo,
           ".img": B.FloppyImageInfo}
_QUERY_INFO = {B.VmConfigQuery: B.VmConfigInfo, B.TemplateVmConfigQuery: B.TemplateVmConfigInfo,
               B.VmDiskQuery: B.VmDiskInfo, B.VmLogQuery: B.VmLogInfo, B.VmNvramQuery: B.VmNvramInfo,
               B.VmSnapshotQuery: B.VmSnapshotInfo, B.IsoImageQuery: B.IsoImageInfo,
               B.FloppyImageQuery: B.FloppyImageInfo}


class DatastoreBrowser(MO):
    """A HostDatastoreBrowser over some datastores (one per datastore: `Datastore.browser`)."""

    kind = vim.host.DatastoreBrowser

    def __init__(self, world: World, moid: str, datastores: list[Datastore]) -> None:
        super().__init__(world, moid)
        self.datastores = datastores

    def p_datastore(self) -> list[Any]:
        return [d.ref for d in self.datastores]

    def p_supportedType(self) -> list[Any]:  # noqa: N802 - vSphere property name
        from .storage import SUPPORTED_QUERIES

        return SUPPORTED_QUERIES


def _info_type(e: Entry | None, spec: Any) -> Any:
    """The FileInfo class this entry (None: a folder) is reported as, or None if no query wants it."""
    queries = list(spec.query or []) if spec is not None else []
    ext = posixpath.splitext(e.path)[1].lower() if e is not None else ""
    if not queries:
        if e is None:
            return B.FolderInfo
        typed = spec is not None and spec.details is not None and spec.details.fileType
        return _BY_EXT.get(ext, B.FileInfo) if typed else B.FileInfo
    for q in queries:
        if type(q) is B.FolderQuery and e is None:
            return B.FolderInfo
        if e is None:
            continue
        info = _QUERY_INFO.get(type(q))
        if info is not None and _BY_EXT.get(ext) is info:
            return info
        if type(q) is B.Query:
            return B.FileInfo
    return None


def _matches(name: str, spec: Any) -> bool:
    patterns = list(spec.matchPattern or []) if spec is not None else []
    if not patterns:
        return True
    if spec.searchCaseInsensitive:
        return any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _info(e: Entry | None, name: str, typ: Any, spec: Any, files: dict[str, Entry]) -> Any:
    info = typ(path=name)
    details = spec.details if spec is not None else None
    if e is not None and details is not None:
        size = e.size
        if e.disk is not None:
            size += files[_extent(e)].size if _extent(e) in files else 0
        if details.fileSize:
            info.fileSize = size
        if details.modification:
            info.modification = datetime.fromtimestamp(e.modified, tz=UTC)
        if details.fileOwner:
            info.owner = "root"
    if typ is B.VmDiskInfo and e is not None and e.disk is not None:
        _disk_details(info, e, spec)
    if typ is B.VmConfigInfo and _query(spec, B.VmConfigQuery) is not None:
        info.configVersion = 8
    return info


def _extent(e: Entry) -> str:
    assert e.disk is not None
    return e.disk.extent_name().split("] ", 1)[1]


def _query(spec: Any, kind: type) -> Any:
    return next((q for q in (spec.query or []) if isinstance(q, kind)), None) if spec is not None else None


def _disk_details(info: Any, e: Entry, spec: Any) -> None:
    q = _query(spec, B.VmDiskQuery)
    flags = q.details if q is not None else None
    if flags is None or e.disk is None:
        return
    f = e.disk
    if flags.diskType:
        info.diskType = vim.vm.device.VirtualDisk.FlatVer2BackingInfo
    if flags.capacityKb:
        info.capacityKb = f.capacity // 1024
    if flags.hardwareVersion:
        info.hardwareVersion = 21
    if flags.controllerType:
        info.controllerType = vim.vm.device.ParaVirtualSCSIController
    if flags.diskExtents:
        info.diskExtents = [f.extent_name()]
    if flags.thin:
        info.thin = True


def _visible(e: Entry) -> bool:
    return e.kind != "diskExtent"  # ESXi shows a disk by its descriptor only


def search(ds: Datastore, folder: str, spec: Any, recurse: bool) -> list[Any]:
    world = ds.world
    files = entries(world, ds)
    dirs = directories(world, ds, files)
    if folder not in dirs:
        path = f"[{ds.name}] {folder}".rstrip()
        raise vim.fault.FileNotFound(msg=f"File {path} was not found", file=path)
    out = []
    todo = [folder]
    while todo:
        here = todo.pop(0)
        subdirs, in_dir = children(files, dirs, here)
        found: list[Any] = []
        for name in subdirs:
            typ = _info_type(None, spec)
            if typ is not None and _matches(name, spec):
                found.append(_info(None, name, typ, spec, files))
        for e in in_dir:
            name = posixpath.basename(e.path)
            typ = _info_type(e, spec) if _visible(e) else None
            if typ is not None and _matches(name, spec):
                found.append(_info(e, name, typ, spec, files))
        if spec is None or not spec.sortFoldersFirst:
            found.sort(key=lambda i: i.path)
        out.append(RESULTS(datastore=ds.ref, folderPath=f"[{ds.name}] {here}".rstrip(), file=found))
        if recurse:
            todo.extend(posixpath.join(here, d) for d in subdirs)
    return out


def _browse(ctx: Ctx, this: MO, path: str, spec: Any, recurse: bool) -> Any:
    """The search task: the path is checked at once, the datastore and folder when the task runs."""
    browsed: list[Datastore] = list(getattr(this, "datastores", []))
    if not browsed:
        raise vmodl.fault.InvalidArgument(msg="not a datastore browser", invalidProperty="_this")
    ds_name, folder = split_ds_path(path)
    ds = next((d for d in browsed if d.name == ds_name), None)

    async def body(task: Task) -> Any:
        await elapse(ctx.twin.world, "search")
        if ds is None:
            raise vim.fault.InvalidDatastore(msg=f"Datastore '{ds_name}' is not browsed here", name=ds_name)
        found = search(ds, folder, spec, recurse=recurse)
        return RESULTS_ARRAY(found) if recurse else found[0]

    entity = ds or browsed[0]  # a task's entity is a managed entity
    return submit(ctx, entity, body, op="HostDatastoreBrowser.searchSubFolders" if recurse
                  else "HostDatastoreBrowser.search")


@method("SearchDatastore_Task")
def search_datastore(ctx: Ctx, this: MO, datastorePath: str, searchSpec: Any = None) -> Any:  # noqa: N803
    return _browse(ctx, this, datastorePath, searchSpec, False)


@method("SearchDatastoreSubFolders_Task")
def search_sub_folders(ctx: Ctx, this: MO, datastorePath: str, searchSpec: Any = None) -> Any:  # noqa: N803
    return _browse(ctx, this, datastorePath, searchSpec, True)
