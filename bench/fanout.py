"""Time to N ready instant clones: forkscale vs the ideal makespan, the sample script, a thread pool.

    python bench/fanout.py [--n 500] [--time-scale 1] [--json]

One twin (in this process), one run per comparison, ratios measured in the same run. See
bench/README.md for what each figure means and how the ideal is computed.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HOSTS,
    REPO,
    cores,
    emit,
    freeze_sources,
    pool_entry,
    profile_twin,
    run_child,
    source_name,
    start_twin,
    stats_delta,
    table,
    twin_cpu,
    twin_env,
    twin_stats,
    workdir,
    world_yaml,
    write_spec,
)

CLIENTS = str(REPO / "bench" / "clients.py")
PY = sys.executable


def instant_jobs(twin: Any, names: set[str]) -> list[dict[str, Any]]:
    """Every finished instant clone task of the forkscale run: host, queue order, drawn latencies."""

    def read(t: Any) -> list[dict[str, Any]]:
        out = []
        for task in list(t.world.tasks.recent):
            info = task.info
            if info.descriptionId != "VirtualMachine.instantClone" or info.state != "success":
                continue
            clone = t.world.objects.get(info.result._moId)
            if clone is None or clone.name not in names:
                continue
            src = t.world.objects.get(info.entity._moId)
            out.append({"host": src.host.moid, "seq": int(task.moid.split("-")[1]),
                        "run_s": float(getattr(task, "drawn_s", 0.0)),
                        "resume_s": float(getattr(clone, "guest_drawn_s", 0.0)),
                        "queued": info.queueTime.timestamp(), "started": info.startTime.timestamp(),
                        "completed": info.completeTime.timestamp()})
        return out

    return list(twin.call(read))


def ideal_makespan(jobs: list[dict[str, Any]], per_host: int, vcenter: int) -> float:
    """The lower bound: every clone submitted at t=0, the twin's slot queues (FIFO per host, and the
    vCenter-wide limit) running the latencies it actually drew, in the order it drew them; a clone
    is ready when its task ends plus its drawn guest-resume time. Zero controller overhead."""
    order = sorted(jobs, key=lambda j: j["seq"])
    queue = list(order)
    running: list[tuple[float, int, str]] = []  # (finish, idx, host)
    busy: dict[str, int] = {}
    total = 0
    now = 0.0
    makespan = 0.0
    idx = 0
    while queue or running:
        started = []
        for j in queue:
            if total >= vcenter:
                break
            if busy.get(j["host"], 0) < per_host:
                busy[j["host"]] = busy.get(j["host"], 0) + 1
                total += 1
                finish = now + j["run_s"]
                makespan = max(makespan, finish + j["resume_s"])
                idx += 1
                heapq.heappush(running, (finish, idx, j["host"]))
                started.append(j)
        if started:
            ids = {id(j) for j in started}
            queue = [j for j in queue if id(j) not in ids]
        if not running:
            break
        now, _, host = heapq.heappop(running)
        busy[host] -= 1
        total -= 1
    return makespan


def measured_twin_span(jobs: list[dict[str, Any]]) -> float:
    """First task queued to last clone ready, as the twin saw it (for the table only)."""
    if not jobs:
        return 0.0
    first = min(j["queued"] for j in jobs)
    return max(j["completed"] + j["resume_s"] for j in jobs) - first


def slot_gaps(jobs: list[dict[str, Any]], per_host: int) -> dict[str, float]:
    """How the run differs from the ideal, as the twin saw it: when the first task arrived, and how
    long a host slot sat idle between one clone ending and the next one arriving (mean over refills)."""
    if not jobs:
        return {"first_submit_s": 0.0, "refill_gap_ms": 0.0}
    by_host: dict[str, list[dict[str, Any]]] = {}
    for j in jobs:
        by_host.setdefault(j["host"], []).append(j)
    gaps = []
    for hj in by_host.values():
        hj.sort(key=lambda j: j["seq"])
        ends = sorted(j["completed"] for j in hj)
        # the k-th task beyond the first wave can only start once the (k - per_host)-th ended
        for k, j in enumerate(hj[per_host:]):
            gaps.append(max(0.0, j["started"] - ends[k]))
    return {"first_submit_s": min(j["queued"] for j in jobs),
            "refill_gap_ms": 1000 * sum(gaps) / len(gaps) if gaps else 0.0}


def run(args: argparse.Namespace) -> dict[str, Any]:
    hosts = HOSTS[: args.hosts]
    out: dict[str, Any] = {"n": args.n, "hosts": len(hosts), "time_scale": args.time_scale, "cores": cores()}
    with workdir("fanout") as tmp:
        d = Path(tmp)
        twin = start_twin(d, time_scale=args.time_scale, world=world_yaml(d, hosts), seed=args.seed)
        try:
            freeze_sources(twin, hosts)
            per_host, vcenter = twin.call(lambda t: (t.world.tasks.host_limit, t.world.tasks.vcenter.limit))
            out.update(per_host_slots=per_host, vcenter_slots=vcenter)
            out.update(forkscale(args, twin, d, hosts, per_host, vcenter))
            if args.baselines:
                out.update(baselines(args, twin, hosts[0]))
        finally:
            twin.stop()
    f = out["forkscale_s"]
    out["ratio_to_ideal"] = round(f / out["ideal_s"], 4) if out["ideal_s"] > 0 else None
    out["speedup_vs_naive"] = round(out["naive_s"] / f, 2) if "naive_s" in out else None
    out["speedup_vs_pool8"] = round(out["pool8_s"] / f, 2) if "pool8_s" in out else None
    return out


def forkscale(args: argparse.Namespace, twin: Any, d: Path, hosts: tuple[str, ...], per_host: int,
              vcenter: int) -> dict[str, Any]:
    n = args.n
    share = [n // len(hosts) + (1 if i < n % len(hosts) else 0) for i in range(len(hosts))]
    pools = [pool_entry(f"fan{i + 1}", source_name(h), c, i, per_host=args.per_host or per_host)
             for i, (h, c) in enumerate(zip(hosts, share, strict=True)) if c]
    spec = write_spec(d, twin, pools)
    before = twin_stats(twin)
    cpu0 = twin_cpu(twin)
    with profile_twin(twin):
        child = run_child([PY, CLIENTS, "controller", str(spec)], twin_env(twin))
    twin_cpu_s = twin_cpu(twin) - cpu0
    after = twin_stats(twin)
    res = child.last_json()
    if child.returncode != 0 or res["ready"] != n:
        raise SystemExit(f"forkscale run failed: ready {res['ready']}/{n}, errors {res['errors']}\n"
                         f"{child.stderr[-3000:]}")
    requests, methods = stats_delta(before, after)
    names = {f"{p['name']}-{i:05d}" for p in pools for i in range(1, p["count"] + 1)}
    jobs = instant_jobs(twin, names)
    if os.environ.get("FORKSCALE_BENCH_JOBS"):
        Path(os.environ["FORKSCALE_BENCH_JOBS"]).write_text(json.dumps({"jobs": jobs, "result": res}))
    gaps = slot_gaps(jobs, per_host)
    return {
        "forkscale_s": round(res["converge_s"], 3), "forkscale_connect_s": round(res["connect_s"], 3),
        "forkscale_process_s": round(child.wall_s, 3), "forkscale_budget_per_host": args.per_host or per_host,
        "first_submit_s": round(gaps["first_submit_s"] - res["converge_started"], 3),
        "refill_gap_ms": round(gaps["refill_gap_ms"], 1),
        "ideal_s": round(ideal_makespan(jobs, per_host, vcenter), 3), "twin_span_s": round(measured_twin_span(jobs), 3),
        "soap_requests": requests, "soap_requests_per_clone": round(requests / n, 3), "soap_methods": methods,
        "watcher_updates": res["watcher_updates"],
        "controller_cpu_s": round(child.cpu_s, 3), "controller_cpu_s_per_1000": round(child.cpu_s / n * 1000, 3),
        "controller_maxrss_mib": round(child.maxrss_kib / 1024, 1), "twin_cpu_s": round(twin_cpu_s, 3),
    }


def baselines(args: argparse.Namespace, twin: Any, host: str) -> dict[str, Any]:
    env = twin_env(twin)
    src = source_name(host)
    # (b) the sample script, sequential, on a prefix, extrapolated linearly (+ the last guest's resume)
    naive = run_child([PY, CLIENTS, "naive", twin.url, twin.ca_file or "", src, str(args.naive_prefix), "naive"],
                      env).last_json()
    # (c) a thread pool of such workers, one session per thread
    k = min(args.n, args.pool_prefix)
    pooled = run_child([PY, CLIENTS, "pool", twin.url, twin.ca_file or "", src, str(k), str(args.workers), "pool"],
                       env).last_json()
    return {"naive_s": round(naive["per_clone_s"] * args.n + naive["tail_s"], 3), "naive_prefix": naive["k"],
            "naive_per_clone_s": round(naive["per_clone_s"], 4),
            "pool8_s": round(pooled["seconds"] / k * args.n + pooled["tail_s"], 3), "pool_workers": args.workers,
            "pool_prefix": k}


def human(r: dict[str, Any]) -> str:
    rows = [
        ("clones (N)", f"{r['n']} on {r['hosts']} hosts ({r['per_host_slots']} slots/host, vCenter {r['vcenter_slots']}), "
                       f"time scale {r['time_scale']}, {r['cores']} cores"),
        ("ideal makespan", f"{r['ideal_s']:.2f} s  (the twin's queues + the latencies it drew, zero overhead)"),
        ("forkscale", f"{r['forkscale_s']:.2f} s  (converge; +{r['forkscale_connect_s']:.2f} s connect; "
                      f"process {r['forkscale_process_s']:.2f} s; per-host budget {r['forkscale_budget_per_host']})"),
        ("  ratio to ideal", f"{r['ratio_to_ideal']:.3f}"),
        ("  where it goes", f"first clone submitted after {r['first_submit_s']:.2f} s; a freed host slot waits "
                            f"{r['refill_gap_ms']:.0f} ms for the next clone; twin span {r['twin_span_s']:.2f} s"),
    ]
    if r.get("naive_s") is not None:
        rows += [
            ("naive script", f"{r['naive_s']:.1f} s  (extrapolated from {r['naive_prefix']} clones, "
                             f"{r['naive_per_clone_s']:.3f} s each)  -> forkscale {r['speedup_vs_naive']:.1f}x faster"),
            (f"thread pool x{r['pool_workers']}", f"{r['pool8_s']:.1f} s  (extrapolated from {r['pool_prefix']} "
                                                  f"clones)  -> forkscale {r['speedup_vs_pool8']:.1f}x faster"),
        ]
    rows += [
        ("SOAP requests", f"{r['soap_requests']} ({r['soap_requests_per_clone']:.2f} per clone; "
                          f"{r['watcher_updates']} watcher updates)"),
        ("  by method", ", ".join(f"{k} {v}" for k, v in r["soap_methods"].items())),
        ("controller CPU", f"{r['controller_cpu_s']:.2f} s ({r['controller_cpu_s_per_1000']:.2f} s per 1000 clones), "
                           f"peak RSS {r['controller_maxrss_mib']:.0f} MiB"),
        ("twin CPU", f"{r['twin_cpu_s']:.2f} s during the forkscale run"),
    ]
    return table(rows, "fanout: time to N ready instant clones")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="clones to make (default 500)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="twin latency multiplier (default 1: an instant clone takes ~1 s)")
    p.add_argument("--hosts", type=int, default=4, choices=range(1, 5), help="hosts, one frozen source each")
    p.add_argument("--naive-prefix", type=int, default=20, help="clones the sequential script makes (default 20)")
    p.add_argument("--pool-prefix", type=int, default=64, help="clones the thread pool makes (default 64)")
    p.add_argument("--workers", type=int, default=8, help="thread pool size (default 8)")
    p.add_argument("--per-host", type=int, default=0,
                   help="forkscale's per-host budget (default: the twin's per-host slots)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="measure forkscale and the ideal only (naive_s/pool8_s become null)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small baseline prefixes (for tests)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args(argv)
    if args.quick:
        args.naive_prefix = min(args.naive_prefix, 3)
        args.pool_prefix = min(args.pool_prefix, 2 * args.workers)
    if args.n < len(HOSTS[: args.hosts]):
        p.error("--n must be at least --hosts")
    result = run(args)
    emit(human(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
