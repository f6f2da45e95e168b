"""Long pool operations as persisted plans: one small mechanism for every day-2 operation.

How a new kind of operation (rebalance, promote, evacuate...) plugs in:

1. Write a `Kind` (`kind.py`): `name`, `concurrency`, `max_failures`, `begin`, `run_step` (idempotent:
   it is run again after a crash or a resume), `stragglers`, `finish`, `stopped`. Steps return an
   `Outcome` (`done()`, `waiting(why)`, `failed(error)`, `skipped(why)`); a step that waits for
   something may `await control.sleep(s)` (raises `Interrupted` once the operation is paused or
   cancelled: the step goes back to pending).
2. Plan it as `PlannedStep(batch, action, target, detail)`s and record the operation with
   `ledger.operations.start(pool, kind, params, steps, created_by=...)` (one open operation per pool;
   `OperationBusy` otherwise). `describe_plan(steps)` prints the plan for `--dry-run`.
3. Execute it with `OperationRunner(ledger, kinds).run(op_id)` -- in the command that started it,
   and in `serve`, which resumes every running operation it finds (so does re-running the
   command after a crash). `operation_doc` / `progress_line` show progress; `rollout
   pause|resume|cancel` work on any kind (`control.py`).

Clones are replaced with one primitive for every kind: `forkscale.fleet.replace` (same identity,
user disk moved over, capacity kept above the pool's floor).
"""

from forkscale.workloads.operations.kind import (
    DONE,
    FAILED,
    SKIPPED,
    WAITING,
    Control,
    Interrupted,
    Kind,
    Outcome,
    done,
    failed,
    skipped,
    waiting,
)
from forkscale.workloads.operations.runner import Busy, OperationRunner, executor_id, holder_dead
from forkscale.workloads.operations.status import describe_plan, operation_doc, progress_line, step_doc

__all__ = [
    "DONE", "FAILED", "SKIPPED", "WAITING", "Busy", "Control", "Interrupted", "Kind", "OperationRunner", "Outcome",
    "describe_plan", "done", "executor_id", "failed", "holder_dead", "operation_doc", "progress_line", "skipped",
    "step_doc", "waiting",
]
