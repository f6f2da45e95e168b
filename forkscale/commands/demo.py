"""`forkscale demo`: an embedded vSphere twin, a frozen source, a pool scaled to N, a summary.

Everything goes through the same path as production: a spec file, the async SOAP driver, the
ledger, the fallback ladder, guest readiness reports. Only the vCenter is simulated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from forkscale.commands.progress import ProgressLine
from forkscale.commands.session import open_engine
from forkscale.observe.exporter import Exporter
from forkscale.observe.telemetry import FleetSample, Telemetry, metrics_app
from forkscale.sim import start_in_thread
from forkscale.spec import load_spec

POOL = "quickstart"
MiB = 1024 * 1024


def write_demo_spec(directory: Path, handle: Any, count: int) -> Path:
    """A spec like examples/quickstart.yaml, pointing at the embedded twin (secrets in 0600 files)."""
    vc_pw = directory / "vcenter-password"
    guest_pw = directory / "guest-password"
    for path, value in ((vc_pw, handle.password), (guest_pw, "vmfork-guest")):
        path.write_text(value)
        os.chmod(path, 0o600)
    spec = {
        "vcenter": {"url": handle.url, "user": handle.user, "password_file": str(vc_pw), "ca_file": handle.ca_file},
        "state": str(directory / "state.sqlite"),
        "pools": [{
            "name": POOL, "source": "src-linux", "freeze": "guestops",
            "guestops": {"user": "root", "password_file": str(guest_pw)},
            "count": count, "name_pattern": "quickstart-{index:03d}",
            "network": {"port_group": "VM Network", "cidr": "10.20.0.0/22", "gateway": "10.20.0.1",
                        "dns": ["10.20.0.2"]},
            "placement": {"datastores": ["ds-ssd"], "folder": "forkscale"},
            "fallback": ["instant", "linked", "full"],
            "budgets": {"vcenter": 64, "per_host": 16, "per_datastore": 64, "rate_per_s": 100},
            "guest_ready": {"timeout_s": 120, "required": True},
        }],
    }
    path = directory / "demo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _memory(sample: FleetSample) -> dict[str, int]:
    """Shared vs private memory of the pool's clones, from the exporter's (batched) read."""
    rows = [v for v in sample.vms if v.pool == POOL]
    return {"shared_mb": int(sum(v.shared_bytes for v in rows) // MiB),
            "private_mb": int(sum(v.private_bytes for v in rows) // MiB)}


async def _demo(args: argparse.Namespace, directory: Path) -> int:
    text = args.output == "text"
    say = (lambda msg: print(msg, flush=True)) if text else (lambda msg: None)
    say(f"forkscale demo: starting an embedded vSphere twin (time scale {args.time_scale})")
    handle = start_in_thread(time_scale=args.time_scale, state_dir=str(directory / "sim"))
    try:
        spec_path = write_demo_spec(directory, handle, args.clones)
        say(f"  twin: {handle.url} (CA {handle.ca_file})")
        say(f"  spec: {spec_path}")
        spec = load_spec(spec_path)
        progress = ProgressLine(args.clones) if text else None
        started = time.monotonic()
        telemetry = Telemetry()
        async with open_engine(spec, progress=progress, telemetry=telemetry) as engine:
            exporter = Exporter(engine.driver, spec, engine.ledger, telemetry, interval_s=5)
            runner = web.AppRunner(metrics_app(telemetry), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            say(f"  freezing src-linux through guest operations, then {args.clones} instant clones ...")
            result = await engine.converge(POOL)
            if progress:
                progress.done()
            elapsed = time.monotonic() - started
            memory = _memory(await exporter.refresh())
            exporting = asyncio.create_task(exporter.run()) if args.keep else None
            stats = handle.admin("stats")
            summary = {
                "clones": result.ready, "desired": result.desired, "seconds": round(elapsed, 2),
                "clones_per_s": round(result.ready / elapsed, 2) if elapsed else 0.0,
                "fallbacks": dict(result.fallbacks), "failed": result.failed, "errors": result.errors[:5],
                "memory_shared_mb": memory["shared_mb"], "memory_private_mb": memory["private_mb"],
                "soap_requests": stats["requests"], "twin_url": handle.url, "spec": str(spec_path),
                "metrics_url": metrics_url,
            }
            if text:
                total = memory["shared_mb"] + memory["private_mb"]
                pct = 100 * memory["shared_mb"] / total if total else 0.0
                print(f"\n{result.ready}/{result.desired} clones ready in {elapsed:.1f}s "
                      f"({summary['clones_per_s']}/s), failed {result.failed}")
                fb = ", ".join(f"{k} x{v}" for k, v in result.fallbacks.items()) or "none"
                print(f"fallbacks: {fb}")
                print(f"memory: {memory['shared_mb']:,} MB shared with the frozen source (P-Share), "
                      f"{memory['private_mb']:,} MB private ({pct:.1f}% shared)")
                print(f"vCenter calls: {stats['requests']} SOAP requests")
                print(f"metrics: {metrics_url} (P-Share, delta chains, fleet; refreshed every 5 s with --keep)")
            else:
                print(json.dumps(summary, indent=2))
            try:
                if args.keep:
                    say(f"\nthe twin keeps running at {handle.url}; spec {spec_path}; metrics {metrics_url}. "
                        "Ctrl-C to stop.")
                    await asyncio.Event().wait()
                else:
                    say("cleaning up: destroying the demo clones ...")
                    await engine.destroy_pool(POOL)
            finally:
                if exporting is not None:
                    exporting.cancel()
                await runner.cleanup()
        return 0 if result.ok() else 1
    finally:
        handle.stop()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


def run(args: argparse.Namespace) -> Any:
    if args.clones < 1:
        print("error: --clones: must be at least 1", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="forkscale-demo-"))
    return _demo(args, directory)
