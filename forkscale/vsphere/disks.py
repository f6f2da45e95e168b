"""Independent (user) disks: created with, attached to and detached from clones through ReconfigVM_Task.

The View Composer persistent-disk pattern: a `VirtualDisk` in mode `independent_persistent` is
added with `fileOperation: create` (a new thin file at a path we choose), removed *without*
`fileOperation` to detach it (the file stays on the datastore), added again without a file
operation to attach it to another VM, and removed with `fileOperation: destroy` -- or deleted with
`VirtualDiskManager.DeleteVirtualDisk_Task` once detached -- when it is no longer wanted.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from forkscale.core.errors import PermanentError
from forkscale.vsphere.faults import map_fault
from forkscale.vsphere.reads import retrieve_one
from forkscale.vsphere.transport import Soap

Disk = vim.vm.device.VirtualDisk
SCSI_RESERVED_UNIT = 7


def _datacenter_path(path: str) -> tuple[str, str]:
    """`[ds-ssd] a/b/c.vmdk` -> (`[ds-ssd] a/b`, `c.vmdk`)."""
    folder, _, name = path.rpartition("/")
    if not folder or not path.startswith("["):
        raise PermanentError(f"{path!r} is not a datastore path like '[datastore] folder/disk.vmdk'", "InvalidArgument")
    return folder, name


class UserDiskOps:
    """The disk half of the driver (mixed into `forkscale.vsphere.driver.Driver`)."""

    soap: Soap

    async def _task(self, what: str, mo: Any, method: str, *args: Any) -> Any:
        raise NotImplementedError

    async def _devices(self, vm: str) -> list[Any]:
        try:
            devices = await retrieve_one(self.soap, vim.VirtualMachine(vm), vim.VirtualMachine,
                                         "config.hardware.device")
        except vmodl.MethodFault as exc:
            raise map_fault(exc, f"read the devices of {vm}") from None
        return list(devices or [])

    async def _datacenter(self) -> Any:
        try:
            found = await retrieve_one(self.soap, self.soap.content.rootFolder, vim.Folder, "childEntity")
        except vmodl.MethodFault as exc:
            raise map_fault(exc, "read the datacenters") from None
        for entity in found or []:
            if isinstance(entity, vim.Datacenter):
                return entity
        raise PermanentError("vCenter has no datacenter", "NotFound")

    async def vm_disk_files(self, vm: str) -> list[str]:
        """The file names of the VM's virtual disks (their top file)."""
        return [str(getattr(d.backing, "fileName", "")) for d in await self._devices(vm)
                if isinstance(d, Disk) and getattr(d.backing, "fileName", None)]

    async def add_disk(self, vm: str, path: str, *, size_gb: int | None,
                       mode: str = "independent_persistent") -> None:
        """Attach the disk file `path` to `vm`; with `size_gb`, create it there first (its folder too)."""
        devices = await self._devices(vm)
        scsi = next((d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)), None)
        if scsi is None:
            raise PermanentError(f"{vm} has no SCSI controller to attach {path} to", "InvalidDeviceSpec")
        used = {d.unitNumber for d in devices if getattr(d, "controllerKey", None) == scsi.key}
        unit = next((u for u in range(16) if u != SCSI_RESERVED_UNIT and u not in used), None)
        if unit is None:
            raise PermanentError(f"{vm}: no free unit on its SCSI controller for {path}", "InvalidDeviceSpec")
        backing = Disk.FlatVer2BackingInfo(fileName=path, diskMode=mode, thinProvisioned=True)
        disk = Disk(key=-100 - unit, controllerKey=scsi.key, unitNumber=unit, backing=backing)
        change = vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)
        if size_gb is not None:
            await self._make_folder(_datacenter_path(path)[0])
            disk.capacityInKB = size_gb * 1024 * 1024
            change.fileOperation = vim.vm.device.VirtualDeviceSpec.FileOperation.create
        await self._task(f"{'create' if size_gb else 'attach'} disk {path} on {vm}", vim.VirtualMachine(vm),
                         "Reconfigure", vim.vm.ConfigSpec(deviceChange=[change]))

    async def remove_disk(self, vm: str, path: str, *, delete: bool) -> bool:
        """Detach the disk file `path` from `vm` (the file stays), or with `delete` remove the file too.
        False when the VM has no such disk (already detached)."""
        disk = next((d for d in await self._devices(vm)
                     if isinstance(d, Disk) and getattr(d.backing, "fileName", None) == path), None)
        if disk is None:
            return False
        change = vim.vm.device.VirtualDeviceSpec(operation="remove", device=disk)
        if delete:
            change.fileOperation = vim.vm.device.VirtualDeviceSpec.FileOperation.destroy
        await self._task(f"{'remove' if delete else 'detach'} disk {path} of {vm}", vim.VirtualMachine(vm),
                         "Reconfigure", vim.vm.ConfigSpec(deviceChange=[change]))
        return True

    async def delete_disk(self, path: str) -> None:
        """Delete a detached disk file; one that is not there any more counts as deleted."""
        manager = self.soap.content.virtualDiskManager
        if manager is None:
            raise PermanentError("this vCenter has no virtual disk manager", "NotSupported")
        try:
            await self._task(f"delete disk {path}", manager, "DeleteVirtualDisk", path, await self._datacenter())
        except PermanentError as exc:
            if exc.fault not in ("FileNotFound", "NotFound"):
                raise

    async def _make_folder(self, folder: str) -> None:
        manager = self.soap.content.fileManager
        if manager is None:
            return
        try:
            await self.soap.invoke(manager, "MakeDirectory", folder, await self._datacenter(), True)
        except vim.fault.FileAlreadyExists:
            return
        except vmodl.MethodFault as exc:
            raise map_fault(exc, f"make folder {folder}") from None
