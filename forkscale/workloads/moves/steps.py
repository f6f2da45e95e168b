"""One move of one clone, run idempotently (a step is run again after a crash, a pause or a resume).

* `relocate` / `consolidate` / `migrate`: the VM is asked where it is; if it is not yet where the
  step sends it, `RelocateVM_Task` moves it (its disks, consolidated, with a datastore change;
  vMotion with a host change); then the ledger records the clone's new place (and, for a linked
  clone consolidated, its new kind, which ends its dependency on its replica).
* `recreate`: the replace primitive (`forkscale.fleet.replace`, under the pool's `rollout:`
  capacity floor): the clone `destroying` and its name, IP and MAC reserved in one transaction,
  its VM destroyed, a clone made for the reservation on the step's host and datastore (a linked
  clone from the replica there), ready or handed back to its user. Each stage is found from the
  rows on a re-run, so nothing is replaced twice and no identity is lost. A claimed clone waits
  for its release (a rebalance without `--force`; an evacuation with `rollout.claimed:
  on-release`), or is taken (`--force` at once; `rollout.claimed: force` after its user was
  notified and `force_after_s` passed).
"""

from __future__ import annotations

import logging
from typing import Any

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.fleet.images import ImageRef, image_for_new
from forkscale.ledger import CloneRecord, Operation, Step
from forkscale.workloads.moves.common import Moves, PoolView, fault_text
from forkscale.workloads.moves.plan import CONSOLIDATE, MIGRATE, RECREATE, RELOCATE
from forkscale.workloads.operations import Control, Outcome, done, failed, skipped

log = logging.getLogger("forkscale.moves")


async def run_move(moves: Moves, op: Operation, step: Step, control: Control) -> Outcome:
    """Run one clone's move step (see the module docstring)."""
    detail = step.detail
    if detail.get("error"):
        return failed(str(detail["error"]))
    view = await moves.view(op)
    if step.action == RECREATE:
        return await _recreate(moves, op, view, step, control)
    rec = moves.clone(op, detail)
    if rec is None:
        return skipped("the clone is gone")
    if rec.state not in ("ready", "claimed"):
        return skipped(f"the clone is {rec.state}")
    return await _relocate(moves, view, step, rec)


async def _relocate(moves: Moves, view: PoolView, step: Step, rec: CloneRecord) -> Outcome:
    inv, pool = view.inv, view.pool
    to_ds, to_host = str(step.detail["to_datastore"]), str(step.detail["to_host"])
    where = await moves.where(rec, inv)
    if where is None:
        return failed(f"{rec.name}: its VM is not in vCenter")
    if step.action in (RELOCATE, CONSOLIDATE, MIGRATE) and (where.datastore != to_ds or where.host != to_host):
        if to_host and to_host != where.host and not inv.placeable(to_host):
            return failed(f"host {to_host} cannot take a VM now (maintenance, disconnected or evacuated)")
        try:
            engine = moves.engine(pool.name)
            async with engine.budgets.task(pool, f"datastore:{to_ds}", f"host:{to_host}"):
                await engine.driver.relocate(rec.vm_moref or where.moref,
                                            host=inv.hosts[to_host] if to_host != where.host else None,
                                            datastore=inv.datastores[to_ds][0] if to_ds != where.datastore else None)
        except (PermanentError, TemporaryError) as exc:
            return failed(fault_text(exc))
    changes = {k: v for k, v in (("datastore", to_ds), ("host", to_host)) if getattr(rec, k) != v}
    if changes:
        rec = moves.ledger(pool.name).update(rec.id, **changes)
    out: dict[str, Any] = {"at": f"{to_ds}/{to_host}"}
    if step.action == CONSOLIDATE or (rec.kind == "linked" and to_ds != step.detail.get("from_datastore")):
        # a Storage vMotion consolidates a linked clone: it is a full clone now, its replica no longer needed
        moves.ledger(pool.name).change_kind(rec.id, "full", "consolidated", datastore=to_ds)
        out["kind"] = "full"
    if rec.replica_id is not None and out.get("kind") == "full":
        out["replicas_removed"] = await view.replicas.retire()
    log.info("pool %s: %s %s to %s/%s", pool.name, step.action, rec.name, to_ds, to_host)
    return done(**out)


async def _recreate(moves: Moves, op: Operation, view: PoolView, step: Step, control: Control) -> Outcome:
    """The replace primitive (forkscale/fleet/replace.py) under the pool's rollout settings, to the
    step's host and datastore; a rebalance waits for a claimed clone's release unless forced, an
    evacuation follows the pool's `rollout.claimed`."""
    image = image_for_new(moves.ledger(view.pool.name), view.pool.name)
    if image is None:
        return failed(f"pool {view.pool.name} has no image yet; converge it first")
    old = int(step.detail["clone"])
    claimed = None if op.kind == "evacuate" else ("now" if op.params.get("force") else "on-release")
    where = (str(step.detail["to_host"]), str(step.detail["to_datastore"]))
    return await moves.rollout(op.pool).run(op, step, control, view.pool, ImageRef.of(image), lambda r: r.id != old,
                                            where=where, claimed=claimed)


