"""Push a new image to a live pool (Horizon's push image, View Composer's recompose), and roll it back.

`plan_push` records a new image generation (`priming`) and an operation of kind `push-image`:

* **batch 0, prime**: one step per target host -- a frozen source of the new image on it
  (`SourceManager.ensure`), before any clone is touched. A host that cannot be primed fails its
  step: the push pauses with the reason (`resume` tries it again), unless `allow_partial`: then
  the host keeps the old image, is reported, and new clones go to the primed hosts.
* **batches 1..n, replace**: every clone not on the new image, idle ones first, claimed ones last
  (forkscale/workloads/operations/rollout.py). From the first replace step on the operation's
  phase is `roll`: every new clone of the pool (a scale-up, a refresh on logoff) is made from the
  new image, so nothing is replaced twice.
* **finish**: the new image becomes active and the old one retired (its sources kept for
  `rollout.keep_previous_s`, then removed once unused); clones made on the old image meanwhile are
  added as stragglers first.

Cancel leaves the pool mixed and consistent: the new image is marked failed (its sources go once
no clone uses them), new clones come from the active image again. `rollback` pushes the previous
active image back: during a push (paused by the health gate, say) it cancels it and moves the
clones already replaced back to the active image; after one, it pushes the image retired by it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from forkscale.core.errors import PermanentError, SpecError, TemporaryError
from forkscale.fleet.engine import Engine
from forkscale.fleet.images import ROLL_PHASE, ImageRef, golden_vm, snapshot_moref
from forkscale.fleet.plan import LIVE
from forkscale.fleet.result import Result
from forkscale.fleet.sources import SourceManager
from forkscale.ledger import ImageRecord, LedgerError, Operation, PlannedStep, Step
from forkscale.spec import Pool
from forkscale.workloads.operations.kind import Control, Outcome, done, failed, skipped
from forkscale.workloads.operations.rollout import Limits, Tools, plan_batches, pool_count

log = logging.getLogger("forkscale.push")
KIND = "push-image"


class AlreadyThere(Exception):
    """The pool already runs the image asked for (a push re-run after it completed): nothing to do."""


@dataclass
class PushPlan:
    pool: str
    image: dict[str, Any]  # what the new image will be (golden, snapshot, generation)
    params: dict[str, Any]
    steps: list[PlannedStep]


async def plan_push(engine: Engine, pool: Pool, *, snapshot: str | None, source: str | None,
                    allow_partial: bool = False, rollback: bool = False) -> tuple[PushPlan, ImageRecord | None]:
    """What a push would do, checked against vCenter; nothing is written. The image to push back
    (rollback) is returned as the record to re-target; a new image is described in `plan.image`."""
    index = [p.name for p in engine.spec.pools].index(pool.name)
    inv = await engine.driver.inventory()
    await engine.image_source(pool, inv, index)  # (starts the image history of a pool that has none)
    active = engine.ledger.images.active(pool.name)
    assert active is not None  # image_source started the history
    rungs, _ = engine.rungs(pool, index)
    instant = "instant" in rungs
    if instant and pool.freeze == "none":
        raise SpecError(f"pools[{index}].freeze", "pushing an image to instant clones makes a frozen source of it on "
                        "every host, which needs freeze: guestops or ssh (or running); none expects a golden VM "
                        "frozen by hand")
    back = _rollback_target(engine, pool) if rollback else None
    if back is not None:
        golden, snap, snap_name = golden_vm(inv, back.golden, "--source"), back.snapshot_moref, back.snapshot
        generation = back.generation
    else:
        golden = golden_vm(inv, source or active.golden, "--source")
        if snapshot is None:
            raise SpecError("--snapshot", "required: the golden VM's snapshot holding the new image")
        snap, snap_name = await snapshot_moref(engine.driver, golden, snapshot, "--snapshot"), snapshot
        if golden.name == active.golden and snap == active.snapshot_moref and engine.ledger.images.target(pool.name) is None:
            raise AlreadyThere(f"pool {pool.name} already runs {active.label()}; nothing to push")
        generation = (max((i.generation for i in engine.ledger.images.history(pool.name)), default=0) + 1)
    hosts = SourceManager(engine.driver, engine.ledger, pool, index).target_hosts(inv, golden) if instant else []
    live = [r for r in engine.ledger.clones(pool.name, states=list(LIVE)) if r.image_generation != generation]
    limits = Limits.of(pool, pool_count(engine.ledger, pool))
    steps = [PlannedStep(batch=0, action="prime", target=h, detail={"host": h}) for h in hosts]
    steps += plan_batches(live, limits, pool, "replace")
    params = {"image_generation": generation, "from_generation": active.generation, "golden": golden.name,
              "snapshot": snap_name, "snapshot_moref": snap, "allow_partial": allow_partial,
              "rollback": rollback, **limits.as_params()}
    return PushPlan(pool.name, {"generation": generation, "golden": golden.name, "snapshot": snap_name}, params,
                    steps), back


def _rollback_target(engine: Engine, pool: Pool) -> ImageRecord:
    """During a push: the active image; after one: the image it retired."""
    images = engine.ledger.images
    if images.target(pool.name) is not None:
        active = images.active(pool.name)
        assert active is not None
        return active
    previous = images.previous(pool.name)
    if previous is None:
        raise SpecError("rollback", f"pool {pool.name} has no previous image to go back to")
    return previous


class PushImage:
    """The `push-image` operation kind."""

    name = KIND

    def __init__(self, tools: Tools) -> None:
        self.tools = tools

    def _engine(self, op: Operation) -> Engine:
        return self.tools.engine(op.pool)

    def _pool(self, op: Operation) -> Pool:
        return self._engine(op).spec.pool(op.pool)

    def _image(self, op: Operation) -> ImageRef:
        return ImageRef(int(op.params["image_generation"]), str(op.params["golden"]), op.params.get("snapshot_moref"))

    def concurrency(self, op: Operation) -> int:
        return max(int(op.params.get("batch", 1)), 1)

    def max_failures(self, op: Operation, ran: list[Step]) -> int:
        if any(s.action == "prime" for s in ran):
            return 0  # a host that cannot be primed stops the push (unless allow_partial: then it is skipped)
        return self._pool(op).rollout.max_failure.of(len(ran))

    async def begin(self, op: Operation) -> None:
        """After a crash: the ledger made to agree with vCenter before any step runs again."""
        pool, engine = self._pool(op), self._engine(op)
        await engine.reconcile(pool, await engine.driver.inventory(), Result(pool=pool.name, desired=0))

    async def run_step(self, op: Operation, step: Step, control: Control) -> Outcome:
        if step.action == "prime":
            return await self._prime(op, step)
        if op.phase != ROLL_PHASE:
            self._engine(op).ledger.operations.set_phase(op.id, ROLL_PHASE)
            log.info("pool %s: image g%s primed; rolling clones onto it", op.pool, op.params["image_generation"])
        gen = int(op.params["image_generation"])
        return await self.tools.rollout(op.pool).run(op, step, control, self._pool(op), self._image(op),
                                                     lambda r: r.image_generation == gen)

    async def _prime(self, op: Operation, step: Step) -> Outcome:
        pool, engine = self._pool(op), self._engine(op)
        index = [p.name for p in engine.spec.pools].index(pool.name)
        inv = await engine.driver.inventory()
        golden, image = await engine.image_source(pool, inv, index, self._image(op))
        mgr = engine.sources(pool, index, image)
        mgr.sync(inv)
        folder = await engine.folder(pool, inv)
        reports = await mgr.ensure(inv, inv.vms[golden.moref], folder, [step.target])
        report = next((r for r in reports if r.host == step.target), None)
        if report is not None and report.action not in ("failed", "unavailable"):
            return done(source=report.name, action=report.action, image=image.generation)
        why = (report.error if report is not None else None) or "no source was made"
        if op.params.get("allow_partial"):
            log.warning("pool %s: host %s keeps the old image: %s", pool.name, step.target, why)
            return skipped(f"priming failed, the host keeps the old image: {why}")
        return failed(f"priming {step.target} failed: {why}")

    async def stragglers(self, op: Operation) -> list[PlannedStep]:
        """Clones still not on the image (made on the old one meanwhile), and identities to make again."""
        gen = int(op.params["image_generation"])
        ledger = self._engine(op).ledger
        had = {s.target for s in ledger.operations.steps(op.id, ["failed", "pending", "running", "waiting"])}
        live = [r for r in ledger.clones(op.pool, states=list(LIVE))
                if r.image_generation != gen and r.name not in had]
        pool = self._pool(op)
        limits = Limits(int(op.params["count"]), int(op.params["max_unavailable"]), int(op.params["batch"]),
                        pool.rollout.max_failure)
        steps = plan_batches(live, limits, pool, "replace", first_batch=0)
        taken = {s.target for s in steps} | had
        steps += [PlannedStep(batch=0, action="replace", target=r.name, detail={"reserved": True})
                  for r in ledger.reservations.open(op.pool) if r.name not in taken]
        return steps

    async def finish(self, op: Operation) -> str | None:
        ledger = self._engine(op).ledger
        failed_steps = ledger.operations.steps(op.id, ["failed"])
        if failed_steps:
            return (f"{len(failed_steps)} clone(s) could not be moved to image g{op.params['image_generation']} "
                    f"(first: {failed_steps[0].target}: {failed_steps[0].error}); resume to retry, or rollback")
        gen = int(op.params["image_generation"])
        images = ledger.images
        images.activate(op.pool, gen)
        if op.params.get("rollback") and int(op.params["from_generation"]) != gen:
            images.fail(op.pool, int(op.params["from_generation"]), f"rolled back by operation {op.id}")
        ledger.operations.set_phase(op.id, "done")
        await self._retire(op)
        log.info("pool %s: image g%d is active", op.pool, gen)
        return None

    async def stopped(self, op: Operation) -> None:
        """Cancelled or failed: the image being pushed is given up (unless it is the active one)."""
        gen = int(op.params["image_generation"])
        ledger = self._engine(op).ledger
        img = ledger.images.get(op.pool, gen)
        if img is not None and img.state == "priming":
            ledger.images.fail(op.pool, gen, f"operation {op.id} {op.state}: {op.reason or ''}".strip())
        try:
            await self._retire(op)
        except (LedgerError, PermanentError, TemporaryError) as exc:  # (the next converge retires them)
            log.warning("pool %s: sources of image g%d stay for now: %s", op.pool, gen, exc)

    async def _retire(self, op: Operation) -> None:
        """Sources no image needs any more, and no clone uses, go now (the rest after keep_previous_s)."""
        pool, engine = self._pool(op), self._engine(op)
        index = [p.name for p in engine.spec.pools].index(pool.name)
        removed = await engine.sources(pool, index, None).retire()
        if removed:
            log.info("pool %s: removed source(s) %s", pool.name, ", ".join(removed))


def start_push(engine: Engine, plan: PushPlan, back: ImageRecord | None, *, created_by: str,
               not_before: float | None = None) -> Operation:
    """Record the image and the operation (in this order: a crash between leaves a `priming` image with
    no operation, which the next push or rollback gives up first)."""
    ledger = engine.ledger
    pool = plan.pool
    stale = ledger.images.target(pool)
    if stale is not None and ledger.operations.open(pool) is None:
        ledger.images.fail(pool, stale.generation, "its push was never recorded")
    if back is not None:
        if back.state != "active":
            ledger.images.retarget(pool, back.generation, f"rollback by {created_by}")
    else:
        img = ledger.images.add(pool, plan.image["golden"], plan.image["snapshot"], plan.params["snapshot_moref"],
                                created_by)
        if img.generation != plan.params["image_generation"]:
            plan.params["image_generation"] = img.generation
    return ledger.operations.start(pool, KIND, plan.params, plan.steps, created_by=created_by,
                                   phase="prime", not_before=not_before)
