"""`forkscale evacuate HOST [-f SPEC] [--enter] [--dry-run] [-o json]`: empty a host for maintenance.

Every pool of the spec with clones (or a per-host source) on the host gets an `evacuate`
operation (persisted, resumable: run the same command again after a crash): nothing new is
placed on the host while one is open, its clones move off (instant clones re-created on other
hosts, linked and full ones migrated), claimed ones as the pool's `evacuate.claimed` says, and
the host's source is removed. The command then says whether the host is empty; with `--enter` it
calls EnterMaintenanceMode_Task. Exit 0: every operation done (and the host entered maintenance
when asked); 1: something is left (printed); 2: bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from forkscale.commands.moves import move_summary
from forkscale.commands.session import ConnectionFailed, open_engine
from forkscale.core.errors import PermanentError, SpecError, TemporaryError
from forkscale.fleet.engine import Engine
from forkscale.ledger import Operation, PlannedStep
from forkscale.spec import Spec, load_spec
from forkscale.workloads.moves.common import start_or_resume
from forkscale.workloads.moves.gather import gather
from forkscale.workloads.moves.plan import plan_evacuate
from forkscale.workloads.operations import OperationRunner, describe_plan, operation_doc, progress_line
from forkscale.workloads.operations.registry import kinds
from forkscale.workloads.operations.rollout import pool_count


async def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    try:
        async with open_engine(spec, state=args.state, lease=None if args.dry_run else "evacuate",
                               wait=args.wait) as engine:
            return await _evacuate(args, spec, engine)
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def plans(engine: Engine, spec: Spec, host: str) -> dict[str, list[PlannedStep]]:
    """Each pool's evacuation of `host` (pools with nothing there are left out)."""
    out = {}
    for pool in spec.pools:
        inv = await engine.driver.inventory()
        found = await gather(engine, pool, inv)
        source = next((r.vm_name for r in engine.sources_of(pool).rows(("preparing", "ready", "retiring"))
                       if r.host == host), None)
        steps = plan_evacuate(pool, found.clones, host, found.hosts, source=source)
        if steps:
            out[pool.name] = steps
    return out


async def _evacuate(args: argparse.Namespace, spec: Spec, engine: Engine) -> int:
    host = args.host
    inv = await engine.driver.inventory()
    if host not in inv.hosts:
        raise SpecError("host", f"no host named {host!r} (hosts: {', '.join(sorted(inv.hosts))})")
    planned = await plans(engine, spec, host)
    ops = engine.ledger.operations
    resumable = {p.name: op for p in spec.pools if (op := ops.open(p.name)) is not None
                 and op.kind == "evacuate" and op.params.get("host") == host}
    if args.dry_run:
        return _print(args, host, planned, resumable)
    started: list[Operation] = []
    for pool in spec.pools:
        steps = planned.get(pool.name, [])
        if not steps and pool.name not in resumable:
            continue
        count = pool_count(engine.ledger, pool)
        unavailable = pool.rollout.max_unavailable.of(count, minimum=1)
        params = {"host": host, "max_concurrent": unavailable, "max_unavailable": unavailable, "count": count,
                  "match": ["host"]}
        op, _ = start_or_resume(engine.ledger, pool.name, "evacuate", params, steps, created_by="cli:evacuate")
        started.append(op)
    runner = OperationRunner(engine.ledger, kinds(engine))
    finals = await asyncio.gather(*(runner.run(op.id) for op in started))
    return await _report(args, engine, host, finals)


def _print(args: argparse.Namespace, host: str, planned: dict[str, list[PlannedStep]],
           resumable: dict[str, Operation]) -> int:
    if args.output == "json":
        print(json.dumps({"dry_run": True, "host": host, "resumes": sorted(resumable),
                          "plans": {pool: [{"batch": s.batch, "action": s.action, "target": s.target,
                                            "detail": dict(s.detail)} for s in steps]
                                    for pool, steps in planned.items()}}, indent=2))
        return 0
    if not planned:
        print(f"evacuate {host} (dry run): no clone or source of the spec's pools is there")
    for pool, steps in planned.items():
        print(f"evacuate {host}, pool {pool} (dry run): {len(steps)} step(s)")
        for line in describe_plan(steps):
            print(line)
    return 0


async def _report(args: argparse.Namespace, engine: Engine, host: str, finals: list[Operation]) -> int:
    inv = await engine.driver.inventory()
    moref = inv.hosts[host]
    pools = {p.name for p in engine.spec.pools}
    ours = sorted(v.name for v in inv.vms.values() if v.host == moref and (v.pool in pools or v.replica_tag))
    others = sorted(v.name for v in inv.vms.values() if v.host == moref and v.name not in ours and v.power == "poweredOn")
    docs = [operation_doc(engine.ledger, op) for op in finals]
    ok = all(op.state == "done" for op in finals) and not ours
    entered: str | None = None
    if args.enter and ok:
        try:
            await engine.driver.enter_maintenance(moref, int(args.timeout))
            entered = "entered"
        except (PermanentError, TemporaryError) as exc:
            entered = f"failed: {exc}"
            ok = False
    out: dict[str, Any] = {"host": host, "empty": not ours, "left": ours, "other_vms_running": others,
                           "maintenance": entered, "operations": [{"operation": d, "summary": move_summary(d, inv)}
                                                                  for d in docs]}
    if args.output == "json":
        print(json.dumps(out, indent=2))
    else:
        for d in docs:
            print(progress_line(d))
        print(f"{host}: {'empty of forkscale clones' if not ours else 'still holds ' + ', '.join(ours)}"
              + (f"; other VMs running there: {', '.join(others)}" if others else ""))
        if entered:
            print(f"{host}: maintenance mode {entered}")
    return 0 if ok else 1
