"""Time to N ready instant clones: forkscale vs the ideal makespan, the sample script, a thread pool.

    python bench/fanout.py [--n 500] [--hosts 4] [--time-scale 1] [--repeat 5] [--json]

The twin runs in this process; forkscale and the baselines run as child processes against it.
Each forkscale run gets a fresh twin and its ideal is computed from that twin's own latency
draws, so every ratio compares numbers measured in the same run. See bench/README.md for what
each figure means and how the ideal is computed.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CLIENTS,
    MAX_HOSTS,
    REPO,
    Child,
    cores,
    freeze_sources,
    host_names,
    measure_child,
    pool_entry,
    run_and_emit,
    run_child,
    source_name,
    start_twin,
    table,
    twin_env,
    twin_in_workdir,
    workdir,
    world_yaml,
    write_spec,
)

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


def prepare_available() -> bool:
    return (REPO / "forkscale" / "commands" / "prepare.py").is_file() and (REPO / "forkscale" / "fleet" / "sources.py").is_file()


def run(args: argparse.Namespace) -> dict[str, Any]:
    hosts = host_names(args.hosts)
    reps: list[dict[str, Any]] = []
    base: dict[str, Any] = {}
    for rep in range(args.repeat):
        with fanout_twin(args, hosts, rep) as (d, twin):
            per_host, vcenter = twin.call(lambda t: (t.world.tasks.host_limit, t.world.tasks.vcenter.limit))
            if args.mode == "pools":
                freeze_sources(twin, hosts)
                out, baseline_source = pools_run(args, twin, d, hosts, per_host, vcenter)
            else:
                out, baseline_source = prepare_run(args, twin, d, hosts, per_host, vcenter)
            out.update(per_host_slots=per_host, vcenter_slots=vcenter)
            reps.append(out)
            if args.baselines and rep == args.repeat - 1:
                base = baselines(args, twin, baseline_source)
    # the median run by ratio is the one reported; every run's ratio is listed
    order = sorted(reps, key=lambda r: r["ratio_to_ideal"] or 0.0)
    result: dict[str, Any] = {"n": args.n, "hosts": len(hosts), "mode": args.mode, "time_scale": args.time_scale,
                              "cores": cores(), "repeat": args.repeat}
    result.update(order[(len(order) - 1) // 2])
    result["ratios_to_ideal"] = [r["ratio_to_ideal"] for r in reps]
    result.update(base)
    f = result["forkscale_s"]
    result["speedup_vs_naive"] = round(base["naive_s"] / f, 2) if base else None
    result["speedup_vs_pool8"] = round(base["pool8_s"] / f, 2) if base else None
    result.setdefault("naive_s", None)
    result.setdefault("pool8_s", None)
    return result


@contextlib.contextmanager
def fanout_twin(args: argparse.Namespace, hosts: tuple[str, ...], rep: int) -> Iterator[tuple[Path, Any]]:
    """A fresh twin for one run: `--mode pools` one source per host; `prepare` the default VMs
    (src-linux on esx-01 is the golden) on the default hosts, or on `--hosts` of its own."""
    if args.mode == "pools" or len(hosts) != 4:
        with workdir("fanout") as tmp:
            d = Path(tmp)
            world = world_yaml(d, hosts, sources=args.mode == "pools")
            twin = start_twin(d, time_scale=args.time_scale, world=world, seed=args.seed + rep)
            try:
                yield d, twin
            finally:
                twin.stop()
        return
    with twin_in_workdir("fanout", time_scale=args.time_scale, seed=args.seed + rep) as (d, twin):
        yield d, twin


def measure(args: argparse.Namespace, twin: Any, argv: list[str], env: dict[str, str], names: set[str],
            per_host: int, vcenter: int) -> tuple[Child, dict[str, Any]]:
    """Run the timed controller child; the twin's view of it: requests, CPU, the ideal from its draws."""
    n = args.n
    # keep every finished task of the run readable (the twin trims its recentTask list at 2,000)
    twin.call(lambda t: setattr(t.world.tasks, "keep_completed", max(t.world.tasks.keep_completed, n + 1000)))
    m = measure_child(twin, argv, env)
    child, spawned, twin_cpu_s, requests, methods = m.child, m.spawned, m.twin_cpu_s, m.requests, m.methods
    if os.environ.get("FORKSCALE_BENCH_VERBOSE"):
        sys.stderr.write(child.stderr[-4000:])
    jobs = instant_jobs(twin, names)
    if os.environ.get("FORKSCALE_BENCH_JOBS"):
        Path(os.environ["FORKSCALE_BENCH_JOBS"]).write_text(json.dumps({"jobs": jobs, "spawned": spawned}))
    if child.returncode == 0 and len(jobs) != n:
        raise SystemExit(f"the twin reports {len(jobs)} finished instant clones of the run, not {n}\n"
                         f"{child.stdout[-2000:]}\n{child.stderr[-2000:]}")
    gaps = slot_gaps(jobs, per_host)
    return child, {
        "forkscale_process_s": round(child.wall_s, 3), "forkscale_budget_per_host": args.per_host or per_host,
        "first_submit_after_spawn_s": round(gaps["first_submit_s"] - spawned, 3) if jobs else None,
        "refill_gap_ms": round(gaps["refill_gap_ms"], 1),
        "ideal_s": round(ideal_makespan(jobs, per_host, vcenter), 3), "twin_span_s": round(measured_twin_span(jobs), 3),
        "soap_requests": requests, "soap_requests_per_clone": round(requests / n, 3), "soap_methods": methods,
        "controller_cpu_s": round(child.cpu_s, 3), "controller_cpu_s_per_1000": round(child.cpu_s / n * 1000, 3),
        "controller_maxrss_mib": round(child.maxrss_kib / 1024, 1), "twin_cpu_s": round(twin_cpu_s, 3),
    }


def finish(out: dict[str, Any], forkscale_s: float) -> dict[str, Any]:
    out["forkscale_s"] = round(forkscale_s, 3)
    out["ratio_to_ideal"] = round(forkscale_s / out["ideal_s"], 4) if out["ideal_s"] > 0 else None
    return out


def prepare_run(args: argparse.Namespace, twin: Any, d: Path, hosts: tuple[str, ...], per_host: int,
                vcenter: int) -> tuple[dict[str, Any], str]:
    """One pool over per-host sources made by `forkscale prepare` (untimed), then `forkscale scale` (timed)."""
    guest_pw = d / "guest-password"
    guest_pw.write_text("vmfork-guest")  # the twin's simulated guests (builder.DEFAULT_WORLD["guest"])
    os.chmod(guest_pw, 0o600)
    pool = pool_entry("fan", "src-linux", args.n, 0, per_host=args.per_host or per_host)
    pool.update(freeze="guestops", guestops={"user": "root", "password_file": str(guest_pw)})
    pool["placement"]["hosts"] = list(hosts)
    spec = write_spec(d, twin, [pool])
    env = twin_env(twin)
    # the sources (linked clone, boot, freeze: ~40 s at scale 1) are set-up, not the measurement
    twin.admin("time_scale", value=min(args.time_scale, 0.01))
    prep = run_child([PY, "-m", "forkscale.cli", "prepare", "-f", str(spec), "-o", "json"], env)
    twin.admin("time_scale", value=args.time_scale)
    if prep.returncode != 0:
        raise SystemExit(f"forkscale prepare failed ({prep.returncode}):\n{prep.stdout[-2000:]}\n{prep.stderr[-3000:]}")
    sources = {s["host"]: s["name"] for s in json.loads(prep.stdout)["pools"][0]["sources"]}
    profile = os.environ.get("FORKSCALE_BENCH_PROFILE")
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    argv = [PY, *prefix, "-m", "forkscale.cli", "scale", "fan", str(args.n), "-f", str(spec), "-o", "json"]
    names = {f"fan-{i:05d}" for i in range(1, args.n + 1)}
    child, out = measure(args, twin, argv, env, names, per_host, vcenter)
    try:
        res = json.loads(child.stdout)["pools"][0]
    except (ValueError, KeyError, IndexError):
        res = {"ready": 0, "errors": [child.stdout[-1000:]]}
    if child.returncode != 0 or res["ready"] != args.n or res.get("fallbacks"):
        raise SystemExit(f"forkscale scale failed: {json.dumps(res)[:2000]}\n{child.stderr[-3000:]}")
    out.update(prepare_s=round(prep.wall_s, 2), sources=len(sources))
    return finish(out, float(res["seconds"])), sources.get(hosts[0]) or next(iter(sources.values()))


def pools_run(args: argparse.Namespace, twin: Any, d: Path, hosts: tuple[str, ...], per_host: int,
              vcenter: int) -> tuple[dict[str, Any], str]:
    """Without `forkscale prepare`: one pool per host's frozen source, converged together by one engine."""
    n = args.n
    share = [n // len(hosts) + (1 if i < n % len(hosts) else 0) for i in range(len(hosts))]
    pools = [pool_entry(f"fan{i + 1}", source_name(h), c, i, per_host=args.per_host or per_host)
             for i, (h, c) in enumerate(zip(hosts, share, strict=True)) if c]
    spec = write_spec(d, twin, pools)
    names = {f"{p['name']}-{i:05d}" for p in pools for i in range(1, p["count"] + 1)}
    child, out = measure(args, twin, [PY, CLIENTS, "controller", str(spec)], twin_env(twin), names, per_host, vcenter)
    res = child.last_json()
    if child.returncode != 0 or res["ready"] != n:
        raise SystemExit(f"forkscale run failed: ready {res['ready']}/{n}, errors {res['errors']}\n"
                         f"{child.stderr[-3000:]}")
    out.update(sources=len(pools))
    return finish(out, float(res["converge_s"])), source_name(hosts[0])


def baselines(args: argparse.Namespace, twin: Any, src: str) -> dict[str, Any]:
    env = twin_env(twin)
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


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def human(r: dict[str, Any]) -> str:
    how = ("one pool, per-host sources from `forkscale prepare`, `forkscale scale`" if r["mode"] == "prepare"
           else "one pool per host source, converged together by one engine")
    rows = [
        ("clones (N)", f"{r['n']} on {r['hosts']} hosts ({r['per_host_slots']} slots/host, vCenter "
                       f"{r['vcenter_slots']}), time scale {r['time_scale']}, {r['cores']} cores"),
        ("forkscale run", how),
        ("ideal makespan", f"{r['ideal_s']:.2f} s  (the twin's queues + the latencies it drew, zero overhead)"),
        ("forkscale", f"{r['forkscale_s']:.2f} s  (converge; process {r['forkscale_process_s']:.2f} s with start-up "
                      f"and login; per-host budget {r['forkscale_budget_per_host']})"),
        ("  ratio to ideal", f"{_f(r['ratio_to_ideal'])}  (median of {r['repeat']}: "
                             f"{', '.join(_f(x) for x in r['ratios_to_ideal'])})"),
        ("  where it goes", f"a freed host slot waits {r['refill_gap_ms']:.0f} ms for the next clone; "
                            f"twin span {r['twin_span_s']:.2f} s"),
    ]
    if r.get("naive_s") is not None:
        rows += [
            ("naive script", f"{r['naive_s']:.1f} s  (extrapolated from {r['naive_prefix']} clones, "
                             f"{r['naive_per_clone_s']:.3f} s each)  -> forkscale {r['speedup_vs_naive']:.1f}x faster"),
            (f"thread pool x{r['pool_workers']}", f"{r['pool8_s']:.1f} s  (extrapolated from {r['pool_prefix']} "
                                                  f"clones)  -> forkscale {r['speedup_vs_pool8']:.1f}x faster"),
        ]
    rows += [
        ("SOAP requests", f"{r['soap_requests']} ({r['soap_requests_per_clone']:.2f} per clone)"),
        ("  by method", ", ".join(f"{k} {v}" for k, v in r["soap_methods"].items())),
        ("controller CPU", f"{r['controller_cpu_s']:.2f} s ({r['controller_cpu_s_per_1000']:.2f} s per 1000 clones, "
                           f"start-up included), peak RSS {r['controller_maxrss_mib']:.0f} MiB"),
        ("twin CPU", f"{r['twin_cpu_s']:.2f} s during the forkscale run"),
    ]
    return table(rows, "fanout: time to N ready instant clones")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="clones to make (default 500)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="twin latency multiplier (default 1: an instant clone takes ~1 s)")
    p.add_argument("--hosts", type=int, default=4, choices=range(1, MAX_HOSTS + 1), metavar=f"1..{MAX_HOSTS}",
                   help="hosts, one frozen source each (default 4, the default world's)")
    p.add_argument("--naive-prefix", type=int, default=20, help="clones the sequential script makes (default 20)")
    p.add_argument("--pool-prefix", type=int, default=64, help="clones the thread pool makes (default 64)")
    p.add_argument("--workers", type=int, default=8, help="thread pool size (default 8)")
    p.add_argument("--per-host", type=int, default=0,
                   help="forkscale's per-host budget (default: the twin's per-host slots)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="measure forkscale and the ideal only (naive_s/pool8_s become null)")
    p.add_argument("--mode", choices=["prepare", "pools"], default="prepare" if prepare_available() else "pools",
                   help="prepare: one pool over per-host sources (`forkscale prepare`, then `forkscale scale`); "
                        "pools: one pool per host source, converged together (default: prepare when available)")
    p.add_argument("--repeat", type=int, default=5,
                   help="forkscale runs, each on a fresh twin; the median ratio is reported (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small baseline prefixes (for tests)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat = 1
        args.naive_prefix = min(args.naive_prefix, 3)
        args.pool_prefix = min(args.pool_prefix, 2 * args.workers)
    if args.n < args.hosts:
        p.error("--n must be at least --hosts")
    return run_and_emit(run, human, args)


if __name__ == "__main__":
    sys.exit(main())
