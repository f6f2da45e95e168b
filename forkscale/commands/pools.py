"""`forkscale apply | scale | status | destroy`: converge pools described in a spec."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections import Counter
from typing import Any

from forkscale.commands.progress import ProgressLine
from forkscale.commands.session import ConnectionFailed, open_engines
from forkscale.core.errors import SpecError
from forkscale.fleet.plan import LIVE
from forkscale.fleet.reconcile import VmIndex
from forkscale.ledger import Ledger, LedgerError
from forkscale.spec import Spec, load_spec
from forkscale.workloads.operations import operation_doc, progress_line
from forkscale.workloads.operations.control import images_doc

log = logging.getLogger("forkscale")


async def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    try:
        if args.command in ("apply", "scale"):
            return await _converge(args, spec)
        if args.command == "status":
            return await _status(args, spec)
        if args.command == "destroy":
            return await _destroy(args, spec)
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


async def _converge(args: argparse.Namespace, spec: Any) -> int:
    if args.command == "scale":
        _require_pool(spec, args.pool)
        if args.count < 0:
            raise SpecError("count", "must be >= 0")
        capacity = spec.pool(args.pool).capacity()
        if args.count > capacity:
            raise SpecError("count", f"{args.count} clones need {args.count} addresses but pool {args.pool!r} "
                                     f"holds {capacity}")
        targets = [(args.pool, args.count)]
    else:
        targets = [(p.name, None) for p in spec.pools]
    results = []
    failed = False
    lease = None if args.dry_run else args.command
    vcenters = [spec.vcenter_name(spec.pool(name)) for name, _ in targets]
    async with open_engines(spec, vcenters, state=args.state, lease=lease, wait=args.wait,
                            check_pools=True) as opened:
        for name, count in targets:
            engine = opened.of(spec, name)
            pool = spec.pool(name)
            want = count if count is not None else (pool.count or 0)
            progress = ProgressLine(want) if args.output == "text" else None
            engine.progress = progress or engine.progress
            result = await engine.converge(name, count, dry_run=args.dry_run)
            if progress:
                progress.done()
            results.append(result)
            failed = failed or (not args.dry_run and not result.ok())
        if not args.dry_run:
            _prune(opened.ledger, spec)
    if args.output == "json":
        print(json.dumps({"dry_run": bool(args.dry_run), "pools": [r.as_dict() for r in results]}, indent=2))
    else:
        for r in results:
            if args.dry_run:
                print("\n".join(r.errors))
                continue
            fb = ", ".join(f"{k} x{v}" for k, v in r.fallbacks.items()) or "none"
            print(f"{r.pool}: {r.ready}/{r.desired} ready (created {r.created}, destroyed {r.destroyed}, "
                  f"failed {r.failed}, adopted {r.adopted}, rolled back {r.rolled_back}) in {r.seconds:.1f}s; "
                  f"fallbacks: {fb}")
            for rung, why in r.skipped.items():
                print(f"  rung {rung} skipped: {why}")
            for e in r.errors[:10]:
                print(f"  ! {e}", file=sys.stderr)
    return 1 if failed else 0


def _prune(ledger: Ledger, spec: Spec) -> None:
    """History past `ledger.retention_days` moves to the archive (as `serve` does hourly), so a
    cron of `apply` keeps the ledger bounded too. A failure is a warning: the clones are made."""
    archive = spec.archive(ledger.path)
    try:
        ledger.prune(spec.ledger.retention_days * 86_400.0, archive)
    except (OSError, LedgerError, sqlite3.Error) as exc:
        log.warning("ledger: could not move old history to %s: %s", archive, exc)


def _require_pool(spec: Any, name: str) -> None:
    """Bad input is exit 2 before anything connects to vCenter."""
    if name not in [p.name for p in spec.pools]:
        raise SpecError("pool", f"no pool named {name!r} in the spec (pools: {', '.join(p.name for p in spec.pools)})")


async def _status(args: argparse.Namespace, spec: Any) -> int:
    if args.pool:
        _require_pool(spec, args.pool)
    out = []
    pools = [p for p in spec.pools if not args.pool or p.name == args.pool]
    vcenters = list(dict.fromkeys(spec.vcenter_name(p) for p in pools))
    async with open_engines(spec, vcenters, state=args.state) as opened:
        for vcenter in vcenters:  # one inventory read per vCenter, for the pools on it
            here = [p for p in pools if spec.vcenter_name(p) == vcenter]
            out += await _status_of(opened.of(spec, here[0].name), here)
    if args.output == "json":
        print(json.dumps({"pools": out}, indent=2))
        return 0
    for p in out:
        shown = " ".join(f"{k}={v}" for k, v in p["counts"].items()) or "no clones"
        origin = "" if p["desired_set_by"] == "spec" else f" (set by {p['desired_set_by']}; spec says {p['spec_count']})"
        print(f"{p['pool']}: desired {p['desired']}{origin}  {shown}")
        for reason, n in p["fallbacks"].items():
            print(f"  fallback {reason}: {n} clone(s)")
        if p["image"] is not None:
            target = f"; target {_image(p['target_image'])}" if p["target_image"] else ""
            per = ", ".join(f"g{g}: {n}" for g, n in sorted(p["clones_per_image"].items()))
            print(f"  image {_image(p['image'])}{target}; clones per image: {per or 'none'}")
        if p["operation"] is not None and (p["operation"]["state"] in ("running", "paused") or p["target_image"]):
            print(f"  {progress_line(p['operation'])}")
        if p["sources"]:
            print(f"  sources ({len(p['sources'])}; rotated at delta-chain depth {p['rotate_depth']}):")
        for src in p["sources"]:
            frozen = "frozen" if src["frozen"] else "NOT frozen"
            mark = "" if src["in_vcenter"] else "  (not in vCenter)"
            depth = "-" if src["depth"] is None else str(src["depth"])
            print(f"    {src['name']:<32} {src['host']:<10} g{src['generation']:<3} {src['state']:<9} {frozen:<10} "
                  f"depth {depth:<3} clones {src['clones']}{mark}")
        if p["replicas"]:
            print(f"  replicas ({len(p['replicas'])}; linked clones fork from the one on their datastore):")
        for rep in p["replicas"]:
            mark = "" if rep["in_vcenter"] else "  (not in vCenter)"
            print(f"    {rep['name']:<40} {rep['datastore']:<10} {rep['state']:<9} clones {rep['clones']}{mark}")
        for c in p["clones"]:
            mark = f"  {c['power']}" if c["in_vcenter"] else "  (not in vCenter)"
            host = c["vcenter_host"] or c["host"]
            image = f"g{c['image']}" if c["image"] is not None else "-"
            print(f"  {c['name']:<24} {c['state']:<12} {c['kind']:<8} {image:<4} {host:<10} {c['ip']:<15} {c['mac']}"
                  f"{mark}")
    return 0


async def _status_of(engine: Any, pools: list[Any]) -> list[dict[str, Any]]:
    out = []
    inv = await engine.driver.inventory()
    # every listed pool's sources: one batched layoutEx read for their delta-chain depths
    tagged = [v.moref for v in inv.vms.values() if v.is_source and v.pool in {p.name for p in pools}]
    depths = await engine.driver.chain_depths(tagged) if tagged else {}
    index = VmIndex(inv)  # a clone is found by the moref / instance UUID the ledger recorded, not by tags alone
    for pool in pools:
        rows = engine.ledger.clones(pool.name, states=list(LIVE) + ["destroying", "failed"])
        counts = {k: v for k, v in engine.ledger.counts(pool.name).items() if v and k != "gone"}
        clones = [_clone(r, index.find(r), inv) for r in rows]
        fallbacks: dict[str, int] = {}
        for r in engine.ledger.clones(pool.name):
            if r.fallback_reason:
                fallbacks[r.fallback_reason] = fallbacks.get(r.fallback_reason, 0) + 1
        last = engine.ledger.desired(pool.name)
        op = engine.ledger.operations.open(pool.name) or engine.ledger.operations.last(pool.name)
        out.append({"pool": pool.name, "desired": last[0] if last else pool.count,
                    "desired_set_by": last[1] if last else "spec", "spec_count": pool.count,
                    "counts": counts, "fallbacks": fallbacks, "rotate_depth": pool.sources.rotate_depth,
                    **images_doc(engine.ledger, pool.name),
                    "operation": None if op is None else operation_doc(engine.ledger, op, steps=False),
                    "sources": _sources(engine.ledger, pool.name, inv, depths),
                    "replicas": _replicas(engine.ledger, pool.name, inv), "clones": clones})
    return out


def _image(doc: dict[str, Any]) -> str:
    return f"g{doc['generation']} ({doc['golden']} @ {doc['snapshot'] or doc['snapshot_moref'] or 'no snapshot'})"


def _clone(r: Any, vm: Any, inv: Any) -> dict[str, Any]:
    """One clone as the ledger and vCenter see it (`power`, `vcenter_host`, `vm`: vCenter's, None when not found)."""
    return {"name": r.name, "state": r.state, "kind": r.kind, "image": r.image_generation, "host": r.host,
            "hostname": r.hostname, "ip": r.ip, "mac": r.mac, "claimed_by": r.claimed_by,
            "in_vcenter": vm is not None, "power": vm.power if vm else None, "vm": vm.moref if vm else None,
            "vcenter_host": inv.host_names.get(vm.host or "") if vm else None, "fallback": r.fallback_reason,
            "datastore": r.datastore, "replica": r.replica_id,
            "vcenter_datastore": inv.datastore_name(vm.datastores[0]) if vm and vm.datastores else None,
            "error": r.error if r.state == "failed" else None}


def _replicas(ledger: Any, pool: str, inv: Any) -> list[dict[str, Any]]:
    """A pool's replicas for linked clones (not gone), with the clones that depend on each."""
    return [{"name": r.vm_name, "datastore": r.datastore, "image": r.image, "state": r.state, "clones": r.refs,
             "vm": r.vm_moref, "in_vcenter": bool(r.vm_moref and r.vm_moref in inv.vms)}
            for r in ledger.replicas(pool, ("preparing", "ready", "removing"))]


def _sources(ledger: Any, pool: str, inv: Any, depths: dict[str, int]) -> list[dict[str, Any]]:
    """A pool's per-host sources: the ledger's rows (not gone) and tagged VMs it lacks, as vCenter sees them.

    `clones` counts the live instant clones forked from each (what keeps a retiring one alive).
    """
    users = Counter(r.source for r in ledger.clones(pool, states=list(LIVE)) if r.kind == "instant")
    out = []
    seen: set[str] = set()

    def entry(name: str, host: str, generation: int, state: str, vm: Any) -> dict[str, Any]:
        return {"name": name, "host": inv.host_names.get(vm.host or "", host) if vm else host,
                "generation": generation, "state": state, "frozen": bool(vm and vm.frozen),
                "power": vm.power if vm else None, "depth": depths.get(vm.moref) if vm else None,
                "clones": users.get(name, 0), "in_vcenter": vm is not None}

    for row in ledger.sources(pool):
        if row.state == "gone":
            continue
        vm = inv.vms.get(row.vm_moref or "")
        vm = vm if vm is not None and vm.is_source else None
        if vm is None and row.state == "failed":
            continue  # a failed attempt that left no VM behind
        seen.add(row.vm_moref or "")
        out.append(entry(row.vm_name, row.host, row.generation, row.state, vm))
    for vm in sorted(inv.vms.values(), key=lambda v: v.name):
        if vm.pool == pool and vm.is_source and vm.moref not in seen:  # the next prepare/converge adopts it
            gen = int(vm.source_tag) if (vm.source_tag or "").isdigit() else 0
            out.append(entry(vm.name, "", gen, "untracked", vm))
    return out


async def _destroy(args: argparse.Namespace, spec: Any) -> int:
    _require_pool(spec, args.pool)
    with_sources = bool(getattr(args, "sources", False))
    what = " and per-host source" if with_sources else ""
    if not args.yes:
        if not sys.stdin.isatty():
            raise SpecError("--yes", f"destroy removes every clone{what} of the pool; pass --yes to confirm")
        answer = input(f"Destroy every clone{what} of pool {args.pool!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing destroyed")
            return 0
    vcenter = spec.vcenter_name(spec.pool(args.pool))
    async with open_engines(spec, [vcenter], state=args.state, lease="destroy", wait=args.wait) as opened:
        result = await opened.of(spec, args.pool).destroy_pool(args.pool, sources=with_sources)
    sources = result.sources or {"removed": [], "remaining": []}
    replicas = result.replicas or {"removed": [], "remaining": []}
    failed = bool(result.failed or (with_sources and sources["remaining"]) or replicas["remaining"])
    if args.output == "json":
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"{args.pool}: destroyed {result.destroyed}, failed {result.failed}")
        left = len(sources["remaining"])
        if sources["removed"]:
            print(f"{args.pool}: removed {len(sources['removed'])} source(s): {', '.join(sources['removed'])}")
        if replicas["removed"]:
            print(f"{args.pool}: removed {len(replicas['removed'])} replica(s): {', '.join(replicas['removed'])}")
        if with_sources:
            if left:
                print(f"{args.pool}: {left} source(s) could not be removed: {', '.join(sources['remaining'])}",
                      file=sys.stderr)
        elif left:
            print(f"{args.pool}: {left} source(s) remain (destroy --sources removes them): "
                  f"{', '.join(sources['remaining'])}")
        for e in result.errors[:10]:
            print(f"  ! {e}", file=sys.stderr)
    return 1 if failed else 0
