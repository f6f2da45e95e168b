"""What a Datastore shows besides its summary: its VMFS volume and info (free space from the disk
model) and capabilities (the HostDatastoreBrowser that browses it is forkscale.sim.browser)."""

from __future__ import annotations

import uuid as uuidlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

if TYPE_CHECKING:
    from .inventory import Datastore

TiB = 1024**4
MAX_FILE = 64 * TiB - 512 * 1024**2  # VMFS 6: a file (a virtual disk) up to 62 TB plus overhead
BLOCK_MB = 1
Q = vim.host.DatastoreBrowser

CAPABILITY = vim.Datastore.Capability(
    directoryHierarchySupported=True, rawDiskMappingsSupported=True, perFileThinProvisioningSupported=True,
    storageIORMSupported=True, nativeSnapshotSupported=False, topLevelDirectoryCreateSupported=True,
    seSparseSupported=True, vmfsSparseSupported=True, vsanSparseSupported=False, upitSupported=False,
    vmdkExpandSupported=True, clusteredVmdkSupported=False)

SUPPORTED_QUERIES = [Q.FolderQuery(), Q.VmConfigQuery(), Q.TemplateVmConfigQuery(), Q.VmDiskQuery(),
                     Q.VmLogQuery(), Q.VmNvramQuery(), Q.VmSnapshotQuery(), Q.IsoImageQuery(), Q.FloppyImageQuery()]


def volume_uuid(ds: Datastore) -> str:
    """The VMFS volume UUID (the `/vmfs/volumes/<uuid>` name), stable per datastore."""
    u = uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"forkscale-twin/{ds.moid}/{ds.name}").hex
    return f"{u[:8]}-{u[8:16]}-{u[16:20]}-{u[20:32]}"


def vmfs_volume(ds: Datastore) -> Any:
    return vim.host.VmfsVolume(
        type="VMFS", name=ds.name, capacity=ds.capacity, blockSizeMb=BLOCK_MB, blockSize=BLOCK_MB * 1024,
        unmapGranularity=BLOCK_MB * 1024, unmapPriority="low", maxBlocks=63 * 1024 * 1024, majorVersion=6,
        version="6.82", uuid=volume_uuid(ds), vmfsUpgradable=False, ssd="ssd" in ds.name, local=False,
        scsiDiskType="native512",
        extent=[vim.host.ScsiDisk.Partition(diskName=f"naa.6000c29{volume_uuid(ds).replace('-', '')[:25]}",
                                            partition=1)])


def info(ds: Datastore) -> Any:
    """VmfsDatastoreInfo: name, url, free space (as the summary says), file size limits, the volume."""
    return vim.host.VmfsDatastoreInfo(
        name=ds.name, url=ds.url, freeSpace=ds.free(), maxFileSize=MAX_FILE, maxVirtualDiskCapacity=MAX_FILE,
        maxMemoryFileSize=MAX_FILE, maxPhysicalRDMFileSize=MAX_FILE, maxVirtualRDMFileSize=MAX_FILE,
        timestamp=datetime.now(tz=UTC), containerId=volume_uuid(ds), vmfs=vmfs_volume(ds))
