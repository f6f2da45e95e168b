"""How long a Prometheus scrape of `/metrics` takes with N clones: idle, refreshing, and during a fan-out.

    python bench/scrape.py [--clones 10000] [--scrapes 50] [--busy-seconds 15] [--fanout 1000] [--json]

The fleet (N tagged, ready clones in the twin and their `ready` rows in the ledger) is built
in-process, as `bench/inventory.py` builds it. Then the real `forkscale metrics` runs in a process
of its own (its inventory comes from the informer's model, kept current by the property
collector) and a third process scrapes it the way Prometheus does (OpenMetrics accepted, gzip,
one kept-alive connection, one scrape every 50 ms):

* idle: `--interval 3600`, after the first refresh;
* refreshing: `--interval 0.1`, the exporter rebuilding its sample back to back (--busy-seconds);
* fan-out: while `forkscale scale` (a fourth process) adds --fanout instant clones to the pool,
  so the model takes thousands of updates while the scrapes run (`--interval` 20, the default;
  `--fanout-interval` sets it).

For comparison, one exporter refresh with a direct read of vCenter (no informer) is timed
in-process first (`direct_refresh_s`, its SOAP requests and the series it renders).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HOSTS,
    REPO,
    cores,
    pool_entry,
    run_and_emit,
    source_name,
    twin_env,
    twin_in_workdir,
    write_spec,
)
from inventory import POOL, grow, percentile  # noqa: E402

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def scrape_times(port: int, n: int | None = None, seconds: float | None = None,
                 until: Path | None = None) -> tuple[list[float], int]:
    """Scrape every 50 ms: `n` times, for `seconds`, or until the file `until` exists."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: list[float] = []
    size = 0
    deadline = time.monotonic() + (seconds or 0)
    while True:
        if n is not None and len(times) >= n:
            break
        if seconds is not None and time.monotonic() >= deadline:
            break
        if until is not None and until.exists():
            break
        t0 = time.perf_counter()
        conn.request("GET", "/metrics", headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        times.append(time.perf_counter() - t0)
        assert resp.status == 200, resp.status
        size = len(body)
        time.sleep(0.05)
    conn.close()
    return times, size


def client(port: int, *how: str) -> subprocess.Popen[str]:
    """The scraper, in a process of its own (`--client PORT --count N | --seconds S | --until FILE`)."""
    return subprocess.Popen([sys.executable, __file__, "--client", str(port), *how], stdout=subprocess.PIPE,
                            text=True)


def client_result(proc: subprocess.Popen[str]) -> tuple[list[float], int]:
    out, _ = proc.communicate(timeout=900)
    data = json.loads(out)
    return data["times"], data["size"]


def client_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", type=int, required=True)
    ap.add_argument("--count", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--until")
    a = ap.parse_args(argv)
    times, size = scrape_times(a.client, a.count, a.seconds, Path(a.until) if a.until else None)
    print(json.dumps({"times": times, "size": size}))
    return 0


class MetricsProcess:
    """`forkscale metrics` on a free port; the port once its first refresh is done; its peak RSS."""

    def __init__(self, spec: Path, interval: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "forkscale.cli", "metrics", "-f", str(spec),
                                      "--listen", "127.0.0.1:0", "--interval", interval],
                                     env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=str(REPO))
        self.maxrss_mib = 0.0

    def __enter__(self) -> MetricsProcess:
        box: dict[str, str] = {}
        reader = threading.Thread(target=lambda: box.update(line=self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout=900)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", box.get("line", ""))
        if m is None:
            self.proc.kill()
            raise RuntimeError(f"forkscale metrics did not start: {box.get('line')!r}")
        self.port = int(m.group(1))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            self.maxrss_mib = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
        except (OSError, AttributeError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def stats(prefix: str, times: list[float]) -> dict[str, Any]:
    ms = 1000.0
    if not times:
        return {f"{prefix}scrapes": 0}
    return {f"{prefix}scrapes": len(times), f"{prefix}p50_ms": round(percentile(times, 0.5) * ms, 1),
            f"{prefix}p99_ms": round(percentile(times, 0.99) * ms, 1), f"{prefix}max_ms": round(max(times) * ms, 1)}


async def direct_refresh(spec_path: Path) -> dict[str, Any]:
    """One exporter refresh with a direct read (no informer): duration, SOAP requests, series."""
    from forkscale.commands.session import open_engine
    from forkscale.observe.exporter import Exporter
    from forkscale.observe.telemetry import Telemetry
    from forkscale.spec import load_spec

    spec = load_spec(spec_path)
    telemetry = Telemetry()
    async with open_engine(spec, telemetry=telemetry) as engine:
        exporter = Exporter(engine.driver, spec, engine.ledger, telemetry, interval_s=20)
        await exporter.refresh()  # the first one also reads the counter catalog
        before = engine.driver.soap.requests
        t0 = time.perf_counter()
        sample = await exporter.refresh()
        refresh_s = time.perf_counter() - t0
        requests = engine.driver.soap.requests - before
        assert len(sample.vms) >= 1, "no clones seen"
        series = sum(1 for line in telemetry.render().splitlines() if line[:1] != b"#")
    return {"direct_refresh_s": round(refresh_s, 2), "direct_refresh_requests": requests, "series": series}


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"clones": args.clones, "cores": cores(), "load": os.getloadavg()[0]}
    with twin_in_workdir("scrape", time_scale=args.time_scale, hosts=HOSTS, freeze=True, big_hosts=True) as (d, twin):
        result["build_s"] = round(grow(twin, d / "state.sqlite", 0, args.clones, HOSTS), 2)
        pool = pool_entry(POOL, source_name(HOSTS[0]), args.clones, 0)
        spec = write_spec(d, twin, [pool])
        env = dict(twin_env(twin), FORKSCALE_LOG_LEVEL="warning")
        if args.direct:
            result |= asyncio.run(direct_refresh(spec))
        with MetricsProcess(spec, "3600", env) as mp:
            idle, size = client_result(client(mp.port, "--count", str(args.scrapes)))
        result |= {"bytes_gzip": size, **stats("", idle), "idle_maxrss_mib": round(mp.maxrss_mib, 1)}
        with MetricsProcess(spec, "0.1", env) as mp:
            busy, _ = client_result(client(mp.port, "--seconds", str(args.busy_seconds)))
        result |= stats("busy_", busy)
        with MetricsProcess(spec, str(args.fanout_interval), env) as mp:
            result |= fanout_phase(args, d, spec, env, mp.port)
        result["fanout_maxrss_mib"] = round(mp.maxrss_mib, 1)
        result["fanout_interval_s"] = args.fanout_interval
    return result


def fanout_phase(args: argparse.Namespace, d: Path, spec: Path, env: dict[str, str], port: int) -> dict[str, Any]:
    """Scrape while `forkscale scale` adds --fanout clones (in its own process)."""
    if args.fanout <= 0:
        return {"fanout_scrapes": 0}
    done = d / "fanout.done"
    scraper = client(port, "--until", str(done))
    t0 = time.monotonic()
    scale = subprocess.run([sys.executable, "-m", "forkscale.cli", "scale", POOL, str(args.clones + args.fanout),
                            "-f", str(spec), "-o", "json"], env=env, cwd=str(REPO), capture_output=True, text=True,
                           timeout=1800)
    fanout_s = time.monotonic() - t0
    done.touch()
    times, _ = client_result(scraper)
    if scale.returncode != 0:
        raise SystemExit(f"forkscale scale failed ({scale.returncode}):\n{scale.stdout[-2000:]}\n{scale.stderr[-2000:]}")
    ready = json.loads(scale.stdout)["pools"][0]["ready"]
    return {"fanout_clones": args.fanout, "fanout_s": round(fanout_s, 2), "fanout_ready": ready,
            **stats("fanout_", times)}


def human(s: dict[str, Any]) -> str:
    lines = [f"scrape: {s['clones']} clones (built in {s['build_s']} s), {s['cores']} cores, load {s['load']:.1f}; "
             f"{s.get('series', '?')} series, {s['bytes_gzip']} bytes gzipped"]
    if "direct_refresh_s" in s:
        lines.append(f"  one refresh with a direct read (no informer): {s['direct_refresh_s']} s over "
                     f"{s['direct_refresh_requests']} SOAP requests")
    lines.append(f"  idle (served from the model): p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms "
                 f"({s['scrapes']} scrapes); metrics process peak RSS {s['idle_maxrss_mib']:.0f} MiB")
    lines.append(f"  refreshing back to back: p50 {s['busy_p50_ms']} ms, p99 {s['busy_p99_ms']} ms, "
                 f"max {s['busy_max_ms']} ms ({s['busy_scrapes']} scrapes)")
    if s.get("fanout_scrapes"):
        lines.append(f"  during a fan-out of {s['fanout_clones']} clones ({s['fanout_s']} s): p50 {s['fanout_p50_ms']} ms, "
                     f"p99 {s['fanout_p99_ms']} ms, max {s['fanout_max_ms']} ms ({s['fanout_scrapes']} scrapes); "
                     f"peak RSS {s['fanout_maxrss_mib']:.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clones", type=int, default=10000, help="clones in the fleet (default 10,000)")
    ap.add_argument("--scrapes", type=int, default=50, help="idle scrapes to time (default 50)")
    ap.add_argument("--busy-seconds", type=float, default=15.0,
                    help="how long to scrape while the exporter refreshes back to back (default 15)")
    ap.add_argument("--fanout", type=int, default=1000, help="clones the fan-out phase adds (default 1,000; 0: none)")
    ap.add_argument("--fanout-interval", type=float, default=20.0,
                    help="`forkscale metrics --interval` during the fan-out (default 20, its default)")
    ap.add_argument("--time-scale", type=float, default=0.1,
                    help="twin latency multiplier for the fan-out (default 0.1: an instant clone ~0.1 s)")
    ap.add_argument("--no-direct", dest="direct", action="store_false",
                    help="skip the in-process refresh with a direct read")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)
    if args.clones < 1 or args.scrapes < 1:
        ap.error("--clones and --scrapes must be positive")
    return run_and_emit(run, human, args)


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]) if "--client" in sys.argv else main())
