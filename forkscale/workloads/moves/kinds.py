"""The `rebalance` and `evacuate` operation kinds: their steps are clone moves (`steps.run_move`);
evacuate ends with the host's per-host source removed once no instant clone uses it.

Each run of an operation (the first, or a resume after a crash or a pause) starts by reading the
inventory, reconciling the pool (a replacement a dead run left half made is adopted or rolled
back) and settling its replicas; then every step finds out what is left to do.
"""

from __future__ import annotations

import logging

from forkscale.fleet.result import Result
from forkscale.ledger import Operation, PlannedStep, Step
from forkscale.workloads.moves.common import Moves
from forkscale.workloads.moves.plan import RETIRE_SOURCE
from forkscale.workloads.moves.steps import run_move
from forkscale.workloads.operations import Control, Outcome, done, waiting

log = logging.getLogger("forkscale.moves")


class MoveKind:
    """An operation whose steps move clones (forkscale.workloads.operations.Kind)."""

    def __init__(self, name: str, moves: Moves) -> None:
        self.name = name
        self.moves = moves

    def concurrency(self, op: Operation) -> int:
        return max(1, int(op.params.get("max_concurrent", 1)))

    def max_failures(self, op: Operation, ran: list[Step]) -> int:
        return max(1, len(ran) // 2)

    async def begin(self, op: Operation) -> None:
        view = await self.moves.view(op, fresh=True)
        engine = self.moves.engine(op.pool)
        engine.avoid_evacuated(view.inv)
        await engine.reconcile(view.pool, view.inv, Result(pool=op.pool, desired=0))
        await view.replicas.sync()

    async def run_step(self, op: Operation, step: Step, control: Control) -> Outcome:
        if step.action == RETIRE_SOURCE:
            return await self._retire_source(op, step)
        return await run_move(self.moves, op, step, control)

    async def _retire_source(self, op: Operation, step: Step) -> Outcome:
        """The evacuated host's source: retiring, then removed once no live instant clone names it."""
        view = await self.moves.view(op)
        mgr = self.moves.engine(op.pool).sources_of(view.pool)
        for row in mgr.rows(("preparing", "ready")):
            if row.vm_name == step.target:
                self.moves.ledger(op.pool).update_source(row.id, state="retiring")
        await mgr.retire()
        left = [r for r in mgr.rows(("retiring",)) if r.vm_name == step.target]
        if left:
            return waiting("its instant clones to leave")
        return done(removed=step.target)

    async def stragglers(self, op: Operation) -> list[PlannedStep]:
        return []

    async def finish(self, op: Operation) -> str | None:
        view = await self.moves.view(op)
        removed = await view.replicas.retire()
        if removed:
            log.info("pool %s: %s removed replica(s) %s", op.pool, self.name, ", ".join(removed))
        self.moves.forget(op)
        failed = self.moves.ledger(op.pool).operations.steps(op.id, ["failed"])
        if failed:
            return f"{len(failed)} move(s) failed (first: {failed[0].target}: {failed[0].error})"
        return None

    async def stopped(self, op: Operation) -> None:
        self.moves.forget(op)
