"""How an operation looks to a user: its plan as lines (`--dry-run`), its progress as a document."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from forkscale.ledger import Ledger, Operation, Step

#: a step document lists at most this many steps (status stays small on a 10,000-clone pool)
MAX_LISTED = 200


class _StepLike(Protocol):
    @property
    def batch(self) -> int: ...

    @property
    def action(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def detail(self) -> Mapping[str, Any]: ...


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def describe_plan(steps: Sequence[_StepLike]) -> list[str]:
    """The plan as it will run: one line per batch, naming each step's target and what it waits for."""
    batches: dict[int, list[_StepLike]] = defaultdict(list)
    for step in steps:
        batches[step.batch].append(step)
    lines = []
    for number in sorted(batches):
        group = batches[number]
        actions = sorted({s.action for s in group})
        targets = ", ".join(_target(s) for s in group)
        lines.append(f"  batch {number}: {'/'.join(actions)} {len(group)}: {targets}")
    return lines


def _target(step: _StepLike) -> str:
    notes = []
    if step.detail.get("claimed_by"):
        notes.append(f"claimed by {step.detail['claimed_by']}, {step.detail.get('when', 'waits for release')}")
    if step.detail.get("host") and step.action != "prime":
        notes.append(str(step.detail["host"]))
    return step.target + (f" ({'; '.join(notes)})" if notes else "")


def step_doc(step: Step) -> dict[str, Any]:
    return {"batch": step.batch, "action": step.action, "target": step.target, "state": step.state,
            "error": step.error, "detail": step.detail, "started_at": _iso(step.started_at),
            "updated_at": _iso(step.updated_at)}


def operation_doc(ledger: Ledger, op: Operation, *, steps: bool = True) -> dict[str, Any]:
    """An operation's state and progress: counts per step state, the current batch, what waits."""
    ops = ledger.operations
    all_steps = ops.steps(op.id)
    counts = ops.progress(op.id)
    finished = counts["done"] + counts["skipped"]
    unfinished = [s for s in all_steps if s.state in ("pending", "running")]
    doc: dict[str, Any] = {
        "id": op.id, "pool": op.pool, "kind": op.kind, "state": op.state, "phase": op.phase,
        "reason": op.reason, "params": op.params, "created_by": op.created_by, "created_at": _iso(op.created_at),
        "updated_at": _iso(op.updated_at), "not_before": _iso(op.not_before), "finished_at": _iso(op.finished_at),
        "executor": op.executor if op.open else None,
        "progress": {"steps": len(all_steps), "finished": finished, **counts},
        "batch": min((s.batch for s in unfinished), default=None),
        "batches": max((s.batch for s in all_steps), default=0),  # (batch 0: what comes first, e.g. priming)
        "waiting": [step_doc(s) for s in all_steps if s.state == "waiting"][:MAX_LISTED],
        "failed": [step_doc(s) for s in all_steps if s.state == "failed"][:MAX_LISTED],
    }
    if steps:
        doc["steps"] = [step_doc(s) for s in all_steps[:MAX_LISTED]]
    return doc


def progress_line(doc: Mapping[str, Any]) -> str:
    """`push-image #3 of vdi: running (roll), 24/40 steps done, batch 7 of 11, 2 waiting`"""
    p = doc["progress"]
    parts = [f"{doc['kind']} #{doc['id']} of {doc['pool']}: {doc['state']}"
             + (f" ({doc['phase']})" if doc.get("phase") else ""),
             f"{p['finished']}/{p['steps']} steps done"]
    if doc.get("batch") is not None:
        parts.append(f"batch {doc['batch']} of {doc['batches']}")
    if p["waiting"]:
        parts.append(f"{p['waiting']} waiting")
    if p["failed"]:
        parts.append(f"{p['failed']} failed")
    line = ", ".join(parts)
    return line + (f"; {doc['reason']}" if doc.get("reason") else "")
