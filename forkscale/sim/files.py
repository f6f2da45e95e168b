"""What datastores hold besides disks: uploaded files, made directories, and unregistered VMs.

A datastore's namespace is the union of its disk files (forkscale.sim.disks), the home files of
the VMs living there (rendered on read, forkscale.sim.vmx), the VMs unregistered from inventory
(whose files stay until deleted or registered again), and what clients put there over HTTP.
"""

from __future__ import annotations

import posixpath
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyVmomi import vim

if TYPE_CHECKING:
    from .vm import VM

_DS_PATH = re.compile(r"^\[([^\]]+)\]\s?(.*)$")


@dataclass
class Upload:
    data: bytes
    modified: float = field(default_factory=time.time)


@dataclass
class FileStore:
    uploads: dict[str, dict[str, Upload]] = field(default_factory=dict)  # datastore moid -> path -> file
    directories: dict[str, set[str]] = field(default_factory=dict)  # datastore moid -> made directories
    unregistered: dict[str, VM] = field(default_factory=dict)  # "[ds] dir/x.vmx" -> the VM it describes

    def put(self, ds_moid: str, path: str, data: bytes) -> None:
        self.uploads.setdefault(ds_moid, {})[path] = Upload(data)

    def delete(self, ds_moid: str, path: str) -> bool:
        """Remove an uploaded file, or a directory and all that was uploaded under it."""
        files = self.uploads.get(ds_moid, {})
        dirs = self.directories.get(ds_moid, set())
        found = files.pop(path, None) is not None
        prefix = path.rstrip("/") + "/"
        for p in [p for p in files if p.startswith(prefix)]:
            del files[p]
            found = True
        for d in [d for d in dirs if d == path.rstrip("/") or d.startswith(prefix)]:
            dirs.discard(d)
            found = True
        return found

    def used(self, ds_moid: str) -> int:
        return sum(len(u.data) for u in self.uploads.get(ds_moid, {}).values())


def split_ds_path(path: str) -> tuple[str, str]:
    """`[ds-ssd] vm/vm.vmx` -> (`ds-ssd`, `vm/vm.vmx`); InvalidDatastorePath if it is not one."""
    m = _DS_PATH.match(path.strip())
    if not m:
        raise vim.fault.InvalidDatastorePath(msg=f"Invalid datastore path '{path}'.", datastorePath=path)
    rel = posixpath.normpath(m.group(2).strip()) if m.group(2).strip() else ""
    if rel in (".", "/"):
        rel = ""
    if rel.startswith("..") or rel.startswith("/"):
        raise vim.fault.InvalidDatastorePath(msg=f"Invalid datastore path '{path}'.", datastorePath=path)
    return m.group(1), rel
