"""Benchmark: how long a Prometheus scrape of `/metrics` takes with N instant clones in the twin.

    python3 bench/scrape.py                # 5,000 clones, 20 scrapes, human-readable
    python3 bench/scrape.py --json         # ... plus one JSON line
    python3 bench/scrape.py --clones 500 --scrapes 50

Builds the clones in-process (the twin's own instant-clone code, called on its event loop through
`SimHandle.call`, skipping the SOAP round trips of the API), runs one exporter refresh over real
SOAP, then times scrapes sent the way Prometheus sends them (OpenMetrics accepted, gzip) over one
kept-alive connection. It also times scrapes that arrive while a second refresh is running,
since a scrape is served from the cached sample while the next one is being read.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402
from pyVmomi import vim  # noqa: E402

from forkscale.exporter import Exporter  # noqa: E402
from forkscale.ledger import Ledger  # noqa: E402
from forkscale.sim import start_in_thread  # noqa: E402
from forkscale.spec import load_spec  # noqa: E402
from forkscale.telemetry import Telemetry, metrics_app  # noqa: E402
from forkscale.vsphere.driver import Driver  # noqa: E402
from forkscale.vsphere.transport import Soap  # noqa: E402

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
POOL = "bench"


def build_clones(twin: Any, start: int, count: int) -> int:
    """Instant-clone the frozen src-linux `count` times with the twin's internals (on its loop)."""
    from forkscale.sim import ops
    from forkscale.sim.dispatch import Ctx

    src = next(mo for mo in twin.world.of_kind(vim.VirtualMachine) if getattr(mo, "name", "") == "src-linux")
    src.frozen = True
    ctx = Ctx(twin=twin, session=None, this=src, method="InstantClone_Task")
    for i in range(start, start + count):
        spec = vim.vm.InstantCloneSpec(name=f"{POOL}-{i:05d}", location=vim.vm.RelocateSpec(), config=[
            vim.option.OptionValue(key="forkscale.pool", value=POOL),
            vim.option.OptionValue(key="forkscale.id", value=str(i))])
        ops.do_instant_clone(ctx, src, spec, ops._placement(ctx, src, spec.location, instant=True))
    return start + count


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def scrape_times(port: int, n: int) -> tuple[list[float], int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", "/metrics", headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        times.append(time.perf_counter() - t0)
        assert resp.status == 200, resp.status
        size = len(body)
    conn.close()
    return times, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clones", type=int, default=5000)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="forkscale-bench-"))
    world = work / "world.yaml"  # big hosts: 5,000 clones of a 4 GiB VM need room on the source's host
    world.write_text(yaml.safe_dump({"hosts": [{"name": f"esx-0{i}", "memory_gib": 8192, "cpu_cores": 64}
                                               for i in range(1, 5)]}))
    handle = start_in_thread(world=str(world), time_scale=1.0, state_dir=str(work / "sim"))
    try:
        t0 = time.perf_counter()
        done = 0
        while done < args.clones:
            done = handle.call(build_clones, done, min(250, args.clones - done))
        build_s = time.perf_counter() - t0
        pw = work / "password"
        pw.write_text(handle.password)
        os.chmod(pw, 0o600)
        spec_path = work / "pool.yaml"
        spec_path.write_text(yaml.safe_dump({
            "vcenter": {"url": handle.url, "user": handle.user, "password_file": str(pw), "ca_file": handle.ca_file},
            "state": str(work / "state.sqlite"),
            "pools": [{"name": POOL, "source": "src-linux", "count": args.clones,
                       "network": {"port_group": "VM Network", "cidr": "10.64.0.0/16"}}]}))
        result = asyncio.run(measure(spec_path, args.scrapes))
    finally:
        handle.stop()
    result = {"clones": args.clones, "build_s": round(build_s, 2), **result}
    s = result
    print(f"{s['clones']} clones (built in {s['build_s']}s); refresh {s['refresh_s']}s over "
          f"{s['refresh_requests']} SOAP requests; {s['series']} series, {s['bytes_gzip']} bytes gzipped")
    print(f"scrape p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms ({args.scrapes} scrapes, idle; "
          f"first scrape after start {s['first_ms']} ms)")
    print(f"scrape during a refresh: p50 {s['busy_p50_ms']} ms, p99 {s['busy_p99_ms']} ms, max {s['busy_max_ms']} ms "
          f"({s['busy_scrapes']} scrapes)")
    if args.json:
        print(json.dumps(result))
    return 0


async def measure(spec_path: Path, scrapes: int) -> dict[str, Any]:
    spec = load_spec(spec_path)
    vc = spec.vcenter
    soap = Soap(vc.url, user=vc.user, password=vc.password, ca_file=str(vc.ca_file) if vc.ca_file else None)
    driver = Driver(soap)
    await soap.open()
    ledger = Ledger(spec.state)
    telemetry = Telemetry()
    exporter = Exporter(driver, spec, ledger, telemetry, interval_s=20)
    runner = web.AppRunner(metrics_app(telemetry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        before = soap.requests
        t0 = time.perf_counter()
        sample = await exporter.refresh()
        refresh_s = time.perf_counter() - t0
        requests = soap.requests - before
        assert len(sample.vms) >= 1, "no clones seen"
        series = sum(1 for line in telemetry.render().splitlines() if line[:1] != b"#")
        first, _ = await asyncio.to_thread(scrape_times, port, 1)  # formats the fleet if not prerendered
        await exporter.refresh()  # prerenders the format the first scrape asked for, as in steady state
        idle, size = await asyncio.to_thread(scrape_times, port, scrapes)

        # scrapes arriving while the next refresh runs on the same event loop
        busy: list[float] = []
        refreshing = asyncio.create_task(exporter.refresh())

        def hammer() -> None:
            while not refreshing.done():
                busy.extend(scrape_times(port, 1)[0])

        await asyncio.gather(refreshing, asyncio.to_thread(hammer))
    finally:
        await runner.cleanup()
        ledger.close()
        await soap.close()
    ms = 1000.0
    return {
        "refresh_s": round(refresh_s, 2), "refresh_requests": requests, "series": series, "bytes_gzip": size,
        "first_ms": round(first[0] * ms, 1), "p50_ms": round(statistics.median(idle) * ms, 1), "p99_ms": round(percentile(idle, 0.99) * ms, 1),
        "max_ms": round(max(idle) * ms, 1),
        "busy_scrapes": len(busy),
        "busy_p50_ms": round(statistics.median(busy) * ms, 1) if busy else None,
        "busy_p99_ms": round(percentile(busy, 0.99) * ms, 1) if busy else None,
        "busy_max_ms": round(max(busy) * ms, 1) if busy else None,
    }


if __name__ == "__main__":
    sys.exit(main())
