"""JIT claim latency from warm spares through the HTTP API, at a steady claim rate.

    python bench/claim.py [--rate 100] [--claims 500] [--headroom N] [--json]

A real `forkscale serve` (child process) keeps a headroom pool of ready spares against the twin;
a load generator (another child) POSTs /v1/pools/{pool}/claim open-loop at --rate per second,
each claim timed from its scheduled start to its answer (so a slow server cannot hide latency
by slowing the generator down). The headroom policy refills behind the claims, so the claims
are served while the controller is busy cloning, as in a morning login storm.

Exits 0 with "skipped: ..." (and {"skipped": ...} with --json) when this checkout has no HTTP API.
"""

from __future__ import annotations

import argparse
import os
import secrets
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CLIENTS,
    HOSTS,
    REPO,
    cores,
    emit,
    measure_child,
    pool_entry,
    run_and_emit,
    source_name,
    stop,
    table,
    twin_env,
    twin_in_workdir,
    write_spec,
)

POOL = "vdi"


def api_missing() -> str | None:
    """Why the API cannot be benchmarked here, or None when it can."""
    if not (REPO / "forkscale" / "workloads" / "api.py").is_file() or \
            not (REPO / "forkscale" / "commands" / "serve.py").is_file():
        return "the HTTP API is not available yet (no forkscale/workloads/api.py or `forkscale serve`)"
    try:
        from forkscale.cli import build_parser

        build_parser().parse_args(["serve", "-f", "x.yaml"])
    except (SystemExit, Exception):
        return "the HTTP API is not available yet (`forkscale serve` is not a command of this checkout)"
    return None


def start_serve(d: Path, spec: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    token = secrets.token_hex(24)
    tok = d / "api-token"
    tok.write_text(token + "\n")
    os.chmod(tok, 0o600)
    err = (d / "serve.log").open("w")
    profile = os.environ.get("FORKSCALE_BENCH_PROFILE")  # cProfile the serve process into this file
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    proc = subprocess.Popen([sys.executable, *prefix, "-m", "forkscale.cli", "serve", "-f", str(spec), "--listen",
                             "127.0.0.1:0", "--token-file", str(tok)], env=env, cwd=str(REPO), text=True,
                            stdout=subprocess.PIPE, stderr=err)
    err.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if "listening on " in line:
                return proc, line.split("listening on ", 1)[1].split()[0], token
            if not line and proc.poll() is not None:
                break
    proc.kill()
    proc.wait()
    raise SystemExit(f"forkscale serve did not start:\n{(d / 'serve.log').read_text()[-3000:]}")


def get(url: str, token: str) -> Any:
    import json

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def wait_spares(url: str, token: str, want: int, timeout: float, proc: subprocess.Popen[str], log: Path) -> float:
    started = time.monotonic()
    doc: Any = None
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"forkscale serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        doc = get(f"{url}/v1/pools/{POOL}", token)
        if _ready(doc) >= want:
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"the pool did not warm {want} spares in {timeout:.0f}s: {str(doc)[:2000]}")


def _ready(doc: Any) -> int:
    for key in ("spares", "ready"):
        val = doc.get(key) if isinstance(doc, dict) else None
        if isinstance(val, int):
            return val
    counts = doc.get("counts") if isinstance(doc, dict) else None
    return int(counts.get("ready", 0)) if isinstance(counts, dict) else 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    host = HOSTS[0]
    with twin_in_workdir("claim", time_scale=args.time_scale, hosts=(host,), freeze=True) as (d, twin):
        pool = pool_entry(POOL, source_name(host), 0, 0)
        pool.pop("count")
        pool["on_release"] = "keep"
        pool["policy"] = {"strategy": "headroom", "headroom": args.headroom, "min": 0,
                          "max": args.claims + 2 * args.headroom, "cooldown_up_s": 0, "cooldown_down_s": 3600,
                          "evaluate_every_s": 1}
        spec = write_spec(d, twin, [pool])
        env = twin_env(twin)
        proc, url, token = start_serve(d, spec, env)
        try:
            warm_s = wait_spares(url, token, args.headroom, 300, proc, d / "serve.log")
            m = measure_child(twin, [sys.executable, CLIENTS, "claims", url, POOL, str(args.rate), str(args.claims),
                                     str(args.wait_s)], dict(env, FORKSCALE_BENCH_TOKEN=token))
            twin_cpu_s, requests, methods = m.twin_cpu_s, m.requests, m.methods
            res = m.child.last_json()
            final = get(f"{url}/v1/pools/{POOL}", token)
        finally:
            serve_cpu, serve_rss = stop(proc)
            if os.environ.get("FORKSCALE_BENCH_VERBOSE"):
                sys.stderr.write((d / "serve.log").read_text()[-int(os.environ.get("FORKSCALE_BENCH_VERBOSE", "1") or 1) * 20000:])
    lat = sorted(res["latencies_ms"])
    return {
        "rate": args.rate, "claims": args.claims, "headroom": args.headroom, "time_scale": args.time_scale,
        "cores": cores(), "warm_s": round(warm_s, 2),
        "ok": res["ok"], "unavailable": res["unavailable"], "errors": res["errors"],
        "achieved_rate": round(res["achieved_rate"], 1),
        "p50_ms": round(pct(lat, 50), 2), "p90_ms": round(pct(lat, 90), 2), "p99_ms": round(pct(lat, 99), 2),
        "max_ms": round(lat[-1], 2) if lat else 0.0, "mean_ms": round(sum(lat) / len(lat), 2) if lat else 0.0,
        "spares_after": _ready(final), "soap_requests_during": requests, "soap_methods": methods,
        "serve_cpu_s": round(serve_cpu, 2), "serve_maxrss_mib": round(serve_rss / 1024, 1),
        "twin_cpu_s": round(twin_cpu_s, 2),
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def human(r: dict[str, Any]) -> str:
    rows = [
        ("claims", f"{r['claims']} at {r['rate']}/s (all answered at {r['achieved_rate']}/s), headroom {r['headroom']} "
                   f"warm spares (warmed in {r['warm_s']:.1f} s), twin time scale {r['time_scale']}, {r['cores']} cores"),
        ("answered", f"{r['ok']} claimed, {r['unavailable']} 503 (no spare in time), {r['errors']} errors"),
        ("latency", f"p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                    f"max {r['max_ms']:.1f} ms"),
        ("behind the claims", f"{r['soap_requests_during']} SOAP requests (refills), {r['spares_after']} spares after"),
        ("serve process", f"{r['serve_cpu_s']:.2f} s CPU in all, peak RSS {r['serve_maxrss_mib']:.0f} MiB"),
    ]
    return table(rows, "claim: JIT claim latency from warm spares (POST /v1/pools/{pool}/claim)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="claims per second (default 100)")
    p.add_argument("--claims", type=int, default=500, help="claims in all (default 500: 5 s at 100/s)")
    p.add_argument("--n", type=int, help="same as --claims")
    p.add_argument("--headroom", type=int, default=0,
                   help="warm spares kept above the claimed ones (default: --claims, so every claim finds one)")
    p.add_argument("--wait-s", type=float, default=5.0, help="each claim's wait_s (default 5)")
    p.add_argument("--time-scale", type=float, default=0.1,
                   help="twin latency multiplier (default 0.1: refills keep up with 100 claims/s on one host)")
    p.add_argument("--quick", action="store_true", help="small run (for tests)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args(argv)
    if args.n:
        args.claims = args.n
    args.headroom = args.headroom or args.claims
    why = api_missing()
    if why:
        emit(f"claim: skipped: {why}", {"skipped": why}, args.json)
        return 0
    return run_and_emit(run, human, args)


if __name__ == "__main__":
    sys.exit(main())
