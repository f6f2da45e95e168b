"""Starting and steering operations: push image, rollback, refresh, and pause / resume / cancel of any
operation. Shared by the commands (`forkscale push-image`, `rollout`, `rollback`, `refresh`) and the
HTTP API; each call records what it decided in the ledger, where the executing process sees it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forkscale.core.errors import SpecError
from forkscale.fleet.engine import Engine
from forkscale.fleet.plan import LIVE
from forkscale.ledger import Ledger, LedgerError, Operation, OperationBusy, PlannedStep
from forkscale.workloads.operations.pushimage import KIND as PUSH
from forkscale.workloads.operations.pushimage import AlreadyThere, plan_push, start_push
from forkscale.workloads.operations.refresh import KIND as REFRESH
from forkscale.workloads.operations.refresh import plan_refresh
from forkscale.workloads.operations.runner import OperationRunner
from forkscale.workloads.operations.status import describe_plan, operation_doc


@dataclass
class Started:
    """An operation recorded (or, with a dry run, only planned)."""

    pool: str
    kind: str
    params: dict[str, Any]
    steps: list[PlannedStep]
    op: Operation | None = None  # None: dry run, or nothing to do
    resumed: bool = False  # the same push was already open: it is resumed, not started again
    nothing: str | None = None  # why there is nothing to do (the pool runs that image already)

    def plan_lines(self) -> list[str]:
        what = self.kind
        if self.kind == PUSH:
            what += (f" of image g{self.params['image_generation']} ({self.params['golden']} @ "
                     f"{self.params['snapshot'] or self.params['snapshot_moref']})")
        head = (f"pool {self.pool}: {what}: {len(self.steps)} step(s), max_unavailable "
                f"{self.params.get('max_unavailable')}, batch {self.params.get('batch')}")
        return [head, *describe_plan(self.steps)]


async def push(engine: Engine, pool_name: str, *, snapshot: str | None, source: str | None, created_by: str,
               allow_partial: bool = False, at: float | None = None, dry_run: bool = False) -> Started:
    """Plan a push of a new image (checked against vCenter); record it unless `dry_run`. The same push
    already open is resumed instead (a re-run after a crash)."""
    pool = engine.spec.pool(pool_name)
    ledger = engine.ledger
    open_op = ledger.operations.open(pool.name)
    if open_op is not None and open_op.kind == PUSH and open_op.params.get("snapshot") == snapshot \
            and open_op.params.get("golden") == (source or open_op.params.get("golden")):
        if open_op.state == "paused" and not dry_run:
            open_op = ledger.operations.set_state(open_op.id, "running", f"resumed by {created_by}")
        return Started(pool.name, PUSH, open_op.params, [_planned(s) for s in ledger.operations.steps(open_op.id)],
                       open_op, resumed=True)
    try:
        plan, back = await plan_push(engine, pool, snapshot=snapshot, source=source, allow_partial=allow_partial)
    except AlreadyThere as exc:
        return Started(pool.name, PUSH, {}, [], nothing=str(exc))
    if open_op is not None:
        raise OperationBusy(pool.name, open_op)
    if dry_run:
        return Started(pool.name, PUSH, plan.params, plan.steps)
    op = start_push(engine, plan, back, created_by=created_by, not_before=at)
    return Started(pool.name, PUSH, op.params, plan.steps, op)


async def rollback(engine: Engine, runner: OperationRunner, pool_name: str, *, created_by: str,
                   dry_run: bool = False) -> Started:
    """Push the previous active image back: cancel a push in progress and move its clones back to the
    active image, or push the image the last completed push retired."""
    pool = engine.spec.pool(pool_name)
    ledger = engine.ledger
    open_op = ledger.operations.open(pool.name)
    if open_op is not None and open_op.kind != PUSH:
        raise SpecError("pool", f"pool {pool.name} is running a {open_op.kind} (operation {open_op.id}); "
                                "cancel it first (forkscale rollout cancel)")
    plan, back = await plan_push(engine, pool, snapshot=None, source=None, rollback=True)
    if dry_run:
        return Started(pool.name, PUSH, plan.params, plan.steps)
    if open_op is not None:
        await runner.stop(open_op.id, "cancelled", f"rolled back by {created_by}")
    op = start_push(engine, plan, back, created_by=created_by)
    return Started(pool.name, PUSH, op.params, plan.steps, op)


async def refresh(engine: Engine, pool_name: str, names: Sequence[str], *, created_by: str,
                  dry_run: bool = False) -> Started:
    pool = engine.spec.pool(pool_name)
    params, steps = plan_refresh(engine, pool, names)
    if dry_run:
        return Started(pool.name, REFRESH, params, steps)
    open_op = engine.ledger.operations.open(pool.name)
    if open_op is not None:
        raise OperationBusy(pool.name, open_op)
    op = engine.ledger.operations.start(pool.name, REFRESH, params, steps, created_by=created_by)
    return Started(pool.name, REFRESH, params, steps, op)


def pause(ledger: Ledger, pool: str, by: str) -> Operation:
    op = _open(ledger, pool)
    if op.state == "paused":
        return op
    return ledger.operations.set_state(op.id, "paused", f"paused by {by}", expect=("running",))


def resume(ledger: Ledger, pool: str, by: str) -> Operation:
    op = _open(ledger, pool)
    if op.state == "running":
        return op
    return ledger.operations.set_state(op.id, "running", f"resumed by {by}", expect=("paused",))


async def cancel(runner: OperationRunner, pool: str, by: str) -> Operation:
    op = _open(runner.ledger, pool)
    return await runner.stop(op.id, "cancelled", f"cancelled by {by}")


def rollout_doc(ledger: Ledger, pool: str, *, steps: bool = False) -> dict[str, Any]:
    """The pool's open operation (else its last one), its images and clones per image."""
    op = ledger.operations.open(pool) or ledger.operations.last(pool)
    return {"pool": pool, "operation": None if op is None else operation_doc(ledger, op, steps=steps),
            **images_doc(ledger, pool)}


def images_doc(ledger: Ledger, pool: str) -> dict[str, Any]:
    """Current (active) and target image, the history, and live clones per image generation."""
    images = ledger.images
    active, target = images.active(pool), images.target(pool)
    per: dict[str, int] = {}
    for rec in ledger.clones(pool, states=list(LIVE)):
        key = str(rec.image_generation) if rec.image_generation is not None else "unknown"
        per[key] = per.get(key, 0) + 1
    return {"image": None if active is None else active.as_dict(),
            "target_image": None if target is None else target.as_dict(),
            "images": [i.as_dict() for i in images.history(pool)][-10:],
            "clones_per_image": per}


def parse_at(text: str | None) -> float | None:
    """`--at`: an ISO 8601 time (`2024-06-01T02:00`, local unless it carries an offset) or `+SECONDS`."""
    if text is None:
        return None
    from datetime import datetime

    if text.startswith("+") and text[1:].replace(".", "", 1).isdigit():
        return time.time() + float(text[1:])
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise SpecError("--at", f"{text!r} is not a time: use ISO 8601 (2024-06-01T02:00) or +SECONDS") from None


def _open(ledger: Ledger, pool: str) -> Operation:
    op = ledger.operations.open(pool)
    if op is None:
        last = ledger.operations.last(pool)
        tail = f" (the last one, {last.kind} #{last.id}, is {last.state})" if last is not None else ""
        raise LedgerError(f"pool {pool} has no running or paused operation{tail}")
    return op


def _planned(step: Any) -> PlannedStep:
    return PlannedStep(batch=step.batch, action=step.action, target=step.target, detail=step.detail)
