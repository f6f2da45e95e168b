"""What `serve` does about day-2 moves on its own.

Every `interval_s`: the most eager pool's `policy.evaluate_every_s`, within 1 and 30 s.

1. **Resume** every running operation of the ledger (any kind the registry knows) that no live
   process is executing -- one a killed `forkscale rebalance` left, or this controller's own after
   a restart. One executor at a time is the runner's claim, so two controllers never run one twice.
2. **Start** one operation per pool that has none open, the first that is due:
   * `evacuate` of a host someone asked into maintenance (an EnterMaintenanceMode_Task queued or
     running on it: the twin and a cluster without DRS wait for the host to empty), or of a host
     the pool's clones are on that `placement.hosts` no longer lists;
   * `promote` of the linked clones `kind_policy` says are due (older than `linked_max_age_s`, or
     claimed with `promote_on_claim`);
   * `rebalance`, with `rebalance.auto`, once more than `rebalance.threshold` of the pool's clones
     would move (claimed ones are moved when their users release them).

Each is the same persisted operation the CLI starts, with the same plan, so `status` shows it and a
restart resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from forkscale.core.errors import ForkscaleError
from forkscale.fleet.engine import Engine
from forkscale.ledger import LedgerError, OperationBusy, PlannedStep
from forkscale.spec import Pool
from forkscale.vsphere.model import Inventory
from forkscale.workloads.moves.gather import gather
from forkscale.workloads.moves.plan import MOVABLE, plan_evacuate, plan_rebalance
from forkscale.workloads.moves.promote import due, plan_promote
from forkscale.workloads.operations import Busy, OperationRunner
from forkscale.workloads.operations.registry import kinds
from forkscale.workloads.operations.rollout import pool_count

log = logging.getLogger("forkscale.moves")


class AutoMoves:
    """Resumes operations and starts the day-2 moves a pool's spec asks for (see the module docstring)."""

    def __init__(self, engine: Engine, *, interval_s: float | None = None, stopping: Callable[[], bool] = lambda: False,
                 dry_run: bool = False) -> None:
        self.engine = engine
        self.ledger = engine.ledger
        # as often as the most eager pool's policy looks, within 1 and 30 s
        every = min((p.policy.evaluate_every_s for p in engine.spec.pools), default=10.0)
        self.interval_s = interval_s if interval_s is not None else min(30.0, max(1.0, every))
        self.stopping = stopping
        self.dry_run = dry_run
        self.runner = OperationRunner(engine.ledger, kinds(engine), stopping=stopping)
        self.tasks: dict[int, asyncio.Task[Any]] = {}

    async def run(self) -> None:
        try:
            while not self.stopping():
                try:
                    await self.tick()
                except (ForkscaleError, OSError) as exc:
                    log.warning("day-2 moves: %s", exc)
                await asyncio.sleep(self.interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()

    async def tick(self) -> list[str]:
        """One look: resume what is running, start what is due; the operations started (kind pool)."""
        self.tasks = {i: t for i, t in self.tasks.items() if not t.done()}
        for op in self.ledger.operations.runnable():
            if op.kind in self.runner.kinds and op.id not in self.tasks and not self.dry_run:
                self._spawn(op.id)
        inv = await self.engine.driver.inventory()
        entering = {inv.host_names.get(m, "") for m in await self.engine.driver.hosts_entering_maintenance()}
        started = []
        for pool in self.engine.spec.pools:
            if self.ledger.operations.open(pool.name) is not None:
                continue
            kind, params, steps = await self.due(pool, inv, entering)
            if not steps:
                continue
            if self.dry_run:
                log.info("pool %s: (dry run) would start %s of %d step(s)", pool.name, kind, len(steps))
                continue
            try:
                op = self.ledger.operations.start(pool.name, kind, params, steps, created_by="serve")
            except OperationBusy:
                continue
            log.info("pool %s: started %s #%d (%d step(s)): %s", pool.name, kind, op.id, len(steps),
                     params.get("why", ""))
            self._spawn(op.id)
            started.append(f"{kind} {pool.name}")
        return started

    def _spawn(self, op_id: int) -> None:
        self.tasks[op_id] = asyncio.create_task(self._execute(op_id), name=f"operation:{op_id}")

    async def _execute(self, op_id: int) -> None:
        with contextlib.suppress(Busy):  # another live process executes it
            try:
                op = await self.runner.run(op_id)
                log.info("operation %d (%s of pool %s): %s%s", op.id, op.kind, op.pool, op.state,
                         f" ({op.reason})" if op.reason else "")
            except (ForkscaleError, LedgerError) as exc:
                log.warning("operation %d: %s", op_id, exc)

    async def due(self, pool: Pool, inv: Inventory, entering: set[str]) -> tuple[str, dict[str, Any], list[PlannedStep]]:
        """The operation the pool needs now (kind, params, steps); ("", {}, []) when none."""
        found = await gather(self.engine, pool, inv)
        allowed = set(pool.placement.hosts)
        on = {c.host for c in found.clones if c.rec.state in MOVABLE}
        # (a host the pool's only source runs on is not left because placement.hosts omits it: nowhere to go)
        leaving = sorted(h for h in on if h in entering
                         or (allowed and h not in allowed and h not in found.source_hosts))
        if leaving:
            host = leaving[0]
            source = next((r.vm_name for r in self.engine.sources_of(pool).rows(("preparing", "ready", "retiring"))
                           if r.host == host), None)
            count = pool_count(self.ledger, pool)
            unavailable = pool.rollout.max_unavailable.of(count, minimum=1)
            why = "asked into maintenance" if host in entering else "no longer in placement.hosts"
            return "evacuate", {"host": host, "max_concurrent": unavailable, "max_unavailable": unavailable,
                                "count": count, "match": ["host"], "why": f"{host} {why}"}, \
                plan_evacuate(pool, found.clones, host, found.hosts, source=source)
        names = due(pool, [c.rec for c in found.clones])
        if names:
            return "promote", {"max_concurrent": pool.rebalance.max_concurrent, "vms": names,
                               "why": "kind_policy"}, plan_promote(pool, [c.rec for c in found.clones], names)
        if pool.rebalance.auto and found.clones:
            steps = plan_rebalance(pool, inv, found.clones, found.hosts, replicas=found.replicas,
                                   replica_bytes=found.replica_bytes)
            share = len(steps) / len(found.clones)
            if steps and share > pool.rebalance.threshold:
                stores = sorted({*pool.placement.datastores, *(c.datastore for c in found.clones)} & set(inv.datastores))
                return "rebalance", {"max_concurrent": pool.rebalance.max_concurrent,
                                     "max_unavailable": pool.rebalance.max_concurrent, "force": False,
                                     "free_before": {d: inv.datastores[d][1] for d in stores},
                                     "why": f"{share:.0%} of the clones off their share (threshold "
                                            f"{pool.rebalance.threshold:.0%})"}, steps
        return "", {}, []
