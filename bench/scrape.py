"""Benchmark: how long a Prometheus scrape of `/metrics` takes with N instant clones in the twin.

    python3 bench/scrape.py                # 5,000 clones, 20 scrapes, human-readable
    python3 bench/scrape.py --json         # ... plus one JSON line
    python3 bench/scrape.py --clones 500 --scrapes 50

Builds the clones in-process (the twin's own instant-clone code, called on its event loop through
`SimHandle.call`, skipping the SOAP round trips of the API) and times one exporter refresh over
real SOAP (duration, SOAP requests, series). Then it starts the real `forkscale metrics` process
against the twin and times scrapes sent the way Prometheus sends them (OpenMetrics accepted,
gzip, one kept-alive connection):

* idle: `--interval 3600`, after the first refresh - the cached sample, nothing else running;
* busy: `--interval 0.1`, so the exporter is re-reading 5,000 VMs (SOAP parsing, building and
  formatting the next sample) during nearly every scrape.

The exporter and the scraping client each run in a process of their own, so that the in-process
twin (which serializes the SOAP answers) competes with neither for the GIL, as a real vCenter
would not.

Measured (2 shared cores, Python 3.11, twin in the same box), 5,000 clones: one refresh 8.6-10.3 s
over 9 SOAP requests (1 view, 6 pages, 1 DestroyView, 1 QueryPerf), 20,021 series, 74 KB gzipped;
idle scrape p50 10-12 ms, p99 14 ms; while refreshing back to back p50 15-22 ms, p99 ~220 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyVmomi import vim  # noqa: E402

from forkscale.ledger import Ledger  # noqa: E402
from forkscale.observe.exporter import Exporter  # noqa: E402
from forkscale.observe.telemetry import Telemetry  # noqa: E402
from forkscale.sim import start_in_thread  # noqa: E402
from forkscale.spec import load_spec  # noqa: E402
from forkscale.vsphere.driver import Driver  # noqa: E402
from forkscale.vsphere.transport import Soap  # noqa: E402

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
POOL = "bench"


def build_clones(twin: Any, start: int, count: int) -> int:
    """Instant-clone the frozen src-linux `count` times with the twin's internals (on its loop)."""
    from forkscale.sim.dispatch import Ctx
    from forkscale.sim.ops.instant import do_instant_clone
    from forkscale.sim.ops.placement import resolve_placement

    src = next(mo for mo in twin.world.of_kind(vim.VirtualMachine) if getattr(mo, "name", "") == "src-linux")
    src.frozen = True
    ctx = Ctx(twin=twin, session=None, this=src, method="InstantClone_Task")
    for i in range(start, start + count):
        spec = vim.vm.InstantCloneSpec(name=f"{POOL}-{i:05d}", location=vim.vm.RelocateSpec(), config=[
            vim.option.OptionValue(key="forkscale.pool", value=POOL),
            vim.option.OptionValue(key="forkscale.id", value=str(i))])
        do_instant_clone(ctx, src, spec, resolve_placement(ctx, src, spec.location, instant=True))
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
    ap.add_argument("--scrapes", type=int, default=20, help="idle scrapes to time (default 20)")
    ap.add_argument("--busy-seconds", type=float, default=30.0,
                    help="how long to scrape while the exporter refreshes back to back (default 30)")
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
        result: dict[str, Any] = {"clones": args.clones, "build_s": round(build_s, 2)}
        result |= asyncio.run(refresh_cost(spec_path))
        with metrics_process(spec_path, "3600") as port:
            idle, size = client(port, "--count", str(args.scrapes))
        with metrics_process(spec_path, "0.1") as port:
            busy, _ = client(port, "--seconds", str(args.busy_seconds))
    finally:
        handle.stop()
    ms = 1000.0
    result |= {"bytes_gzip": size, "p50_ms": round(statistics.median(idle) * ms, 1),
               "p99_ms": round(percentile(idle, 0.99) * ms, 1), "max_ms": round(max(idle) * ms, 1),
               "busy_scrapes": len(busy), "busy_p50_ms": round(statistics.median(busy) * ms, 1),
               "busy_p99_ms": round(percentile(busy, 0.99) * ms, 1), "busy_max_ms": round(max(busy) * ms, 1)}
    s = result
    print(f"{s['clones']} clones (built in {s['build_s']}s); one refresh {s['refresh_s']}s over "
          f"{s['refresh_requests']} SOAP requests; {s['series']} series, {s['bytes_gzip']} bytes gzipped")
    print(f"scrape (idle): p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms ({args.scrapes} scrapes)")
    print(f"scrape (refreshing back to back): p50 {s['busy_p50_ms']} ms, p99 {s['busy_p99_ms']} ms, "
          f"max {s['busy_max_ms']} ms ({s['busy_scrapes']} scrapes in {args.busy_seconds:g}s)")
    if args.json:
        print(json.dumps(result))
    return 0


def client(port: int, *how: str) -> tuple[list[float], int]:
    """Scrape from a separate process (`--client PORT --count N | --seconds S`)."""
    out = subprocess.run([sys.executable, __file__, "--client", str(port), *how], capture_output=True, text=True,
                         check=True, timeout=600)
    data = json.loads(out.stdout)
    return data["times"], data["size"]


def client_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", type=int, required=True)
    ap.add_argument("--count", type=int)
    ap.add_argument("--seconds", type=float)
    args = ap.parse_args(argv)
    if args.count:
        times, size = scrape_times(args.client, args.count)
    else:
        times, size = scrape_for(args.client, args.seconds), 0
    print(json.dumps({"times": times, "size": size}))
    return 0


def scrape_for(port: int, seconds: float) -> list[float]:
    deadline = time.monotonic() + seconds
    times: list[float] = []
    while time.monotonic() < deadline:
        times.extend(scrape_times(port, 1)[0])
        time.sleep(0.05)
    return times


class metrics_process:  # noqa: N801  (used like a function: `with metrics_process(...) as port`)
    """`forkscale metrics` on a free port; yields the port once its first refresh is done."""

    def __init__(self, spec: Path, interval: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self.proc = subprocess.Popen([sys.executable, "-m", "forkscale.cli", "metrics", "-f", str(spec),
                                      "--listen", "127.0.0.1:0", "--interval", interval],
                                     env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def __enter__(self) -> int:
        box: dict[str, str] = {}
        reader = threading.Thread(target=lambda: box.update(line=self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout=600)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", box.get("line", ""))
        if m is None:
            self.proc.kill()
            raise RuntimeError(f"forkscale metrics did not start: {box.get('line')!r}")
        return int(m.group(1))

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def refresh_cost(spec_path: Path) -> dict[str, Any]:
    """One refresh in-process: its duration, SOAP requests and the series it produces."""
    spec = load_spec(spec_path)
    vc = spec.vcenter
    soap = Soap(vc.url, user=vc.user, password=vc.password, ca_file=str(vc.ca_file) if vc.ca_file else None)
    driver = Driver(soap)
    await soap.open()
    ledger = Ledger(spec.state)
    telemetry = Telemetry()
    try:
        exporter = Exporter(driver, spec, ledger, telemetry, interval_s=20)
        await exporter.refresh()  # the first one also reads the counter catalog
        before = soap.requests
        t0 = time.perf_counter()
        sample = await exporter.refresh()
        refresh_s = time.perf_counter() - t0
        requests = soap.requests - before
        assert len(sample.vms) >= 1, "no clones seen"
        series = sum(1 for line in telemetry.render().splitlines() if line[:1] != b"#")
    finally:
        ledger.close()
        await soap.close()
    return {"refresh_s": round(refresh_s, 2), "refresh_requests": requests, "series": series}


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]) if "--client" in sys.argv else main())
