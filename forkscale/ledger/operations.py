"""Long operations as persisted plans: one `operations` row, one `operation_steps` row per step.

Push image, refresh, rebalance, promote and evacuate share one shape: a plan (which target --
a clone, a host -- gets which action, in which batch) is computed, written here in one
transaction, then executed step by step, each step marked as it goes (`pending` -> `running` ->
`done`, or `waiting` for something outside -- a user's release --, `failed`, `skipped`). A
restarted controller finds the operation still `running` and resumes it; every step is written
to be idempotent, so a step found `running` is simply run again. `forkscale.workloads.operations`
executes them; this module only keeps the record.

Operation states: running -> paused -> running (pause / resume, or a health gate), running or
paused -> cancelled / done / failed (terminal). At most one operation per pool is open (running
or paused) at a time: a unique index says so, so two controllers cannot start two at once.

Who may write: recording an operation and steering it (`start`, `set_state`: pause, resume,
cancel) are requests any process may make, like a release; what only its executor does (`claim`,
`mark`, `add_steps`, `set_phase`) is fenced by the pool's lease, as every engine write is.

`executor` / `heartbeat`: which process is executing an operation now. A process claims it
(`claim`) and renews the claim while it works; another process takes it over only once the
heartbeat is older than the claim's time-to-live (or at once when the caller knows the holder is
dead, e.g. a pid on this machine that no longer exists).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forkscale.ledger import txn
from forkscale.ledger.records import LedgerError

if TYPE_CHECKING:
    from forkscale.ledger.store import Ledger

OP_STATES = ("running", "paused", "cancelled", "done", "failed")
OPEN_STATES = ("running", "paused")
STEP_STATES = ("pending", "running", "waiting", "done", "failed", "skipped")
FINISHED_STEPS = ("done", "skipped")

_OP_MOVES: dict[str, frozenset[str]] = {
    "running": frozenset({"paused", "cancelled", "done", "failed"}),
    "paused": frozenset({"running", "cancelled", "failed"}),
    "cancelled": frozenset(),
    "done": frozenset(),
    "failed": frozenset(),
}


class OperationBusy(LedgerError):
    """The pool already has an open (running or paused) operation."""

    def __init__(self, pool: str, open_op: Operation | None) -> None:
        what = f"operation {open_op.id} ({open_op.kind}, {open_op.state})" if open_op else "an open operation"
        super().__init__(f"pool {pool} already has {what}; pause, resume or cancel it first "
                         f"(forkscale rollout status|resume|cancel {pool})")
        self.open = open_op


@dataclass(frozen=True)
class PlannedStep:
    """One step of a plan before it is written: `action` on `target` in `batch`."""

    batch: int
    action: str
    target: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    id: int
    pool: str
    kind: str
    state: str
    phase: str
    params: dict[str, Any]
    reason: str | None
    created_by: str
    created_at: float
    updated_at: float
    not_before: float | None
    finished_at: float | None
    executor: str | None
    heartbeat: float | None

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class Step:
    id: int
    operation_id: int
    seq: int
    batch: int
    action: str
    target: str
    state: str
    detail: dict[str, Any]
    error: str | None
    started_at: float | None
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STEPS


class Operations:
    """The `operations` and `operation_steps` tables of one ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # operations ---------------------------------------------------------------------------------
    def start(self, pool: str, kind: str, params: Mapping[str, Any], steps: Sequence[PlannedStep], *,
              created_by: str, phase: str = "", not_before: float | None = None) -> Operation:
        """Record a new running operation with its whole plan, atomically; OperationBusy when the
        pool already has an open one."""
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            # (the unique index operations_one_open is the backstop of this check)
            busy = txn.one(tx, "SELECT * FROM operations WHERE pool = ? AND state IN ('running', 'paused')", (pool,))
            if busy is not None:
                raise OperationBusy(pool, _operation(busy))
            row = txn.one(tx, """INSERT INTO operations (pool, kind, state, phase, params, created_by, created_at,
                                     updated_at, not_before) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?) RETURNING *""",
                          (pool, kind, phase, _dump(params), created_by, now, now, not_before))
            assert row is not None
            op = _operation(row)
            _insert_steps(tx, op.id, 0, steps, now)
            return op

    def get(self, op_id: int) -> Operation | None:
        rows = self.ledger._read("SELECT * FROM operations WHERE id = ?", (op_id,))
        return _operation(rows[0]) if rows else None

    def open(self, pool: str) -> Operation | None:
        """The pool's running or paused operation, if any."""
        rows = self.ledger._read("SELECT * FROM operations WHERE pool = ? AND state IN ('running', 'paused')",
                                 (pool,))
        return _operation(rows[0]) if rows else None

    def runnable(self) -> list[Operation]:
        """Every running operation (of every pool), oldest first."""
        return [_operation(r) for r in self.ledger._read(
            "SELECT * FROM operations WHERE state = 'running' ORDER BY id")]

    def recent(self, pool: str, limit: int = 10) -> list[Operation]:
        return [_operation(r) for r in self.ledger._read(
            "SELECT * FROM operations WHERE pool = ? ORDER BY id DESC LIMIT ?", (pool, limit))]

    def last(self, pool: str, kind: str | None = None) -> Operation | None:
        sql, params = "SELECT * FROM operations WHERE pool = ?", list[object]([pool])
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self.ledger._read(sql + " ORDER BY id DESC LIMIT 1", params)
        return _operation(rows[0]) if rows else None

    def set_state(self, op_id: int, state: str, reason: str | None = None, *,
                  expect: Iterable[str] | None = None) -> Operation:
        """Move an operation to `state` (with why); LedgerError when that move is not allowed, or
        when it is not in one of `expect` now."""
        if state not in OP_STATES:
            raise LedgerError(f"unknown operation state {state!r} (states: {', '.join(OP_STATES)})")
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            op = _get(tx, op_id)
            if expect is not None and op.state not in set(expect):
                raise LedgerError(f"operation {op_id} is {op.state}, not {' or '.join(expect)}")
            if state != op.state and state not in _OP_MOVES[op.state]:
                raise LedgerError(f"operation {op_id} is {op.state}; it cannot become {state}")
            finished = now if state in ("cancelled", "done", "failed") else None
            txn.run(tx, "UPDATE operations SET state = ?, reason = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                    (state, reason, now, finished, op_id))
            if state == "running":  # a resume retries what failed
                txn.run(tx, "UPDATE operation_steps SET state = 'pending', error = NULL, updated_at = ? "
                            "WHERE operation_id = ? AND state = 'failed'", (now, op_id))
            return _get(tx, op_id)

    def set_phase(self, op_id: int, phase: str) -> Operation:
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            self.ledger._fenced(tx, _get(tx, op_id).pool)
            txn.run(tx, "UPDATE operations SET phase = ?, updated_at = ? WHERE id = ?", (phase, now, op_id))
            return _get(tx, op_id)

    def claim(self, op_id: int, executor: str, ttl_s: float, *, take_over: str | None = None) -> bool:
        """Become (or stay) the operation's executor: when nobody is, it is us already, the holder's
        heartbeat is older than `ttl_s`, or the holder is `take_over` (known dead). Renews the
        heartbeat. False when another live executor holds it (or it is no longer open)."""
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            self.ledger._fenced(tx, _get(tx, op_id).pool)
            changed = txn.run(tx, """UPDATE operations SET executor = ?, heartbeat = ?
                                     WHERE id = ? AND state IN ('running', 'paused')
                                       AND (executor IS NULL OR executor = ? OR executor = ? OR heartbeat < ?)""",
                              (executor, now, op_id, executor, take_over or executor, now - ttl_s))
            return changed == 1

    def unclaim(self, op_id: int, executor: str) -> None:
        with self.ledger._write() as tx:
            txn.run(tx, "UPDATE operations SET executor = NULL, heartbeat = NULL WHERE id = ? AND executor = ?",
                    (op_id, executor))

    # steps --------------------------------------------------------------------------------------
    def steps(self, op_id: int, states: Iterable[str] | None = None) -> list[Step]:
        sql, params = "SELECT * FROM operation_steps WHERE operation_id = ?", list[object]([op_id])
        if states is not None:
            wanted = list(states)
            for s in wanted:
                _check_step_state(s)
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        return [_step(r) for r in self.ledger._read(sql + " ORDER BY batch, seq", params)]

    def step(self, step_id: int) -> Step | None:
        rows = self.ledger._read("SELECT * FROM operation_steps WHERE id = ?", (step_id,))
        return _step(rows[0]) if rows else None

    def add_steps(self, op_id: int, steps: Sequence[PlannedStep]) -> list[Step]:
        """Append steps to an open operation's plan (e.g. clones made meanwhile on the old image)."""
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            self.ledger._fenced(tx, _get(tx, op_id).pool)
            top = txn.one(tx, "SELECT MAX(seq) FROM operation_steps WHERE operation_id = ?", (op_id,))
            first = 0 if top is None or top[0] is None else int(top[0]) + 1
            ids = _insert_steps(tx, op_id, first, steps, now)
            return [_step(r) for r in txn.rows(tx, f"SELECT * FROM operation_steps WHERE id IN "
                                                   f"({', '.join('?' * len(ids))}) ORDER BY seq", ids)] if ids else []

    def mark(self, step_id: int, state: str, *, error: str | None = None,
             detail: Mapping[str, Any] | None = None) -> Step:
        """Set a step's state; `detail` is merged into what the step recorded before."""
        _check_step_state(state)
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            row = txn.one(tx, "SELECT * FROM operation_steps WHERE id = ?", (step_id,))
            if row is None:
                raise LedgerError(f"no operation step with id {step_id}")
            self.ledger._fenced(tx, _get(tx, int(row["operation_id"])).pool)
            merged = {**json.loads(row["detail"]), **(detail or {})}
            started = row["started_at"] if row["started_at"] is not None or state != "running" else now
            txn.run(tx, "UPDATE operation_steps SET state = ?, error = ?, detail = ?, started_at = ?, updated_at = ? "
                        "WHERE id = ?", (state, error, _dump(merged), started, now, step_id))
            txn.run(tx, "UPDATE operations SET updated_at = ? WHERE id = ?", (now, row["operation_id"]))
            found = txn.one(tx, "SELECT * FROM operation_steps WHERE id = ?", (step_id,))
            assert found is not None
            return _step(found)

    def progress(self, op_id: int) -> dict[str, int]:
        """Steps per state (every state present)."""
        counts: Counter[str] = Counter({s: 0 for s in STEP_STATES})
        for row in self.ledger._read("SELECT state, COUNT(*) FROM operation_steps WHERE operation_id = ? "
                                     "GROUP BY state", (op_id,)):
            counts[str(row[0])] = int(row[1])
        return dict(counts)


def _insert_steps(tx: txn.Tx, op_id: int, first: int, steps: Sequence[PlannedStep], now: float) -> list[int]:
    ids = []
    for seq, step in enumerate(steps, start=first):
        row = txn.one(tx, """INSERT INTO operation_steps (operation_id, seq, batch, action, target, state, detail,
                                 updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?) RETURNING id""",
                      (op_id, seq, step.batch, step.action, step.target, _dump(step.detail), now))
        assert row is not None
        ids.append(int(row[0]))
    return ids


def _get(tx: txn.Tx, op_id: int) -> Operation:
    row = txn.one(tx, "SELECT * FROM operations WHERE id = ?", (op_id,))
    if row is None:
        raise LedgerError(f"no operation with id {op_id}")
    return _operation(row)


def _check_step_state(state: str) -> None:
    if state not in STEP_STATES:
        raise LedgerError(f"unknown step state {state!r} (states: {', '.join(STEP_STATES)})")


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, default=str)


def _operation(row: txn.Row) -> Operation:
    values = txn.as_dict(row)
    values["params"] = json.loads(values["params"])
    return Operation(**values)


def _step(row: txn.Row) -> Step:
    values = txn.as_dict(row)
    values["detail"] = json.loads(values["detail"])
    return Step(**values)
