"""`forkscale refresh POOL [VM...]`: return clones to a pristine state, by hand.

A refresh of an instant clone is a replacement (forkscale/fleet/replace.py): the clone is
destroyed and made again from the pool's current image with the same identity (name, IP, MAC,
hostname) and its user disk -- or with a new identity when the pool says `refresh.identity: new`.
It runs as an operation of kind `refresh`, under the pool's `rollout:` settings like a push:
idle clones first, claimed ones when released (or forced), never more than `max_unavailable` out
at once, resumable after a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forkscale.core.errors import SpecError
from forkscale.fleet.engine import Engine
from forkscale.fleet.images import ImageRef, image_for_new
from forkscale.fleet.plan import LIVE
from forkscale.fleet.result import Result
from forkscale.ledger import Operation, PlannedStep, Step
from forkscale.spec import Pool
from forkscale.workloads.operations.kind import Control, Outcome
from forkscale.workloads.operations.rollout import Limits, Tools, plan_batches, pool_count

KIND = "refresh"


def plan_refresh(engine: Engine, pool: Pool, names: Sequence[str]) -> tuple[dict[str, Any], list[PlannedStep]]:
    """Every live clone of the pool (or the ones named), in rollout batches; SpecError for a name that is
    not a live clone of the pool."""
    live = {r.name: r for r in engine.ledger.clones(pool.name, states=list(LIVE))}
    for i, name in enumerate(names):
        if name not in live:
            raise SpecError(f"VM[{i}]", f"{name!r} is not a live clone of pool {pool.name}")
    chosen = [live[n] for n in names] if names else list(live.values())
    limits = Limits.of(pool, pool_count(engine.ledger, pool))
    params = {"vms": list(names), "identity": pool.refresh.identity, **limits.as_params()}
    return params, plan_batches(chosen, limits, pool, "refresh")


class Refresh:
    """The `refresh` operation kind."""

    name = KIND

    def __init__(self, tools: Tools) -> None:
        self.tools = tools

    def concurrency(self, op: Operation) -> int:
        return max(int(op.params.get("batch", 1)), 1)

    def max_failures(self, op: Operation, ran: list[Step]) -> int:
        return self.tools.engine(op.pool).spec.pool(op.pool).rollout.max_failure.of(len(ran))

    async def begin(self, op: Operation) -> None:
        engine = self.tools.engine(op.pool)
        pool = engine.spec.pool(op.pool)
        await engine.reconcile(pool, await engine.driver.inventory(), Result(pool=pool.name, desired=0))

    async def run_step(self, op: Operation, step: Step, control: Control) -> Outcome:
        engine = self.tools.engine(op.pool)
        pool = engine.spec.pool(op.pool)
        image = image_for_new(engine.ledger, pool.name)
        if image is None:
            raise SpecError("pool", f"pool {pool.name} has no image yet; converge it first")
        old = step.detail.get("clone_id")
        return await self.tools.rollout(op.pool).run(op, step, control, pool, ImageRef.of(image),
                                                     lambda r: r.id != old,
                                                     keep_identity=op.params.get("identity", "same") == "same")

    async def stragglers(self, op: Operation) -> list[PlannedStep]:
        return []

    async def finish(self, op: Operation) -> str | None:
        engine = self.tools.engine(op.pool)
        failed = engine.ledger.operations.steps(op.id, ["failed"])
        if failed:
            return f"{len(failed)} clone(s) could not be refreshed (first: {failed[0].target}: {failed[0].error})"
        desired = engine.ledger.desired(op.pool)
        live = len(engine.ledger.live(op.pool))
        if desired is not None and live < desired[0]:  # (a crash between a destroy and a new identity's clone)
            await engine.converge(op.pool, desired[0], set_by=desired[1])
        return None

    async def stopped(self, op: Operation) -> None:
        return None
