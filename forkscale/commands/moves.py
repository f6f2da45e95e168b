"""`forkscale promote | rebalance | evacuate`: day-2 moves, each a persisted operation.

The plan is computed, printed with `--dry-run` (and changes nothing), else written to the ledger
and executed step by step with a progress line; `kill -9` and the same command again resumes the
operation where it stood (no step is done twice). Exit codes: 0 the operation is done, 1 it paused
or failed (the reason is printed), 2 bad input (nothing was changed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from forkscale.commands.session import ConnectionFailed, open_engines
from forkscale.core.errors import SpecError
from forkscale.fleet.engine import Engine
from forkscale.ledger import Operation, PlannedStep
from forkscale.spec import Spec, load_spec
from forkscale.workloads.moves.common import start_or_resume
from forkscale.workloads.moves.gather import gather
from forkscale.workloads.moves.plan import plan_rebalance
from forkscale.workloads.moves.promote import plan_promote
from forkscale.workloads.operations import OperationRunner, describe_plan, operation_doc, progress_line
from forkscale.workloads.operations.registry import kinds


async def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    try:
        if args.command == "promote":
            return await _promote(args, spec)
        if args.command == "rebalance":
            return await _rebalance(args, spec)
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


@contextlib.asynccontextmanager
async def _engine(args: argparse.Namespace, spec: Spec) -> AsyncIterator[Engine]:
    """The engine of the pool's vCenter; unless --dry-run, with the ledger's lease (one acting
    controller per ledger, as for scale and push-image)."""
    pool = spec.pool(args.pool)
    async with open_engines(spec, [spec.vcenter_name(pool)], state=args.state,
                            lease=None if args.dry_run else args.command, wait=args.wait,
                            check_pools=True) as opened:
        yield opened.of(spec, pool.name)


def _pool(spec: Spec, name: str) -> None:
    if name not in [p.name for p in spec.pools]:
        raise SpecError("pool", f"no pool named {name!r} in the spec (pools: {', '.join(p.name for p in spec.pools)})")


async def _promote(args: argparse.Namespace, spec: Spec) -> int:
    _pool(spec, args.pool)
    if not args.vm and not args.all:
        raise SpecError("promote", "name the linked clones to promote, or pass --all")
    if args.vm and args.all:
        raise SpecError("promote", "name clones or pass --all, not both")
    async with _engine(args, spec) as engine:
        pool = spec.pool(args.pool)
        live = engine.ledger.live(pool.name)
        names = {r.name for r in live}
        for i, vm in enumerate(args.vm):
            if vm not in names:
                raise SpecError(f"vm[{i}]", f"pool {pool.name} has no clone named {vm!r}")
        steps = plan_promote(pool, live, args.vm)
        params = {"max_concurrent": pool.rebalance.max_concurrent, "vms": sorted(args.vm)}
        return await execute(args, engine, "promote", params, steps, summary=_promote_summary)


async def _promote_summary(doc: dict[str, Any]) -> dict[str, Any]:
    steps = doc.get("steps", [])
    return {"promoted": [s["target"] for s in steps if s["state"] == "done"],
            "skipped": {s["target"]: s["detail"].get("skipped") for s in steps if s["state"] == "skipped"},
            "failed": {s["target"]: s["error"] for s in steps if s["state"] == "failed"},
            "replicas_removed": sorted({r for s in steps for r in s["detail"].get("replicas_removed", [])})}


Summary = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def execute(args: argparse.Namespace, engine: Engine, kind: str, params: dict[str, Any],
                  steps: Sequence[PlannedStep], *, summary: Summary) -> int:
    """Print the plan (`--dry-run`), or start (or resume) the operation and run it to its end."""
    pool = args.pool
    current = engine.ledger.operations.open(pool)
    superseded = current is not None and current.kind == kind and any(
        current.params.get(k) != params.get(k) for k in params.get("supersede", ()))
    if superseded and current is not None and not args.dry_run:
        # e.g. `rebalance --force` while a rebalance waits for users: the old plan stops, the new one runs
        runner = OperationRunner(engine.ledger, kinds(engine))
        await runner.stop(current.id, "cancelled", f"superseded by a new {kind} ({', '.join(params['supersede'])} changed)")
        current = None
    if not steps and (current is None or current.kind != kind or superseded):
        if args.output == "json":
            print(json.dumps({"dry_run": bool(args.dry_run), "pool": pool, "kind": kind, "plan": [],
                              "operation": None, "summary": {}}, indent=2))
        else:
            print(f"{kind} of {pool}: nothing to do")
        return 0
    if args.dry_run:
        resumes = current is not None and current.kind == kind and not superseded
        if resumes and current is not None:
            steps = [PlannedStep(s.batch, s.action, s.target, s.detail)
                     for s in engine.ledger.operations.steps(current.id) if not s.finished]
        _print_plan(args, pool, kind, steps, resumed=resumes)
        return 0
    op, resumed = start_or_resume(engine.ledger, pool, kind, params, steps, created_by=f"cli:{kind}")
    if args.output == "text":
        print(f"{kind} #{op.id} of {pool}: {'resuming' if resumed else 'started'} "
              f"({len(engine.ledger.operations.steps(op.id))} step(s))", file=sys.stderr)
    final = await _run(engine, op, args.output == "text")
    doc = operation_doc(engine.ledger, final)
    result = await summary(doc)
    if args.output == "json":
        print(json.dumps({"operation": doc, "summary": result}, indent=2))
    else:
        print(progress_line(doc))
        for key, value in result.items():
            if value:
                print(f"  {key}: {_shown(value)}")
    return 0 if final.state == "done" else 1


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} ({v})" if v is not None else str(k) for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _print_plan(args: argparse.Namespace, pool: str, kind: str, steps: Sequence[PlannedStep], *, resumed: bool) -> None:
    if args.output == "json":
        print(json.dumps({"dry_run": True, "pool": pool, "kind": kind, "resumes": resumed,
                          "plan": [{"batch": s.batch, "action": s.action, "target": s.target, "detail": dict(s.detail)}
                                   for s in steps]}, indent=2))
        return
    what = "the open operation would resume with" if resumed else "plan"
    print(f"{kind} of {pool} (dry run): {what} {len(steps)} step(s)")
    for line in describe_plan(steps):
        print(line)


async def _run(engine: Engine, op: Operation, show: bool) -> Operation:
    runner = OperationRunner(engine.ledger, kinds(engine))
    printer = asyncio.create_task(_progress(engine, op)) if show else None
    try:
        return await runner.run(op.id)
    finally:
        if printer is not None:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer


async def _progress(engine: Engine, op: Operation, every_s: float = 2.0) -> None:
    last = ""
    while True:
        await asyncio.sleep(every_s)
        current = engine.ledger.operations.get(op.id)
        if current is None:
            return
        line = progress_line(operation_doc(engine.ledger, current, steps=False))
        if line != last:
            print(line, file=sys.stderr)
            last = line


async def _rebalance(args: argparse.Namespace, spec: Spec) -> int:
    _pool(spec, args.pool)
    async with _engine(args, spec) as engine:
        pool = spec.pool(args.pool)
        inv = await engine.driver.inventory()
        engine.avoid_evacuated(inv)
        found = await gather(engine, pool, inv)
        steps = plan_rebalance(pool, inv, found.clones, found.hosts, force=args.force, replicas=found.replicas,
                               replica_bytes=found.replica_bytes)
        stores = sorted({*pool.placement.datastores, *(c.datastore for c in found.clones)} & set(inv.datastores))
        params = {"max_concurrent": pool.rebalance.max_concurrent, "max_unavailable": pool.rebalance.max_concurrent,
                  "force": bool(args.force), "free_before": {d: inv.datastores[d][1] for d in stores},
                  "supersede": ["force"]}

        async def summary(doc: dict[str, Any]) -> dict[str, Any]:
            after = await engine.driver.inventory()
            return move_summary(doc, after)

        return await execute(args, engine, "rebalance", params, steps, summary=summary)


def move_summary(doc: dict[str, Any], inv: Any) -> dict[str, Any]:
    """Moved (per kind of move), waited, failed, and bytes freed per datastore (negative: now used)."""
    steps = doc.get("steps", [])
    moved: dict[str, int] = {}
    for s in steps:
        if s["state"] == "done" and s["action"] != "retire-source":
            moved[s["action"]] = moved.get(s["action"], 0) + 1
    before = doc.get("params", {}).get("free_before", {})
    return {"moved": moved, "waited": sorted(s["target"] for s in steps if "waiting_for" in s["detail"]),
            "waiting": sorted(s["target"] for s in steps if s["state"] == "waiting"),
            "failed": {s["target"]: s["error"] for s in steps if s["state"] == "failed"},
            "skipped": {s["target"]: s["detail"].get("skipped") for s in steps if s["state"] == "skipped"},
            "bytes_freed": {d: inv.datastores[d][1] - int(v) for d, v in sorted(before.items()) if d in inv.datastores}}
