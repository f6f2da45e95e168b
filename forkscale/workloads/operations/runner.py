"""Execute a persisted operation: its batches in order, idempotent steps, resumable from any point.

One loop for every kind of long operation (push image, refresh, rebalance, evacuate):

1. **Claim** the operation (`Operations.claim`: one executor at a time, across processes), and
   keep the claim alive with a heartbeat. A claim held by a process that died on this machine is
   taken over at once; one held elsewhere once its heartbeat is `ttl_s` old.
2. `kind.begin(op)` (e.g. reconcile what a crash left half done).
3. **Rounds.** Each round runs the lowest batch that still has pending (or interrupted) steps,
   together with every `waiting` step (asked again: a user may have released their desktop), at
   most `kind.concurrency(op)` at once. Each step is marked `running` before it starts and
   `done` / `waiting` / `failed` / `skipped` when it ends, so a restart knows exactly where the
   plan stood; a step found `running` after a crash is simply run again (steps are idempotent).
4. **Health gate.** More than `kind.max_failures(op, ran)` failed steps in a round pause the
   operation with the reason (`rollout status` shows it; `resume` retries the failed steps).
5. **Pause / cancel** come through the ledger, from any process (`rollout pause|cancel`, the API):
   no new step starts once the operation is not `running`; steps in flight finish, and a step
   that is only waiting (for capacity, for a release) is interrupted and put back to `pending`.
6. When no step is left, `kind.stragglers(op)` may add more (work that appeared meanwhile);
   else `kind.finish(op)` and the operation is `done` (or paused, with the reason `finish` gives
   why the goal is not reached).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from forkscale.ledger import Ledger, LedgerError, Operation, Step
from forkscale.ledger.lease import pid_gone
from forkscale.workloads.operations.kind import FAILED, Interrupted, Kind, Outcome

log = logging.getLogger("forkscale.operations")

#: A claim whose heartbeat is older than this may be taken over by another process.
DEFAULT_TTL_S = 15.0


def executor_id() -> str:
    """`host:pid:random` -- who executes an operation (recorded in the ledger)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_dead(executor: str | None) -> bool:
    """Whether the recorded executor is a process of this machine that no longer exists."""
    if not executor:
        return False
    host, _, rest = executor.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and pid_gone(pid)


class Busy(Exception):
    """Another live process executes this operation."""

    def __init__(self, op: Operation) -> None:
        super().__init__(f"operation {op.id} ({op.kind} of pool {op.pool}) is being executed by {op.executor}")
        self.op = op


class _Control:
    """The runner's side of `kind.Control` for one operation."""

    def __init__(self, runner: OperationRunner, op_id: int) -> None:
        self.runner = runner
        self.op_id = op_id

    async def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if not self.runner.still_running(self.op_id):
                raise Interrupted()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, self.runner.poll_s))

    def note(self, step: Step, **detail: Any) -> None:
        self.runner.ledger.operations.mark(step.id, "running", detail=detail)


class OperationRunner:
    """Runs operations of the kinds it is given, recording everything in the ledger."""

    def __init__(self, ledger: Ledger, kinds: Mapping[str, Kind], *, executor: str | None = None,
                 ttl_s: float = DEFAULT_TTL_S, poll_s: float = 1.0,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.ledger = ledger
        self.kinds = dict(kinds)
        self.executor = executor or executor_id()
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.stopping = stopping

    def still_running(self, op_id: int) -> bool:
        op = self.ledger.operations.get(op_id)
        return op is not None and op.state == "running" and not self.stopping()

    def claim(self, op: Operation) -> bool:
        take_over = op.executor if holder_dead(op.executor) else None
        return self.ledger.operations.claim(op.id, self.executor, self.ttl_s, take_over=take_over)

    async def run(self, op_id: int, *, wait_schedule: bool = True) -> Operation:
        """Execute the operation until it is done, paused, cancelled or failed; its last state.

        Busy when another live process executes it. With `wait_schedule` False, an operation
        scheduled for later (`not_before`) is left for then (returned as it is)."""
        ops = self.ledger.operations
        op = ops.get(op_id)
        if op is None:
            raise LedgerError(f"no operation with id {op_id}")
        if not op.open:
            return op
        kind = self.kinds.get(op.kind)
        if kind is None:
            raise LedgerError(f"operation {op.id} is a {op.kind!r}, which this controller cannot run "
                              f"(kinds: {', '.join(sorted(self.kinds))})")
        if not self.claim(op):
            raise Busy(ops.get(op_id) or op)
        beat = asyncio.create_task(self._heartbeat(op_id), name=f"operation:{op_id}:heartbeat")
        try:
            return await self._execute(kind, op_id, wait_schedule)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            ops.unclaim(op_id, self.executor)

    async def _heartbeat(self, op_id: int) -> None:
        while True:
            await asyncio.sleep(max(0.2, self.ttl_s / 3))
            try:
                if not self.ledger.operations.claim(op_id, self.executor, self.ttl_s):
                    log.warning("operation %d: another process took it over", op_id)
                    return
            except LedgerError as exc:
                log.warning("operation %d: heartbeat failed: %s", op_id, exc)

    async def _execute(self, kind: Kind, op_id: int, wait_schedule: bool) -> Operation:
        ops = self.ledger.operations
        op = self._reload(op_id)
        while op.state == "running" and op.not_before is not None and time.time() < op.not_before:
            if not wait_schedule or self.stopping():
                return op
            await asyncio.sleep(min(self.poll_s, op.not_before - time.time()))
            op = self._reload(op_id)
        if op.state != "running":
            return op
        await kind.begin(op)
        while True:
            op = self._reload(op_id)
            if op.state != "running" or self.stopping():
                return op
            steps = ops.steps(op_id)
            todo = _round(steps)
            if todo:
                ran = await self._round(kind, op, todo)
                failed = [s for s in ran if s.state == FAILED]
                gate = kind.max_failures(op, [s for s in ran if s.state != "waiting"])
                if len(failed) > gate:
                    reason = (f"health gate: {len(failed)} of {len(ran)} step(s) failed (max_failure {gate}): "
                              f"{failed[0].target}: {failed[0].error}")
                    log.warning("operation %d (%s of pool %s) paused: %s", op.id, op.kind, op.pool, reason)
                    return ops.set_state(op_id, "paused", reason, expect=("running",))
                if all(s.state == "waiting" for s in ran) and len(ran) == len(todo):
                    await asyncio.sleep(self.poll_s)  # only waiting steps, none moved: ask again later
                continue
            more = await kind.stragglers(op)
            if more:
                top = max((s.batch for s in steps), default=0)
                ops.add_steps(op_id, [type(s)(batch=top + 1 + s.batch, action=s.action, target=s.target,
                                              detail=s.detail) for s in more])
                continue
            unmet = await kind.finish(op)
            if unmet is not None:
                log.warning("operation %d (%s of pool %s) paused: %s", op.id, op.kind, op.pool, unmet)
                return ops.set_state(op_id, "paused", unmet, expect=("running",))
            log.info("operation %d (%s of pool %s) done", op.id, op.kind, op.pool)
            return ops.set_state(op_id, "done", expect=("running",))

    async def _round(self, kind: Kind, op: Operation, todo: list[Step]) -> list[Step]:
        limit = asyncio.Semaphore(max(1, kind.concurrency(op)))
        control = _Control(self, op.id)

        async def one(step: Step) -> Step | None:
            async with limit:
                if not self.still_running(op.id):
                    return None
                asked_again = step.state == "waiting"  # (not rewritten each time it is asked again)
                marked = step if asked_again else self.ledger.operations.mark(step.id, "running")
                try:
                    outcome = await kind.run_step(op, marked, control)
                except Interrupted:
                    self.ledger.operations.mark(step.id, "waiting" if asked_again else "pending")
                    return None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug or an unexpected fault: the step failed, say why
                    log.exception("operation %d: step %s %s failed", op.id, step.action, step.target)
                    outcome = Outcome(FAILED, {}, f"{type(exc).__name__}: {exc}")
                current = self.ledger.operations.step(step.id)
                if (current is not None and current.state == outcome.state == "waiting"
                        and all(current.detail.get(k) == v for k, v in outcome.detail.items())):
                    return current
                return self.ledger.operations.mark(step.id, outcome.state, error=outcome.error,
                                                   detail=outcome.detail)

        results = await asyncio.gather(*(one(s) for s in todo))
        return [r for r in results if r is not None]

    def _reload(self, op_id: int) -> Operation:
        op = self.ledger.operations.get(op_id)
        if op is None:
            raise LedgerError(f"operation {op_id} vanished from the ledger")
        return op

    async def stop(self, op_id: int, state: str, reason: str) -> Operation:
        """Cancel or fail an open operation (from any process) and let its kind clean up."""
        op = self.ledger.operations.set_state(op_id, state, reason, expect=("running", "paused"))
        kind = self.kinds.get(op.kind)
        if kind is not None:
            await kind.stopped(op)
        return op


def _round(steps: list[Step]) -> list[Step]:
    """This round's steps: the lowest batch with unfinished work, plus every waiting step."""
    unfinished = [s for s in steps if s.state in ("pending", "running")]
    first = min((s.batch for s in unfinished), default=None)
    batch = [s for s in unfinished if s.batch == first]
    return batch + [s for s in steps if s.state == "waiting" and s not in batch]
