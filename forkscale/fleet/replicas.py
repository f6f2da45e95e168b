"""Replicas: the full copy of a pool's image on each datastore that its linked clones fork from.

As View Composer does, a linked clone does not fork from the golden VM's own disk wherever the
clone lands: each datastore holding linked clones of a pool gets one **replica** of the pool's
image (the golden VM at its snapshot, copied whole with `CloneVM_Task` and snapshotted once,
`forkscale-replica`), and that datastore's linked clones are delta disks of the replica's
snapshot. Then no clone's reads cross datastores, and a datastore can be vacated by moving its
clones and dropping its replica.

Bookkeeping (`replicas` in the ledger): a replica row is written `preparing` before its clone task
is sent, and the VM carries `forkscale.replica=<pool>:<id>` (never `forkscale.pool`, so nothing
looking for a pool's clones or sources mistakes it for one). A clone names its replica
(`replica_id`) before its own task is sent; the replica's reference count is the number of clones
not `gone` that name it, counted by the database, so it cannot drift. A replica is made when the
first linked clone on its datastore needs it and removed (`removing`, then destroyed, then `gone`)
once no clone depends on it any more; the check and the state change are one transaction, so a
clone can never be bound to a replica being removed. A restarted controller adopts tagged replica
VMs the ledger lacks, finishes one left without its snapshot, and removes what a dead run half made.

The image is the golden VM and its current snapshot (their morefs): a new snapshot is a new image,
so new replicas are made for it, and those of the old image go with their last clone.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.core.identity import random_mac
from forkscale.fleet.sources import Source
from forkscale.ledger import USABLE_REPLICA_STATES, Ledger, LedgerError, ReplicaRecord
from forkscale.spec import Pool
from forkscale.vsphere.model import TAG_REPLICA, CloneRequest, Inventory, VmInfo
from forkscale.vsphere.ports import TaskTimeout, VSphere

log = logging.getLogger("forkscale.replicas")
SNAPSHOT = "forkscale-replica"
ATTEMPTS = 3


#: Faults after which a call may or may not have happened (its answer was lost).
ANSWER_LOST = frozenset({"ConnectionError"})


class ReplicaPending(PermanentError):
    """A replica's clone call whose outcome is unknown: not this converge's to use (nor to send again)."""


@dataclass(frozen=True)
class Replica:
    """What a linked clone forks from: the replica VM and its snapshot."""

    id: int
    moref: str
    snapshot: str
    datastore: str


def image_of(src: Source) -> str:
    """The pool's image as the replicas know it: the golden VM and its snapshot (morefs)."""
    return f"{src.golden or src.moref}@{src.snapshot or '-'}"


def replica_name(golden: str, pool: str, datastore: str, replica_id: int) -> str:
    return f"{golden}-{pool}-replica-{datastore}-r{replica_id}"[:80]


def tag(pool: str, replica_id: int) -> str:
    return f"{pool}:{replica_id}"


class ReplicaManager:
    """One pool's replicas during one converge (or day-2 operation): find, make, adopt, remove."""

    def __init__(self, driver: VSphere, ledger: Ledger, pool: Pool, inv: Inventory, folder: str, *,
                 rng: random.Random | None = None, locks: dict[str, asyncio.Lock] | None = None) -> None:
        self.driver = driver
        self.ledger = ledger
        self.pool = pool
        self.inv = inv
        self.folder = folder
        self.rng = rng or random.Random()
        self._locks: dict[str, asyncio.Lock] = {} if locks is None else locks  # datastore -> making its replica
        self._failed: dict[str, PermanentError] = {}  # datastore -> why no replica could be made there
        self._ready: dict[tuple[str, str], Replica] = {}  # (datastore, image) -> replica, once complete

    # ledger <-> vCenter ----------------------------------------------------------------------------
    async def sync(self) -> None:
        """Adopt tagged replica VMs the ledger lost track of, close rows whose VM is gone, remove what a
        dead run half made. Run once before replicas are used (after a crash it settles them)."""
        pool = self.pool.name
        rows = self.ledger.replicas(pool, ("preparing", "ready", "removing"))
        tagged = self._tagged()
        if any(r.state == "preparing" and tag(pool, r.id) not in tagged for r in rows):
            # a dead run's replica clone task may still land: judge those rows once vCenter's clone tasks ended
            if not await self.driver.wait_clone_tasks_settled(timeout=600.0):
                raise PermanentError(f"pool {pool}: clone tasks are still running in vCenter; a replica a previous "
                                     "run started may still land, so none is judged now", "TaskInProgress")
            self.inv.vms = (await self.driver.inventory()).vms
            tagged = self._tagged()
        known = {tag(pool, r.id) for r in rows}
        for key, stray in tagged.items():
            if key not in known:  # a replica this ledger never recorded (ledger lost) or already closed
                log.warning("pool %s: removing replica VM %s unknown to the ledger", pool, stray.name)
                await self._destroy(stray.moref)
        for row in rows:
            vm = tagged.get(tag(pool, row.id))
            if vm is None and await self._busy_or_there(row):
                continue
            if vm is None:
                log.info("pool %s: replica %s is not in vCenter; closing its row", pool, row.vm_name)
                self.ledger.update_replica(row.id, state="gone")
                continue
            if row.vm_moref != vm.moref:
                row = self.ledger.update_replica(row.id, vm_moref=vm.moref)
            if row.state == "removing":
                await self._remove(row)

    async def _busy_or_there(self, row: ReplicaRecord) -> bool:
        """A row `inv` shows no VM for, that is being made by this process now, or whose VM vCenter does
        have (made since `inv` was read): not to be closed."""
        lock = self._locks.get(row.datastore)
        if lock is not None and lock.locked():
            return True
        return bool(row.vm_moref and await self.driver.vm_props([row.vm_moref], ["name"]))

    def _tagged(self) -> dict[str, VmInfo]:
        prefix = f"{self.pool.name}:"
        return {v.replica_tag: v for v in self.inv.vms.values()
                if v.replica_tag and v.replica_tag.startswith(prefix) and v.clone_id is None}

    def usable(self, datastore: str, image: str) -> ReplicaRecord | None:
        rows = [r for r in self.ledger.replicas(self.pool.name, USABLE_REPLICA_STATES)
                if r.datastore == datastore and r.image == image]
        return rows[0] if rows else None

    # making ------------------------------------------------------------------------------------------
    async def for_clone(self, src: Source, datastore: str) -> Replica:
        """The replica of `src`'s image on `datastore`, made now if there is none (one at a time per
        datastore; every clone waiting for it gets the same one). PermanentError when none can be
        made now (the clone then forks from the golden VM's snapshot itself)."""
        if src.snapshot is None:
            raise PermanentError(f"{src.name} has no snapshot to make linked clones from", "NoSnapshot")
        if datastore in self._failed:
            raise self._failed[datastore]
        lock = self._locks.setdefault(datastore, asyncio.Lock())
        async with lock:
            if datastore in self._failed:
                raise self._failed[datastore]
            image = image_of(src)
            done = self._ready.get((datastore, image))
            if done is not None:
                return done
            row = self.usable(datastore, image)
            try:
                if row is None:
                    row = self._add(src, datastore, image)
                done = self._ready[(datastore, image)] = await self._complete(src, row)
                return done
            except PermanentError as exc:
                self._failed[datastore] = exc
                raise

    def _add(self, src: Source, datastore: str, image: str) -> ReplicaRecord:
        golden = self.inv.vms.get(src.golden or src.moref)
        base = golden.name if golden is not None else src.name
        return self.ledger.add_replica(self.pool.name, image, datastore,
                                       lambda replica_id: replica_name(base, self.pool.name, datastore, replica_id))

    async def _complete(self, src: Source, row: ReplicaRecord) -> Replica:
        """Make what the row still lacks: the VM, its snapshot; then it is `ready`."""
        moref = row.vm_moref  # (sync closed every row whose VM is gone)
        if moref is None:
            moref = await self._clone(src, row)
            row = self.ledger.update_replica(row.id, vm_moref=moref)
        snaps = await self.driver.snapshots_named(moref, SNAPSHOT)
        if snaps:
            snapshot = snaps[0]
        else:
            snapshot = await self._retrying(f"snapshot replica {row.vm_name}",
                                            lambda: self.driver.create_snapshot(moref, SNAPSHOT))
        if row.state != "ready":
            self.ledger.update_replica(row.id, state="ready")
            log.info("pool %s: replica %s ready on %s", self.pool.name, row.vm_name, row.datastore)
        return Replica(id=row.id, moref=moref, snapshot=snapshot, datastore=row.datastore)

    async def _clone(self, src: Source, row: ReplicaRecord) -> str:
        inv, pool = self.inv, self.pool
        host = self._host(src)
        mac = random_mac(set(inv.macs), self.rng)
        inv.macs.add(mac)
        req = CloneRequest(name=row.vm_name, folder=self.folder, datastore=inv.datastores[row.datastore][0],
                           host=host, resource_pool=inv.pools.get(pool.placement.resource_pool or "", None),
                           network=inv.networks[pool.network.port_group], mac=mac, nic_key=None,
                           extra={TAG_REPLICA: tag(pool.name, row.id)}, disconnect=True, power_on=False)
        golden = src.golden or src.moref
        try:
            moref = await self._retrying(f"make replica {row.vm_name}", lambda: self.driver.clone(
                golden, req, linked=False, snapshot=src.snapshot), resend=False)
        except ReplicaPending:
            raise  # its task may still land: the row stays `preparing` for the next sync to judge
        except PermanentError:
            self.ledger.update_replica(row.id, state="gone")  # vCenter refused it: nothing was made
            raise
        log.info("pool %s: made replica %s of %s on %s", pool.name, row.vm_name, row.image, row.datastore)
        return moref

    def _host(self, src: Source) -> str:
        """The golden VM's host when it can take a VM, else the first host that can."""
        inv = self.inv
        golden = inv.vms.get(src.golden or src.moref)
        if golden is not None and golden.host and inv.placeable(inv.host_names.get(golden.host, "")):
            return golden.host
        for name in sorted(self.pool.placement.hosts or inv.hosts):
            if inv.placeable(name):
                return inv.hosts[name]
        return golden.host if golden is not None and golden.host else next(iter(inv.hosts.values()))

    async def _retrying(self, what: str, call: Callable[[], Awaitable[str]], *, resend: bool = True) -> str:
        """`call`, again after a temporary fault. Without `resend`, a call that may have happened all the
        same (its answer was lost, or its task outlived the deadline) is never sent again: a server
        without DuplicateName would make a second VM. ReplicaPending then."""
        delay = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await call()
            except TemporaryError as exc:
                if not resend and (isinstance(exc, TaskTimeout) or exc.fault in ANSWER_LOST):
                    raise ReplicaPending(f"{what}: {exc}; it may still be made, so it is not sent again "
                                         "(the next run adopts or removes it)", "ReplicaPending") from None
                if attempt == ATTEMPTS:
                    raise PermanentError(f"{what}: {exc}", exc.fault) from None
                await asyncio.sleep(exc.delay * delay * (0.5 + self.rng.random()))
                delay *= 2
        raise AssertionError("unreachable")

    # removing ----------------------------------------------------------------------------------------
    async def retire(self) -> list[str]:
        """Remove every replica of the pool no clone depends on any more; their names."""
        done = []
        for row in self.ledger.replicas(self.pool.name, ("preparing", "ready", "removing")):
            if row.refs:
                continue
            try:
                if not self.ledger.retire_replica(row.id):
                    continue
            except LedgerError:
                continue
            if await self._remove(row):
                done.append(row.vm_name)
        return done

    async def _remove(self, row: ReplicaRecord) -> bool:
        if row.vm_moref and not await self._destroy(row.vm_moref):
            return False
        self.ledger.update_replica(row.id, state="gone")
        self._ready = {k: v for k, v in self._ready.items() if v.id != row.id}
        log.info("pool %s: removed replica %s from %s (no clone depends on it)", self.pool.name, row.vm_name,
                 row.datastore)
        return True

    async def _destroy(self, moref: str) -> bool:
        try:
            await self.driver.destroy(moref)
        except (PermanentError, TemporaryError) as exc:
            log.warning("pool %s: could not remove replica %s: %s", self.pool.name, moref, exc)
            return False
        self.inv.vms.pop(moref, None)
        return True
