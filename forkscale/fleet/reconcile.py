"""Reconcile: make the ledger agree with vCenter before planning.

A controller killed at any point left rows that say what it was doing; here each is judged
against what vCenter holds: finished work is adopted, unfinished work rolled back, rows whose VM
vanished closed, and orphans (tagged for the pool, unknown to the ledger) removed.

A row's VM is found by what the ledger recorded, not only by tags an operator (or a vCenter, or an
older template) may have dropped: its moref, its instance UUID (a re-registered VM), then its name
with this row's `forkscale.pool`/`forkscale.id` tags. A row is never dropped while vCenter still
has its VM, and a quarantined row (its clone task timed out and may still land) keeps its name,
IP and MAC until vCenter says the task ended and no VM holds them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.fleet.plan import LIVE
from forkscale.fleet.result import Result
from forkscale.ledger import CloneRecord, Ledger
from forkscale.spec import Pool
from forkscale.vsphere.model import TAG_POOL, Inventory, VmInfo
from forkscale.vsphere.ports import VSphere

log = logging.getLogger("forkscale.engine")


class VmIndex:
    """One inventory, indexed to find the VM of a ledger row."""

    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self.by_uuid = {v.instance_uuid: v for v in inv.vms.values() if v.instance_uuid}
        self.by_tag = {(v.pool, v.clone_id, v.name): v for v in inv.vms.values() if v.pool and v.clone_id}

    def find(self, rec: CloneRecord) -> VmInfo | None:
        """The VM `rec` stands for: recorded moref (and instance UUID, and its name or its tags), else
        instance UUID and name, else name and tags. (An instance UUID alone is not trusted: vcsim
        derives it from the VM's path, and tools that copy VMs can keep it. A moref alone is not
        either: a vCenter restored from a backup hands out again the morefs of VMs it lost.)"""
        if rec.vm_moref:
            vm = self.inv.vms.get(rec.vm_moref)
            if vm is not None and (not rec.instance_uuid or not vm.instance_uuid
                                   or vm.instance_uuid == rec.instance_uuid) and (
                    vm.name == rec.name or (vm.pool, vm.clone_id) == (rec.pool, str(rec.id))):
                return vm
        same = self.by_uuid.get(rec.instance_uuid or "")
        if same is not None and same.name == rec.name:  # re-registered: a new moref, the same VM
            return same
        return self.by_tag.get((rec.pool, str(rec.id), rec.name))


def record_identity(ledger: Ledger, rec: CloneRecord, vm: VmInfo) -> None:
    """Keep the row's moref and instance UUID as vCenter reports them now."""
    changes = {}
    if rec.vm_moref != vm.moref:
        changes["vm_moref"] = vm.moref
    if vm.instance_uuid and rec.instance_uuid != vm.instance_uuid:
        changes["instance_uuid"] = vm.instance_uuid
    if changes and rec.state != "gone":
        ledger.update(rec.id, **changes)


#: Called before a clone VM is destroyed, with (pool, its row if known, its moref): users' disks are
#: detached there (forkscale/fleet/userdisks.py). Raising stops the destroy.
BeforeDestroy = Callable[[str, CloneRecord | None, str], Awaitable[None]]


class Reconciler:
    def __init__(self, ledger: Ledger, driver: VSphere, *, settle_timeout_s: float = 600.0,
                 before_destroy: BeforeDestroy | None = None, busy: set[int] | None = None) -> None:
        self.ledger = ledger
        self.driver = driver
        self.settle_timeout_s = settle_timeout_s
        self.before_destroy = before_destroy
        self.busy = busy if busy is not None else set()  # ids of clones this process is making right now

    async def __call__(self, pool: Pool, inv: Inventory, result: Result) -> None:
        """Make the ledger agree with vCenter: adopt finished work, roll back the rest, clean orphans."""
        rows = [r for r in self.ledger.clones(pool.name, states=[*LIVE, "destroying", "failed"]) if r.id not in self.busy]
        ended, settled = await self._tasks_ended(rows, inv)
        index = VmIndex(inv)
        matched: set[str] = set()
        read_at = self.ledger.clone_writes
        for rec in rows:
            if rec.id in self.busy:
                continue
            if self.ledger.clone_writes != read_at:  # rows were written since: this one may have moved on
                fresh = self.ledger.get(rec.id)
                if fresh is None or fresh.state != rec.state:
                    continue  # a replacement (or another round) of this process took it meanwhile
            vm = index.find(rec)
            if vm is None and rec.vm_moref and rec.state in ("customizing", "ready", "claimed", "draining") \
                    and await self._there_now(rec):
                continue  # made after `inv` was read (by a replacement running alongside): not vanished
            if vm is not None:
                matched.add(vm.moref)
                record_identity(self.ledger, rec, vm)
            if rec.state in ("planned", "cloning"):
                self._judge_unfinished(rec, vm, settled, result, with_disk=pool.user_disk is not None)
            elif rec.state == "ready" and vm is not None and vm.power != "poweredOn":
                await self._switched_off(rec, vm)
            elif rec.state in ("customizing", "ready", "claimed", "draining"):
                self._judge_live(rec, vm, with_disk=pool.user_disk is not None)
            elif rec.pending_task is not None and not ended.get(rec.id, False):
                log.info("clone %s stays quarantined: its task %s may still land", rec.name, rec.pending_task or "?")
            elif vm is None or await self.destroy_vm(vm.moref, rec):
                self._close(rec)
        await self._orphans(pool, inv, {str(r.id) for r in rows}, matched, result)

    async def _there_now(self, rec: CloneRecord) -> bool:
        """Whether vCenter holds the row's VM now, by its moref *and* name (a restarted vCenter hands a
        lost VM's moref to another VM)."""
        props = (await self.driver.vm_props([rec.vm_moref or ""], ["name"])).get(rec.vm_moref or "", {})
        return props.get("name") == rec.name

    async def _tasks_ended(self, rows: list[CloneRecord], inv: Inventory) -> tuple[dict[int, bool], bool]:
        """Which quarantined rows' tasks have ended, and whether vCenter's clone tasks settled.

        A dead run may have left clone tasks queued in vCenter: its half-made clones are judged
        only once those tasks ended, or a rolled-back name could be taken twice. When anything
        may have landed since `inv` was read, `inv` is read again (in place).
        """
        index = VmIndex(inv)
        unsure = [r for r in rows if r.state in ("planned", "cloning") and index.find(r) is None]
        pending = [r for r in rows if r.pending_task is not None and r.state == "failed"]
        ended: dict[int, bool] = {}
        for rec in pending:
            if rec.pending_task:
                ended[rec.id] = await self.driver.task_ended(rec.pending_task)
        settled = True
        if unsure or any(not r.pending_task for r in pending):
            settled = await self.driver.wait_clone_tasks_settled(timeout=self.settle_timeout_s)
            ended.update({r.id: settled for r in pending if not r.pending_task})
        if unsure or any(ended.values()):
            fresh = await self.driver.inventory()
            inv.vms, inv.macs, inv.taken_at = fresh.vms, fresh.macs, fresh.taken_at
        return ended, settled

    def _close(self, rec: CloneRecord) -> None:
        """`gone`, unless something else closed it while its VM was being destroyed."""
        now = self.ledger.get(rec.id)
        if now is not None and now.state != "gone":
            self.ledger.transition(rec.id, "gone")

    def _judge_unfinished(self, rec: CloneRecord, vm: VmInfo | None, settled: bool, result: Result, *,
                          with_disk: bool) -> None:
        """(`with_disk`: the pool gives clones a user disk; an adopted clone stays `customizing` until the
        engine's finish has attached it.)"""
        if vm is not None:
            if rec.state == "planned":
                self.ledger.transition(rec.id, "cloning", vm_moref=vm.moref)
            self.ledger.transition(rec.id, "customizing", vm_moref=vm.moref)
            if vm.status == "ready" and not with_disk:
                self.ledger.make_ready(rec.id)  # (a replacement: its reservation settled, handed back)
            result.adopted += 1
        elif rec.state == "planned":
            self.ledger.transition(rec.id, "gone")  # never sent to vCenter
            result.rolled_back += 1
        elif settled:
            self.ledger.transition(rec.id, "failed", error="rolled back: no VM found after restart")
            self.ledger.transition(rec.id, "gone")
            result.rolled_back += 1
        else:  # its task may still be running: hold the identity
            self.ledger.transition(rec.id, "failed", pending_task="",
                                   error="quarantined: no VM found after restart, and clone tasks are still running")
            result.rolled_back += 1

    def _judge_live(self, rec: CloneRecord, vm: VmInfo | None, *, with_disk: bool) -> None:
        if vm is None:
            self.ledger.transition(rec.id, "failed", error="VM disappeared from vCenter")
            self.ledger.transition(rec.id, "gone")
        elif rec.state == "customizing" and vm.status == "ready" and not with_disk:
            self.ledger.make_ready(rec.id)

    async def _switched_off(self, rec: CloneRecord, vm: VmInfo) -> None:
        """A spare switched off behind forkscale's back serves nobody: it is replaced."""
        self.ledger.transition(rec.id, "failed", error=f"VM found {vm.power} (switched off outside forkscale)")
        if await self.destroy_vm(vm.moref, rec):
            self.ledger.transition(rec.id, "gone")

    async def _orphans(self, pool: Pool, inv: Inventory, known_ids: set[str], matched: set[str],
                       result: Result) -> None:
        """Remove VMs tagged for this pool but unknown to the ledger (ledger lost, or a dead run's late clone)."""
        for vm in list(inv.vms.values()):
            if vm.pool != pool.name or vm.is_source or vm.moref in matched or vm.clone_id in known_ids:
                continue  # sources: forkscale/fleet/sources.py
            if vm.clone_id and vm.clone_id.isdigit() and int(vm.clone_id) in self.busy:
                continue  # being made or removed by this process right now
            live = self.ledger.get(int(vm.clone_id)) if vm.clone_id and vm.clone_id.isdigit() else None
            if live is not None and live.state in LIVE and live.name == vm.name:
                continue
            log.warning("removing orphan clone %s (tagged %s=%s, unknown to the ledger)", vm.name, TAG_POOL, vm.pool)
            if await self.destroy_vm(vm.moref, pool=pool.name):
                result.destroyed += 1

    async def destroy_vm(self, moref: str, rec: CloneRecord | None = None, *, pool: str | None = None) -> bool:
        """Destroy one clone VM (its users' disks detached first); True once vCenter no longer has it."""
        try:
            if self.before_destroy is not None and (rec is not None or pool is not None):
                await self.before_destroy(rec.pool if rec is not None else str(pool), rec, moref)
            await self.driver.destroy(moref)
        except (PermanentError, TemporaryError) as exc:
            log.warning("could not destroy %s: %s", moref, exc)
            return False
        return not await self.driver.vm_props([moref], ["name"])
