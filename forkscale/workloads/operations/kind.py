"""What an operation kind (push image, refresh, rebalance, evacuate...) gives the runner.

A kind plans its steps (`PlannedStep`s, written to the ledger in one go by whoever starts the
operation) and executes one step at a time, idempotently: a step is run again after a crash, a
pause or a resume, so `run_step` must find out what is already done (in the ledger and in vCenter)
and do only the rest. The runner (`forkscale.workloads.operations.runner`) does everything else:
batches in order, waiting steps re-checked, the health gate, pause / cancel from any process, the
executor claim and its heartbeat, progress in the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from forkscale.ledger import Operation, PlannedStep, Step

DONE, WAITING, FAILED, SKIPPED = "done", "waiting", "failed", "skipped"


@dataclass(frozen=True)
class Outcome:
    """What one run of a step came to: `done`, `waiting` (for something outside -- a user's
    release; it is asked again later), `failed` (counted by the health gate) or `skipped`."""

    state: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


def done(**detail: Any) -> Outcome:
    return Outcome(DONE, detail)


def waiting(why: str, **detail: Any) -> Outcome:
    return Outcome(WAITING, {"waiting_for": why, **detail})


def failed(error: str, **detail: Any) -> Outcome:
    return Outcome(FAILED, detail, error)


def skipped(why: str, **detail: Any) -> Outcome:
    return Outcome(SKIPPED, {"skipped": why, **detail})


class Interrupted(Exception):
    """The operation stopped running (paused, cancelled, the process stopping) while a step waited;
    the step goes back to `pending` and is run again when the operation runs again."""


class Control(Protocol):
    """What a running step may ask of the runner."""

    async def sleep(self, seconds: float) -> None:
        """Wait, but raise Interrupted as soon as the operation is no longer running."""
        ...

    def note(self, step: Step, **detail: Any) -> None:
        """Record progress on the step (shown by `rollout status`) without changing its state."""
        ...


class Kind(Protocol):
    """One kind of operation. `name` is what the ledger records as the operation's kind."""

    name: str

    def concurrency(self, op: Operation) -> int:
        """How many of a batch's steps run at once."""
        ...

    def max_failures(self, op: Operation, ran: list[Step]) -> int:
        """The health gate: more failed steps than this among the steps `ran` in one round pauses
        the operation with the reason."""
        ...

    async def begin(self, op: Operation) -> None:
        """Before the steps, each time the operation is (re)started: e.g. reconcile after a crash."""
        ...

    async def run_step(self, op: Operation, step: Step, control: Control) -> Outcome:
        """Run one step, idempotently."""
        ...

    async def stragglers(self, op: Operation) -> list[PlannedStep]:
        """Once every step finished: more steps the goal still needs (e.g. clones made on the old
        image meanwhile), added to the plan and run; [] when the goal is reached."""
        ...

    async def finish(self, op: Operation) -> str | None:
        """Every step finished and no stragglers: record the outcome; None when the goal is reached
        (the operation is done), else why not (it is paused with that reason)."""
        ...

    async def stopped(self, op: Operation) -> None:
        """The operation was cancelled or failed (not paused): undo what must not outlive it."""
        ...
