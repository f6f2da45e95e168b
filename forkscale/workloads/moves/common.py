"""What the day-2 move operations (promote, rebalance, evacuate) share: one pool's view of vCenter
for the length of an operation run, where a clone is now, and starting or resuming an operation.

Every step re-reads what it is about to change (the clone's row, the VM's host and datastore), so
a step run again after a crash, a pause or a resume does only what is left: a VM already where the
step sends it is only recorded there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forkscale.core.errors import PermanentError, SpecError, TemporaryError
from forkscale.fleet.engine import Engine
from forkscale.fleet.replicas import ReplicaManager
from forkscale.ledger import CloneRecord, Ledger, Operation, OperationBusy, PlannedStep
from forkscale.spec import Pool
from forkscale.vsphere.model import Inventory
from forkscale.workloads.operations.rollout import RolloutStep, Tools

log = logging.getLogger("forkscale.moves")


@dataclass
class Where:
    """A clone's VM as vCenter sees it now."""

    moref: str
    host: str  # host name ("" when unknown)
    datastore: str  # home datastore name ("" when unknown)
    power: str


@dataclass
class PoolView:
    """One pool during one run of an operation: the inventory read at its start, its folder, its replicas."""

    pool: Pool
    inv: Inventory
    folder: str
    replicas: ReplicaManager


class Moves:
    """The engines as the move kinds use them (the one of each pool's vCenter), with a `PoolView` per
    pool read once per operation run."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools  # each pool's engine, and its replacements under the pool's rollout settings
        self._views: dict[int, PoolView] = {}

    def engine(self, pool: str) -> Engine:
        return self.tools.engine(pool)

    def rollout(self, pool: str) -> RolloutStep:
        return self.tools.rollout(pool)

    def ledger(self, pool: str) -> Ledger:
        return self.tools.engine(pool).ledger

    async def view(self, op: Operation, *, fresh: bool = False) -> PoolView:
        """The pool's view for this run of `op` (read again with `fresh`, e.g. in `begin`)."""
        current = self._views.get(op.id)
        if current is not None and not fresh:
            return current
        engine = self.engine(op.pool)
        pool = engine.spec.pool(op.pool)
        inv = await engine.driver.inventory()
        folder = inv.folders.get(pool.placement.folder, "")
        replicas = engine.replicas(pool, inv, folder)
        view = self._views[op.id] = PoolView(pool, inv, folder, replicas)
        return view

    def forget(self, op: Operation) -> None:
        self._views.pop(op.id, None)

    async def where(self, rec: CloneRecord, inv: Inventory) -> Where | None:
        """Where the clone's VM is now (one fresh read), or None when vCenter has no such VM."""
        if not rec.vm_moref:
            return None
        props = (await self.engine(rec.pool).driver.vm_props([rec.vm_moref], ["runtime.host", "datastore", "runtime.powerState"])
                 ).get(rec.vm_moref)
        if not props:
            return None
        host = props.get("runtime.host")
        stores = props.get("datastore") or []
        return Where(rec.vm_moref, inv.host_names.get(str(getattr(host, "_moId", "")), ""),
                     inv.datastore_name(str(getattr(stores[0], "_moId", ""))) or "" if stores else "",
                     str(props.get("runtime.powerState", "")))

    def clone(self, op: Operation, step_detail: Mapping[str, Any]) -> CloneRecord | None:
        rec = self.ledger(op.pool).get(int(step_detail["clone"]))
        return rec if rec is not None and rec.state != "gone" else None


def fault_text(exc: PermanentError | TemporaryError) -> str:
    return str(exc).splitlines()[0] if str(exc) else getattr(exc, "fault", type(exc).__name__)


def start_or_resume(ledger: Ledger, pool: str, kind: str, params: Mapping[str, Any], steps: Sequence[PlannedStep], *,
                    created_by: str) -> tuple[Operation, bool]:
    """The pool's open operation of `kind` (resumed: a re-run after a crash or a pause), else a new one
    with `steps`. (operation, resumed). SpecError (exit 2) when the pool has an open operation of
    another kind, or of this kind for something else (params differ where `match` keys say so)."""
    current = ledger.operations.open(pool)
    if current is not None:
        same = current.kind == kind and all(current.params.get(k) == v for k, v in params.items()
                                            if k in params.get("match", ()))
        if not same:
            raise SpecError("pool", f"pool {pool} already has operation {current.id} ({current.kind}, "
                                    f"{current.state}); let it finish, or cancel it first")
        if current.state == "paused":
            current = ledger.operations.set_state(current.id, "running", "resumed", expect=("paused",))
        return current, True
    try:
        return ledger.operations.start(pool, kind, params, steps, created_by=created_by), False
    except OperationBusy as exc:  # another process started one just now
        raise SpecError("pool", str(exc)) from None
