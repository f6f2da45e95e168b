"""`forkscale prepare -f SPEC [POOL]`: one frozen source per host, recorded in the ledger.

See forkscale/sources.py for what a per-host source is and how it is kept healthy. Exit codes:
0 every reachable target host has a source, 1 a source could not be made (or vCenter could not
be reached), 2 bad spec (nothing changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from forkscale.commands.session import ConnectionFailed, open_engines
from forkscale.core.errors import SpecError
from forkscale.fleet.sources import SourceReport
from forkscale.spec import Pool, Spec, load_spec


async def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    pools = _pools(spec, args.pool)
    out: list[dict[str, Any]] = []
    try:
        vcenters = [spec.vcenter_name(pool) for _, pool in pools]
        async with open_engines(spec, vcenters, state=args.state, lease="prepare", wait=args.wait,
                                check_pools=True) as opened:
            for index, pool in pools:
                engine = opened.of(spec, pool.name)
                inv = await engine.driver.inventory()  # fresh per pool: an earlier pool may have added VMs
                golden, image = await engine.image_source(pool, inv, index)  # the image new clones come from
                rungs, skipped = engine.rungs(pool, index)
                if "instant" not in rungs:  # per-host sources only serve instant clones
                    raise SpecError(f"pools[{index}].fallback", "prepare makes per-host sources for instant clones, "
                                    f"but {skipped.get('instant') or 'the pool has no instant rung'}")
                folder = inv.folders.get(pool.placement.folder)
                if folder is None:
                    folder = await engine.driver.create_folder(await engine.driver.vm_folder(), pool.placement.folder)
                mgr = engine.sources(pool, index, image)
                reports = await mgr.prepare(inv, inv.vms[golden.moref], folder)
                retired = await mgr.retire()
                out.append({"pool": pool.name, "golden": golden.name, "ok": _ok(reports),
                            "sources": [r.as_dict() for r in reports], "retired": retired})
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps({"pools": out}, indent=2))
    else:
        for p in out:
            _print_pool(p)
    return 0 if all(p["ok"] for p in out) else 1


def _pools(spec: Spec, name: str | None) -> list[tuple[int, Pool]]:
    if name is None:
        return list(enumerate(spec.pools))
    for i, pool in enumerate(spec.pools):
        if pool.name == name:
            return [(i, pool)]
    raise SpecError("pool", f"no pool named {name!r} in the spec (pools: {', '.join(p.name for p in spec.pools)})")


def _ok(reports: list[SourceReport]) -> bool:
    return not any(r.action == "failed" for r in reports)


def _print_pool(p: dict[str, Any]) -> None:
    sources = p["sources"]
    ready = sum(1 for s in sources if s["action"] not in ("failed", "unavailable"))
    print(f"{p['pool']}: {ready} source(s) of {p['golden']} ready")
    for s in sources:
        state = "frozen" if s["frozen"] else "not frozen"
        depth = f"chain {s['depth']}" if s["depth"] is not None else ""
        line = f"  {s['host']:<12} {s['name']:<36} g{s['generation']:<3} {s['action']:<11} {state:<10} {depth}"
        print(line.rstrip())
        if s["error"]:
            stream = sys.stderr if s["action"] in ("failed", "unavailable") else sys.stdout
            print(f"    {'!' if stream is sys.stderr else '-'} {s['error']}", file=stream)
    for name in p["retired"]:
        print(f"  retired {name}")
