"""`forkscale push-image | rollout | rollback | refresh`: day-2 operations on a live pool.

Each records an operation in the ledger (forkscale/workloads/operations) and executes it here,
printing progress, until it is done, paused (the health gate, or `rollout pause` from elsewhere)
or cancelled. Killed at any point, the same command (or `rollout resume`, or `serve`) resumes it.
An operation another live process executes (a `serve`, another shell) is left to it.

Exit codes: 0 done (or scheduled with --at, or executed elsewhere), 1 paused / cancelled / failed
(the reason is printed), 2 bad input (nothing recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from typing import Any

from forkscale.commands.session import ConnectionFailed, open_engines
from forkscale.core.errors import SpecError
from forkscale.fleet.engine import Engine
from forkscale.ledger import LedgerError, Operation
from forkscale.spec import load_spec
from forkscale.workloads.operations import Busy, OperationRunner, operation_doc, progress_line
from forkscale.workloads.operations import control as ctl
from forkscale.workloads.operations.registry import kinds

#: seconds between progress lines while an operation runs in the foreground
PROGRESS_EVERY_S = 2.0


#: what only reads or records a request (any process may, like a release; serve acts on it)
REQUESTS = ("status", "pause", "cancel")


async def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    pool = spec.pool(args.pool)  # bad input: exit 2 before anything connects
    at = ctl.parse_at(getattr(args, "at", None))
    who = _who()
    acting = not getattr(args, "dry_run", False) and getattr(args, "action", None) not in REQUESTS
    lease = args.command if acting else None  # one acting controller per ledger, as for scale and apply
    try:
        async with open_engines(spec, [spec.vcenter_name(pool)], state=args.state, lease=lease,
                                wait=getattr(args, "wait", False), check_pools=True) as opened:
            engine = opened.of(spec, pool.name)
            runner = OperationRunner(engine.ledger, kinds(engine))
            try:
                return await _dispatch(args, engine, runner, who, at)
            except LedgerError as exc:
                raise SpecError(args.pool, str(exc)) from None
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _dispatch(args: argparse.Namespace, engine: Engine, runner: OperationRunner, who: str,
                    at: float | None) -> int:
    command = args.command
    if command == "rollout":
        return await _rollout(args, engine, runner, who)
    if command == "push-image":
        started = await ctl.push(engine, args.pool, snapshot=args.snapshot, source=args.source, created_by=who,
                                 allow_partial=args.allow_partial, at=at, dry_run=args.dry_run)
    elif command == "rollback":
        started = await ctl.rollback(engine, runner, args.pool, created_by=who, dry_run=args.dry_run)
    else:
        started = await ctl.refresh(engine, args.pool, args.vms, created_by=who, dry_run=args.dry_run)
    if started.nothing is not None:
        _say(args, started.nothing)
        _print_doc(args, ctl.rollout_doc(engine.ledger, args.pool))
        return 0
    if started.op is None:
        return _print_plan(args, started)
    if not args.dry_run and started.resumed:
        _say(args, f"resuming {started.kind} #{started.op.id} of pool {args.pool} (recorded earlier)")
    elif args.output == "text":
        print("\n".join(started.plan_lines()))
    return await _execute(args, engine, runner, started.op)


async def _rollout(args: argparse.Namespace, engine: Engine, runner: OperationRunner, who: str) -> int:
    ledger = engine.ledger
    action = args.action
    if action == "status":
        doc = ctl.rollout_doc(ledger, args.pool, steps=args.output == "json")
        _print_doc(args, doc)
        return 0
    if action == "pause":
        op = ctl.pause(ledger, args.pool, who)
    elif action == "cancel":
        op = await ctl.cancel(runner, args.pool, who)
    else:
        op = ctl.resume(ledger, args.pool, who)
        return await _execute(args, engine, runner, op)
    _print_doc(args, {"pool": args.pool, "operation": operation_doc(ledger, op, steps=False)})
    return 0


async def _execute(args: argparse.Namespace, engine: Engine, runner: OperationRunner, op: Operation) -> int:
    """Run the operation here until it stops; print progress; the exit code from how it ended."""
    if op.not_before is not None and op.not_before > time.time():
        _say(args, f"{op.kind} #{op.id} of pool {op.pool} is scheduled for "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(op.not_before))}; `forkscale serve` runs it "
                   "then (or run this command again after that time)")
        _print_doc(args, {"pool": op.pool, "operation": operation_doc(engine.ledger, op, steps=False)})
        return 0
    reporter = asyncio.create_task(_progress(args, engine, op.id)) if args.output == "text" else None
    try:
        final = await runner.run(op.id)
    except Busy as exc:
        _say(args, f"{exc}; follow it with `forkscale rollout status {op.pool}`")
        return 0
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
    doc = ctl.rollout_doc(engine.ledger, op.pool, steps=False)
    doc["operation"] = operation_doc(engine.ledger, final, steps=False)
    _print_doc(args, doc)
    return 0 if final.state == "done" else 1


async def _progress(args: argparse.Namespace, engine: Engine, op_id: int) -> None:
    last = ""
    while True:
        op = engine.ledger.operations.get(op_id)
        if op is not None:
            line = progress_line(operation_doc(engine.ledger, op, steps=False))
            if line != last:
                print(line, flush=True)
                last = line
        await asyncio.sleep(PROGRESS_EVERY_S)


def _print_plan(args: argparse.Namespace, started: ctl.Started) -> int:
    if args.output == "json":
        print(json.dumps({"dry_run": True, "pool": started.pool, "kind": started.kind, "params": started.params,
                          "steps": [{"batch": s.batch, "action": s.action, "target": s.target, "detail": dict(s.detail)}
                                    for s in started.steps]}, indent=2))
    else:
        print("\n".join(started.plan_lines()))
        print("(dry run: nothing was changed)")
    return 0


def _print_doc(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return
    op = doc.get("operation")
    image, target = doc.get("image"), doc.get("target_image")
    if image is not None or target is not None:
        print(f"pool {doc['pool']}: image {_image(image)}" + (f", target {_image(target)}" if target else ""))
    if "clones_per_image" in doc:
        print("  clones per image: " + (", ".join(f"g{g}: {n}" for g, n in sorted(doc["clones_per_image"].items()))
                                        or "none"))
    if op is None:
        print(f"pool {doc['pool']}: no operation recorded")
        return
    print(progress_line(op))
    for step in op.get("waiting", [])[:20]:
        print(f"  waiting: {step['target']} ({_waits(step['detail'])})")
    for step in op.get("failed", [])[:20]:
        print(f"  failed: {step['target']}: {step['error']}", file=sys.stderr)


def _image(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return "-"
    return f"g{doc['generation']} ({doc['golden']} @ {doc['snapshot'] or doc['snapshot_moref'] or 'no snapshot'})"


def _waits(detail: dict[str, Any]) -> str:
    what = str(detail.get("waiting_for", "?"))
    if detail.get("claimed_by"):
        what += f", claimed by {detail['claimed_by']}"
    if detail.get("force_at"):
        what += f", forced at {time.strftime('%H:%M:%S', time.localtime(float(detail['force_at'])))}"
    return what


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.output == "json" else sys.stdout, flush=True)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
