"""`forkscale promote`: linked clones become full clones in place, as a persisted operation.

`PromoteDisks_Task(unlink=true)` copies into each clone's own disk what it shared with its
replica, so the clone keeps its identity, its VM and its data, and its disk no longer depends on
the replica or the golden snapshot (CloudStack's answer to the shared-base-disk bottleneck). One
step per clone: promote in vCenter, then record the kind change in the ledger (which ends the
clone's dependency on its replica); a replica left with no dependant is removed at once. A step
run again after a crash promotes again (a no-op on a clone with nothing shared) and records it.

`kind_policy` makes `serve` do this by itself: a linked clone older than `linked_max_age_s`, or
claimed when `promote_on_claim`, is promoted (`due`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.ledger import CloneRecord, Operation, PlannedStep, Step
from forkscale.spec import Pool
from forkscale.workloads.moves.common import Moves, fault_text
from forkscale.workloads.operations import Control, Outcome, done, failed, skipped

log = logging.getLogger("forkscale.moves")
NAME = "promote"
MOVABLE = ("ready", "claimed")


def plan_promote(pool: Pool, live: Sequence[CloneRecord], names: Sequence[str] = ()) -> list[PlannedStep]:
    """One step per linked clone of the pool (those named, or every one), in name order."""
    wanted = set(names)
    picked = sorted((r for r in live if r.kind == "linked" and r.state in MOVABLE
                     and (not wanted or r.name in wanted)), key=lambda r: r.name)
    return [PlannedStep(batch=1, action=NAME, target=r.name,
                        detail={"clone": r.id, "datastore": r.datastore, "replica": r.replica_id,
                                **({"claimed_by": r.claimed_by, "when": "promoted in place, its user keeps it"}
                                   if r.claimed_by else {})})
            for r in picked]


def due(pool: Pool, live: Sequence[CloneRecord], now: float | None = None) -> list[str]:
    """Linked clones the pool's kind_policy says to promote now (serve)."""
    policy = pool.kind_policy
    now = time.time() if now is None else now
    out = []
    for r in live:
        if r.kind != "linked" or r.state not in MOVABLE:
            continue
        old = policy.linked_max_age_s is not None and now - r.created_at >= policy.linked_max_age_s
        if old or (policy.promote_on_claim and r.state == "claimed"):
            out.append(r.name)
    return sorted(out)


class Promote:
    """The `promote` operation kind (forkscale.workloads.operations.Kind)."""

    name = NAME

    def __init__(self, moves: Moves) -> None:
        self.moves = moves

    def concurrency(self, op: Operation) -> int:
        return int(op.params.get("max_concurrent", 4))

    def max_failures(self, op: Operation, ran: list[Step]) -> int:
        return max(1, len(ran) // 2)

    async def begin(self, op: Operation) -> None:
        await self.moves.view(op, fresh=True)

    async def run_step(self, op: Operation, step: Step, control: Control) -> Outcome:
        moves = self.moves
        rec = moves.clone(op, step.detail)
        if rec is None:
            return skipped("the clone is gone")
        if rec.kind != "linked":
            return skipped(f"already a {rec.kind} clone")
        if not rec.vm_moref:
            return failed(f"{rec.name} has no VM recorded")
        view = await moves.view(op)
        try:
            engine = moves.engine(op.pool)
            async with engine.budgets.task(view.pool, f"datastore:{rec.datastore}"):
                await engine.driver.promote_disks(rec.vm_moref)
        except (PermanentError, TemporaryError) as exc:
            return failed(fault_text(exc))
        moves.ledger(op.pool).change_kind(rec.id, "full", "promoted", operation=op.id)
        log.info("pool %s: %s promoted to a full clone", op.pool, rec.name)
        removed = await view.replicas.retire() if rec.replica_id is not None else []
        return done(kind="full", **({"replicas_removed": removed} if removed else {}))

    async def stragglers(self, op: Operation) -> list[PlannedStep]:
        return []

    async def finish(self, op: Operation) -> str | None:
        view = await self.moves.view(op)
        await view.replicas.retire()
        self.moves.forget(op)
        failed = self.moves.ledger(op.pool).operations.steps(op.id, ["failed"])
        return f"{len(failed)} clone(s) could not be promoted" if failed else None

    async def stopped(self, op: Operation) -> None:
        self.moves.forget(op)
