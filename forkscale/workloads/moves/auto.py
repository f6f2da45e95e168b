"""What `serve` does about day-2 moves on its own.

Every `interval_s`: the most eager pool's `policy.evaluate_every_s`, within 1 and 30 s.

Only for the pools this controller owns (with several `serve` replicas), on the engine of each
pool's vCenter. Running operations -- one a killed `forkscale rebalance` left, or this
controller's own after a restart -- are resumed by `serve`'s background executor
(forkscale/workloads/operations/background.py), poked each round of the pool's loop and here.

**Start** one operation per pool that has none open, the first that is due:
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
import logging
from collections.abc import Callable
from typing import Any

from forkscale.core.errors import ForkscaleError
from forkscale.fleet.engine import Engine
from forkscale.ledger import Ledger, LedgerError, OperationBusy, PlannedStep
from forkscale.spec import Pool, Spec
from forkscale.vsphere.model import Inventory
from forkscale.workloads.moves.gather import gather
from forkscale.workloads.moves.plan import MOVABLE, plan_evacuate, plan_rebalance
from forkscale.workloads.moves.promote import due, plan_promote
from forkscale.workloads.operations.rollout import pool_count

log = logging.getLogger("forkscale.moves")


class AutoMoves:
    """Starts the day-2 moves a pool's spec asks for (see the module docstring).

    `engine_of(pool)`: the engine of the pool's vCenter (None while it has not answered); `owns(pool)`:
    whether this controller acts on the pool; `poke(pool)`: have the pool's running operation executed."""

    def __init__(self, spec: Spec, ledger: Ledger, engine_of: Callable[[str], Engine | None], *,
                 owns: Callable[[str], bool] = lambda pool: True, poke: Callable[[str], None] = lambda pool: None,
                 interval_s: float | None = None, stopping: Callable[[], bool] = lambda: False,
                 dry_run: bool = False) -> None:
        self.spec = spec
        self.ledger = ledger
        self.engine_of = engine_of
        self.owns = owns
        self.poke = poke
        # as often as the most eager pool's policy looks, within 1 and 30 s
        every = min((p.policy.evaluate_every_s for p in spec.pools), default=10.0)
        self.interval_s = interval_s if interval_s is not None else min(30.0, max(1.0, every))
        self.stopping = stopping
        self.dry_run = dry_run

    async def run(self) -> None:
        while not self.stopping():
            try:
                await self.tick()
            except (ForkscaleError, LedgerError, OSError) as exc:
                log.warning("day-2 moves: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> list[str]:
        """One look: start what is due on the pools this controller owns; the operations started (kind pool)."""
        seen: dict[int, tuple[Inventory, set[str]]] = {}  # per engine (vCenter): one inventory read
        started = []
        for pool in self.spec.pools:
            engine = self.engine_of(pool.name)
            if engine is None or not self.owns(pool.name):
                continue
            if self.ledger.operations.open(pool.name) is not None:
                if not self.dry_run:
                    self.poke(pool.name)
                continue
            if id(engine) not in seen:
                inv = await engine.driver.inventory()
                seen[id(engine)] = inv, {inv.host_names.get(m, "") for m in await engine.driver.hosts_entering_maintenance()}
            inv, entering = seen[id(engine)]
            kind, params, steps = await self.due(engine, pool, inv, entering)
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
            self.poke(pool.name)
            started.append(f"{kind} {pool.name}")
        return started

    async def due(self, engine: Engine, pool: Pool, inv: Inventory,
                  entering: set[str]) -> tuple[str, dict[str, Any], list[PlannedStep]]:
        """The operation the pool needs now (kind, params, steps); ("", {}, []) when none."""
        found = await gather(engine, pool, inv)
        allowed = set(pool.placement.hosts)
        on = {c.host for c in found.clones if c.rec.state in MOVABLE}
        # (a host the pool's only source runs on is not left because placement.hosts omits it: nowhere to go)
        leaving = sorted(h for h in on if h in entering
                         or (allowed and h not in allowed and h not in found.source_hosts))
        if leaving:
            host = leaving[0]
            source = next((r.vm_name for r in engine.sources_of(pool).rows(("preparing", "ready", "retiring"))
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
