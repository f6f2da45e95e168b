"""Users' persistent disks around a clone's life: made with it, moved to its replacement, deleted with
its identity (View Composer's persistent disk, on independent-persistent disks).

* `attach` (a new clone, before it is ready): the identity's disk, if the ledger has one, is
  attached (it was detached from the clone this one replaces); else a new one is created at
  `[datastore] forkscale-userdisks/<pool>/<name>.vmdk`, recorded as `creating` before the
  ReconfigVM_Task is sent so a crash leaves a row that says which file may exist.
* `release` (before any clone VM is destroyed -- Destroy_Task deletes every disk still
  attached, independent ones included): the disk is detached; when the identity leaves the pool
  for good (no reservation holds it for a replacement) the file is deleted too, unless
  `user_disk.keep`. A detach that fails stops the destroy: a user's disk is never lost.
* `forget` (a reserved identity is given up while its disk is detached): delete or keep the file.

Every step reads what the VM holds first, so each one is safe to run again after a crash.
"""

from __future__ import annotations

import logging

from forkscale.core.errors import PermanentError
from forkscale.ledger import CloneRecord, Ledger, UserDisk
from forkscale.spec import Pool
from forkscale.vsphere.ports import UserDisks

log = logging.getLogger("forkscale.userdisks")
FOLDER = "forkscale-userdisks"


def disk_path(pool: Pool, rec: CloneRecord) -> str:
    assert pool.user_disk is not None
    datastore = pool.user_disk.datastore or rec.datastore
    return f"[{datastore}] {FOLDER}/{pool.name}/{rec.name}.vmdk"


class UserDiskKeeper:
    def __init__(self, driver: UserDisks, ledger: Ledger) -> None:
        self.driver = driver
        self.ledger = ledger

    async def attach(self, pool: Pool, rec: CloneRecord) -> None:
        """Give the clone its identity's disk (created the first time); raises when it cannot."""
        spec = pool.user_disk
        if spec is None or not rec.vm_moref:
            return
        disks = self.ledger.user_disks
        disk = disks.of(pool.name, rec.name)
        if disk is None:
            disk = disks.record(pool.name, rec.name, disk_path(pool, rec), spec.size_gb, rec.id)
        if disk.path in await self.driver.vm_disk_files(rec.vm_moref):
            disks.set(disk.id, "attached", rec.id)
            return
        if disk.state == "creating":
            try:
                await self.driver.add_disk(rec.vm_moref, disk.path, size_gb=disk.size_gb, mode=spec.mode)
            except PermanentError as exc:
                if exc.fault != "FileAlreadyExists":  # made before a crash: attach what is there
                    raise
                await self.driver.add_disk(rec.vm_moref, disk.path, size_gb=None, mode=spec.mode)
            log.info("pool %s: created user disk %s for %s", pool.name, disk.path, rec.name)
        else:
            await self.driver.add_disk(rec.vm_moref, disk.path, size_gb=None, mode=spec.mode)
            log.info("pool %s: attached user disk %s to %s", pool.name, disk.path, rec.name)
        disks.set(disk.id, "attached", rec.id)

    async def release(self, pool_name: str, keep: bool, rec: CloneRecord | None, vm_moref: str) -> None:
        """Before the VM `vm_moref` (of clone `rec`) is destroyed: detach every user disk of the pool it
        holds; delete the file of an identity leaving the pool for good (unless `keep`)."""
        disks = {d.path: d for d in self.ledger.user_disks.all(pool_name, ("creating", "attached", "detached"))}
        if not disks:
            return
        files = await self.driver.vm_disk_files(vm_moref)
        for path in files:
            disk = disks.get(path)
            if disk is None:
                continue
            leaving = self.ledger.reservations.get(disk.identity) is None and (rec is None or rec.name == disk.identity)
            delete = leaving and not keep
            await self.driver.remove_disk(vm_moref, path, delete=delete)
            self._after(disk, leaving, delete)

    async def forget(self, pool_name: str, keep: bool, identity: str) -> None:
        """The identity left the pool for good while its disk was detached: delete it (or keep it)."""
        disk = self.ledger.user_disks.of(pool_name, identity)
        if disk is None or disk.state not in ("detached", "creating"):
            return
        if not keep:
            await self.driver.delete_disk(disk.path)
        self._after(disk, True, not keep)

    def _after(self, disk: UserDisk, leaving: bool, deleted: bool) -> None:
        state = "deleted" if deleted else ("kept" if leaving else "detached")
        self.ledger.user_disks.set(disk.id, state, None)
        log.info("pool %s: user disk %s of %s %s", disk.pool, disk.path, disk.identity, state)
