"""Replacing a pool's clones under its `rollout:` settings: the step every rolling operation runs.

Push image and refresh (and rebalance, which moves clones the same way) replace clones one step
each through `forkscale.fleet.replace.Replacer`; this module adds what the pool's `rollout:` asks:

* **Capacity**: a clone is taken out only while `ready + claimed - 1 >= count - max_unavailable`
  (`count`: the pool's last converge target); a step that would go below waits (`no-room`).
* **Batches**: `plan_batches` orders the clones -- idle spares first (oldest ready first), then
  clones being built or released, claimed clones last -- into batches of `min(batch,
  max_unavailable)`.
* **Claimed clones**: `rollout.claimed: on-release` (the default) waits until the user releases
  it (a release with `on_release: refresh` already brings it back on the new image); `force` runs
  the pool's `notify:` hook in the clone once, then replaces it `force_after_s` later, handing the
  replacement (same identity, same user disk) straight back to the user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.fleet.engine import Engine
from forkscale.fleet.images import ImageRef
from forkscale.fleet.replace import BUSY, CLAIMED, DONE, FAILED, GONE, NO_ROOM, Replacer
from forkscale.ledger import CloneRecord, Ledger, Operation, PlannedStep, Step
from forkscale.remote import ssh
from forkscale.spec import Pool, Share
from forkscale.workloads.drain import drain_target, render_command
from forkscale.workloads.operations.kind import Control, Outcome, done, failed, skipped, waiting

log = logging.getLogger("forkscale.rollout")
ORDER = {"ready": 0, "planned": 1, "cloning": 1, "customizing": 1, "draining": 2, "claimed": 3}
#: how often a step that waits for capacity or for a clone being built looks again
RETRY_S = 0.5


@dataclass(frozen=True)
class Limits:
    """A pool's rollout numbers for one operation (counts resolved against the pool's size)."""

    count: int
    max_unavailable: int
    batch: int
    max_failure: Share

    @classmethod
    def of(cls, pool: Pool, count: int) -> Limits:
        r = pool.rollout
        unavailable = r.max_unavailable.of(count, minimum=1)
        return cls(count, unavailable, min(r.batch or unavailable, unavailable), r.max_failure)

    def as_params(self) -> dict[str, Any]:
        return {"count": self.count, "max_unavailable": self.max_unavailable, "batch": self.batch,
                "max_failure": str(self.max_failure)}


def pool_count(ledger: Ledger, pool: Pool) -> int:
    """The size capacity is kept against: the pool's last converge target, else its live clones."""
    desired = ledger.desired(pool.name)
    if desired is not None:
        return desired[0]
    return len(ledger.live(pool.name)) or (pool.count or 0)


def plan_batches(clones: Sequence[CloneRecord], limits: Limits, pool: Pool, action: str, *,
                 first_batch: int = 1) -> list[PlannedStep]:
    """One replace step per clone, idle ones first, claimed ones last, in batches of `limits.batch`."""
    ordered = sorted(clones, key=lambda r: (ORDER.get(r.state, 2), r.ready_at or r.created_at, r.id))
    idle = [r for r in ordered if r.state != "claimed"]
    claimed = [r for r in ordered if r.state == "claimed"]
    steps = []
    for group, first in ((idle, first_batch), (claimed, first_batch + -(-len(idle) // limits.batch))):
        for i, rec in enumerate(group):  # claimed clones in batches of their own, after the idle ones
            detail: dict[str, Any] = {"clone_id": rec.id, "host": rec.host, "image": rec.image_generation}
            if rec.state == "claimed":
                detail["claimed_by"] = rec.claimed_by
                detail["when"] = ("waits for release" if pool.rollout.claimed == "on-release"
                                  else f"forced {pool.rollout.force_after_s:g}s after notify")
            steps.append(PlannedStep(batch=first + i // limits.batch, action=action, target=rec.name, detail=detail))
    return steps


class Tools:
    """What the operation kinds act with, per pool: the engine of its vCenter, and (once per engine)
    its replacer and rollout step. `engine_of(pool)` names the engine; one engine serves them all
    in a command, one per vCenter in `serve`."""

    def __init__(self, engine_of: Callable[[str], Engine] | Engine) -> None:
        self.engine_of = engine_of
        self._steps: dict[int, RolloutStep] = {}

    def engine(self, pool: str) -> Engine:
        return self.engine_of if isinstance(self.engine_of, Engine) else self.engine_of(pool)

    def rollout(self, pool: str) -> RolloutStep:
        engine = self.engine(pool)
        step = self._steps.get(id(engine))
        if step is None or step.engine is not engine:
            step = self._steps[id(engine)] = RolloutStep(engine, Replacer(engine))
        return step


class RolloutStep:
    """Runs one replace step of an operation under the pool's rollout settings."""

    def __init__(self, engine: Engine, replacer: Replacer, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.ledger = engine.ledger
        self.replacer = replacer
        self.clock = clock

    def room(self, pool: Pool, op: Operation) -> Callable[[], bool]:
        """Whether one more clone may go out of service now (ready + claimed stay >= count - max_unavailable)."""
        unavailable = int(op.params.get("max_unavailable", 1))

        def check() -> bool:
            counts = self.ledger.counts(pool.name)
            floor = pool_count(self.ledger, pool) - unavailable
            return counts["ready"] + counts["claimed"] - 1 >= floor

        return check

    async def run(self, op: Operation, step: Step, control: Control, pool: Pool, image: ImageRef,
                  done_if: Callable[[CloneRecord], bool], *, keep_identity: bool = True,
                  where: tuple[str, str] | None = None, claimed: str | None = None) -> Outcome:
        """Replace the step's clone (waiting for room, for a clone being built, for a claimed clone's turn).

        `where`: the (host, datastore) of the replacement (default: where the pool's plan puts one
        more clone). `claimed`: overrides `rollout.claimed` for this step (`now`: take it at once)."""
        room = self.room(pool, op)
        while True:
            take = claimed == "now" or await self._claimed_due(op, step, pool, claimed)
            got = await self.replacer.replace(pool, step.target, image, reason=f"{op.kind} #{op.id}",
                                              done_if=done_if, room=room, keep_identity=keep_identity,
                                              take_claimed=take, host=where[0] if where else None,
                                              datastore=where[1] if where else None)
            if got.state == DONE:
                rec = got.record
                return done(image=image.generation, **({"clone_id_now": rec.id} if rec is not None else {}))
            if got.state == GONE:
                return skipped("the clone left the pool")
            if got.state == FAILED:
                return failed(got.error or "replacement failed")
            if got.state == CLAIMED:
                return await self._claimed(op, step, pool, got.record, claimed)
            if got.state == NO_ROOM:
                control.note(step, waiting_for="capacity")
            elif got.state == BUSY:
                control.note(step, waiting_for=f"{step.target} to settle")
            await control.sleep(RETRY_S)

    async def _claimed_due(self, op: Operation, step: Step, pool: Pool, claimed: str | None = None) -> bool:
        """With `claimed: force`: whether the clone's user was told `force_after_s` ago."""
        if (claimed or pool.rollout.claimed) != "force":
            return False
        notified = step.detail.get("notified_at")
        return isinstance(notified, int | float) and self.clock() >= notified + pool.rollout.force_after_s

    async def _claimed(self, op: Operation, step: Step, pool: Pool, rec: CloneRecord | None,
                       claimed: str | None = None) -> Outcome:
        user = rec.claimed_by if rec is not None else None
        if (claimed or pool.rollout.claimed) == "on-release":
            return waiting("release", claimed_by=user)
        if "notified_at" in step.detail:
            due = float(step.detail["notified_at"]) + pool.rollout.force_after_s
            return waiting("force", claimed_by=user, force_at=due)
        result = await notify(pool, rec) if rec is not None else "no clone"
        now = self.clock()
        return waiting("force", claimed_by=user, notified_at=now, notify=result,
                       force_at=now + pool.rollout.force_after_s)


async def notify(pool: Pool, rec: CloneRecord) -> str:
    """Run the pool's `notify:` command in a claimed clone before it is replaced by force.

    `{name}`, `{hostname}`, `{ip}`, `{pool}` are replaced as in a drain command. Its outcome is
    recorded ("ok" or why not); a failed notice does not stop the forced replacement."""
    hook = pool.notify
    if hook is None:
        return "no notify hook"
    try:
        out = await ssh.run(drain_target(hook, rec), render_command(hook.command, rec), timeout=hook.timeout_s)
    except (PermanentError, TemporaryError) as exc:
        log.warning("pool %s: notify of %s failed: %s", pool.name, rec.name, exc)
        return f"failed: {exc}"
    if out.exit_status != 0:
        log.warning("pool %s: notify of %s exited with status %d", pool.name, rec.name, out.exit_status)
        return f"exit status {out.exit_status}"
    log.info("pool %s: told %s's user (%s) it is replaced in %gs", pool.name, rec.name, rec.claimed_by,
             pool.rollout.force_after_s)
    return "ok"
