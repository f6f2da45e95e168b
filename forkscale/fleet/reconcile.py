"""Reconcile: make the ledger agree with vCenter before planning.

A controller killed at any point left rows that say what it was doing; here each is judged
against what vCenter holds: finished work is adopted, unfinished work rolled back, rows whose VM
vanished closed, and orphans (tagged for the pool, unknown to the ledger) removed.
"""

from __future__ import annotations

import logging

from forkscale.core.errors import PermanentError
from forkscale.fleet.plan import LIVE
from forkscale.fleet.result import Result
from forkscale.ledger import Ledger
from forkscale.spec import Pool
from forkscale.vsphere.model import TAG_POOL, Inventory
from forkscale.vsphere.ports import VSphere

log = logging.getLogger("forkscale.engine")


class Reconciler:
    def __init__(self, ledger: Ledger, driver: VSphere, *, settle_timeout_s: float = 600.0) -> None:
        self.ledger = ledger
        self.driver = driver
        self.settle_timeout_s = settle_timeout_s

    async def __call__(self, pool: Pool, inv: Inventory, result: Result) -> None:
        """Make the ledger agree with vCenter: adopt finished work, roll back the rest, clean orphans."""
        by_name = {v.name: v for v in inv.vms.values()}
        unsure = [r for r in self.ledger.clones(pool.name, states=["planned", "cloning"]) if r.name not in by_name]
        if unsure:
            # A dead run may have left clone tasks queued in vCenter: judge its half-made clones only
            # once those tasks have ended, or a rolled-back name could be taken twice.
            await self.driver.wait_clone_tasks_settled(timeout=self.settle_timeout_s)
            fresh = await self.driver.inventory()
            inv.vms, inv.macs = fresh.vms, fresh.macs
            by_name = {v.name: v for v in inv.vms.values()}
        known_ids: set[str] = set()
        for rec in self.ledger.clones(pool.name, states=[*LIVE, "destroying", "failed"]):
            known_ids.add(str(rec.id))
            vm = by_name.get(rec.name)
            ours = vm is not None and vm.pool == pool.name and vm.clone_id == str(rec.id)
            if rec.state in ("planned", "cloning"):
                if ours:
                    assert vm is not None
                    if rec.state == "planned":
                        self.ledger.transition(rec.id, "cloning", vm_moref=vm.moref)
                    self.ledger.transition(rec.id, "customizing", vm_moref=vm.moref)
                    if vm.status == "ready":
                        self.ledger.transition(rec.id, "ready")
                    result.adopted += 1
                else:
                    if rec.state == "cloning":
                        self.ledger.transition(rec.id, "failed", error="rolled back: no VM found after restart")
                    self.ledger.transition(rec.id, "gone")
                    result.rolled_back += 1
            elif rec.state in ("customizing", "ready", "claimed", "draining"):
                if not ours:
                    self.ledger.transition(rec.id, "failed", error="VM disappeared from vCenter")
                    self.ledger.transition(rec.id, "gone")
                elif rec.state == "ready" and vm is not None and vm.power != "poweredOn":
                    # a spare switched off behind our back serves nobody: replace it
                    self.ledger.transition(rec.id, "failed", error=f"VM found {vm.power} (switched off outside forkscale)")
                    await self._destroy_vm(vm.moref)
                    self.ledger.transition(rec.id, "gone")
                elif rec.state == "customizing" and vm is not None and vm.status == "ready":
                    self.ledger.transition(rec.id, "ready")
            elif rec.state in ("destroying", "failed"):
                if ours and vm is not None:
                    await self._destroy_vm(vm.moref)
                self.ledger.transition(rec.id, "gone")
        # orphans: tagged for this pool but unknown to the ledger (ledger lost, or a foreign row)
        for vm in inv.vms.values():
            if vm.pool == pool.name and not vm.is_source and vm.clone_id not in known_ids:  # sources: sources.py
                live = self.ledger.get(int(vm.clone_id)) if vm.clone_id and vm.clone_id.isdigit() else None
                if live is not None and live.state in LIVE and live.name == vm.name:
                    continue
                log.warning("removing orphan clone %s (tagged %s=%s, unknown to the ledger)", vm.name, TAG_POOL,
                            vm.pool)
                await self._destroy_vm(vm.moref)
                result.destroyed += 1

    async def _destroy_vm(self, moref: str) -> None:
        try:
            await self.driver.destroy(moref)
        except PermanentError as exc:
            log.warning("could not destroy %s: %s", moref, exc)
