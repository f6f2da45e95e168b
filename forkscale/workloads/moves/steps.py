"""One move of one clone, run idempotently (a step is run again after a crash, a pause or a resume).

* `relocate` / `consolidate` / `migrate`: the VM is asked where it is; if it is not yet where the
  step sends it, `RelocateVM_Task` moves it (its disks, consolidated, with a datastore change;
  vMotion with a host change); then the ledger records the clone's new place (and, for a linked
  clone consolidated, its new kind, which ends its dependency on its replica).
* `recreate`: the clone is replaced by one with the same identity on the target, in three
  recorded stages: `Ledger.replace` (the clone `destroying`, its name, IP and MAC reserved for the
  replacement, in one transaction), its VM destroyed and the row `gone`, then the replacement made
  from the reservation (`Engine.make_one`) and made ready (a clone forced off a user is handed
  back to them). A re-run finds the stage it stopped at from the rows: the old clone still live,
  `destroying`, or gone with the reservation still open (the replacement not made, or rolled back
  by the reconcile that starts every run) or held by the replacement.
* A claimed clone's `recreate` waits for its user's release, unless the step may force it (at
  once, or once it has waited `force_after_s`). A clone released meanwhile under
  `on_release: refresh` is the pool's to replace (`draining`): the step is skipped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.ledger import CloneRecord, Operation, Step
from forkscale.workloads.moves.common import Moves, PoolView, fault_text
from forkscale.workloads.moves.plan import CONSOLIDATE, MIGRATE, RECREATE, RELOCATE
from forkscale.workloads.operations import Outcome, done, failed, skipped, waiting

log = logging.getLogger("forkscale.moves")


async def run_move(moves: Moves, op: Operation, step: Step) -> Outcome:
    """Run one clone's move step (see the module docstring)."""
    detail = step.detail
    if detail.get("error"):
        return failed(str(detail["error"]))
    view = await moves.view(op)
    if step.action == RECREATE:
        return await _recreate(moves, view, step)
    rec = moves.clone(detail)
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
            async with moves.engine.budgets.task(pool, f"datastore:{to_ds}", f"host:{to_host}"):
                await moves.driver.relocate(rec.vm_moref or where.moref,
                                            host=inv.hosts[to_host] if to_host != where.host else None,
                                            datastore=inv.datastores[to_ds][0] if to_ds != where.datastore else None)
        except (PermanentError, TemporaryError) as exc:
            return failed(fault_text(exc))
    changes = {k: v for k, v in (("datastore", to_ds), ("host", to_host)) if getattr(rec, k) != v}
    if changes:
        rec = moves.ledger.update(rec.id, **changes)
    out: dict[str, Any] = {"at": f"{to_ds}/{to_host}"}
    if step.action == CONSOLIDATE or (rec.kind == "linked" and to_ds != step.detail.get("from_datastore")):
        # a Storage vMotion consolidates a linked clone: it is a full clone now, its replica no longer needed
        moves.ledger.change_kind(rec.id, "full", "consolidated", datastore=to_ds)
        out["kind"] = "full"
    if rec.replica_id is not None and out.get("kind") == "full":
        out["replicas_removed"] = await view.replicas.retire()
    log.info("pool %s: %s %s to %s/%s", pool.name, step.action, rec.name, to_ds, to_host)
    return done(**out)


async def _recreate(moves: Moves, view: PoolView, step: Step) -> Outcome:
    ledger = moves.ledger
    name = step.target
    old = ledger.get(int(step.detail["clone"]))
    if old is not None and old.state != "gone":
        if old.state == "claimed":
            hold = _claimed(step)
            if hold is not None:
                return hold
        elif old.state not in ("ready", "destroying"):
            return skipped("released: the pool replaces it" if old.state == "draining" else f"the clone is {old.state}")
        if old.state in ("ready", "claimed"):
            old = ledger.replace(old.id, str(step.detail.get("why", "move")),
                                 claimed_by=old.claimed_by if old.state == "claimed" else None)
        if old.vm_moref and not await moves.engine.reconcile.destroy_vm(old.vm_moref):
            return failed(f"{name}: could not remove the old VM {old.vm_moref}")
        ledger.transition(old.id, "gone")
    holder = ledger.by_name(name)
    if holder is not None and holder.state != "gone" and (old is None or holder.id != old.id):
        return await _ready(moves, view, step, holder)  # made by an earlier run of this step
    if ledger.reservations.get(name) is None:
        return skipped("the clone is gone and its identity was given up")
    to_ds, to_host = str(step.detail["to_datastore"]), str(step.detail["to_host"])
    made, result = await moves.engine.make_one(view.pool.name, view.inv, to_host, to_ds, reservation=name,
                                               replicas=view.replicas)
    if made is None or made.state not in ("ready", "claimed"):
        return failed(f"{name}: the replacement did not become ready: {'; '.join(result.errors[-2:]) or 'no reason'}")
    return _moved(step, made)


async def _ready(moves: Moves, view: PoolView, step: Step, new: CloneRecord) -> Outcome:
    """The replacement exists (found on a re-run): see it through to ready."""
    if new.state == "customizing":
        if not await moves.engine._finish(view.pool, new, _result(view)):  # noqa: SLF001 - the engine's own path
            return failed(f"{new.name}: the replacement did not become ready")
        new = moves.ledger.get(new.id) or new
    if new.state not in ("ready", "claimed"):
        return failed(f"{new.name}: the replacement is {new.state}")
    held = moves.ledger.reservations.get(new.name)
    if held is not None:
        if held.claimed_by and new.state == "ready":
            new = moves.ledger.transition(new.id, "claimed", claimed_by=held.claimed_by)
        moves.ledger.reservations.settle(new.name)
    return _moved(step, new)


def _moved(step: Step, new: CloneRecord) -> Outcome:
    return done(replacement=new.id, at=f"{new.datastore}/{new.host}", kind=new.kind)


def _claimed(step: Step) -> Outcome | None:
    """None when the claimed clone may be taken from its user now; else why the step waits."""
    after = step.detail.get("force_after_s")
    if after is None:
        return waiting("release", claimed_by=step.detail.get("claimed_by"))
    since = float(step.detail.get("waiting_since") or time.time())
    if time.time() - since >= float(after):
        return None
    return waiting(f"release, or {float(after):g}s", claimed_by=step.detail.get("claimed_by"), waiting_since=since)


def _result(view: PoolView) -> Any:
    from forkscale.fleet.result import Result

    return Result(pool=view.pool.name, desired=0)
