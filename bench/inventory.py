"""Inventory read and no-op reconcile at 1,000 / 5,000 / 10,000 clones, with and without the informer.

    python bench/inventory.py [--sizes 1000,5000,10000] [--repeat 3] [--changes 50] [--json]

The fleet is built in-process, fast: the twin's VMs are made with its own builder (`make_vm`)
and tagged like forkscale's clones, and the matching ledger rows are inserted in one
transaction, so a converge finds N ready clones to keep and nothing to do. Each size is then
measured by two fresh controller processes:

* `bench/clients.py inventory`: `Driver.inventory()` (a direct read) and a full `Engine.converge`
  of the pool at its current size (best of --repeat), and the process's peak RSS from wait4;
* `bench/clients.py informed`: the same engine with the informer (`forkscale serve`'s): its first
  full read, the steady-state round (a no-op converge with the model warm: median of --repeat,
  and the most SOAP requests any of them sent), then --changes clones powered off behind its
  back through the twin's admin API, each timed from the request to the model showing it
  (change-to-model latency), and that process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CLIENTS,
    HOSTS,
    cores,
    measure_child,
    pool_entry,
    run_and_emit,
    source_name,
    twin_in_workdir,
    write_spec,
)

POOL = "inv"
CHUNK = 1000


def add_vms(twin: Any, rows: list[tuple[int, str, str, str]]) -> dict[str, tuple[str, str]]:
    """Make tagged, powered-on, guest-ready VMs in the twin: (ledger id, name, host, mac) -> (moref,
    instance UUID) by name."""

    def make(t: Any, batch: list[tuple[int, str, str, str]]) -> dict[str, tuple[str, str]]:
        from pyVmomi import vim

        from forkscale.sim.builder import make_vm

        w = t.world
        by_name = {mo.name: mo for mo in w.objects.values() if hasattr(mo, "name")}
        folder = by_name["forkscale"]
        ds = by_name["ds-ssd"]
        net = by_name["VM Network"]
        hosts = {h.name: h for h in w.of_kind(vim.HostSystem)}
        out = {}
        for clone_id, name, host, mac in batch:
            src = by_name[source_name(host)]
            spec = {"name": name, "memory_mb": 512, "cpus": 1, "disk_gib": 1, "guest_id": src.guest_id,
                    "guest_full_name": src.guest_full_name, "power": "on"}
            vm = make_vm(w, spec, folder=folder, host=hosts[host], pool=src.pool, datastore=ds, network=net)
            vm.extra.update({"forkscale.pool": POOL, "forkscale.id": str(clone_id),
                             "guestinfo.forkscale.status": "ready", "guestinfo.forkscale.mac": mac,
                             "guestinfo.forkscale.id": str(clone_id)})
            vm.changed()
            out[name] = (vm.moid, vm.instance_uuid)
        return out

    morefs: dict[str, tuple[str, str]] = {}
    for i in range(0, len(rows), CHUNK):
        morefs.update(twin.call(make, rows[i:i + CHUNK]))
    return morefs


def grow(twin: Any, state: Path, have: int, want: int, hosts: tuple[str, ...]) -> float:
    """Add clones have+1..want, to the ledger (one transaction) and the twin; seconds taken."""
    started = time.monotonic()
    from forkscale.ledger import Ledger

    Ledger(state).close()  # create / migrate the file the way forkscale does
    now = time.time()
    rows = []
    for i in range(have + 1, want + 1):
        host = hosts[(i - 1) % len(hosts)]
        mac = f"00:50:56:{(i >> 16) & 0x3f:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}"
        ip = f"10.{64 + (i >> 16)}.{(i >> 8) & 0xff}.{i & 0xff}"
        rows.append((i, f"{POOL}-{i:05d}", host, mac, ip))
    morefs = add_vms(twin, [(i, name, host, mac) for i, name, host, mac, _ in rows])
    conn = sqlite3.connect(state)
    with conn:
        conn.executemany(
            """INSERT INTO clones (id, pool, name, hostname, ip, mac, kind, source, source_generation, host, datastore,
                   port_group, vm_moref, instance_uuid, state, created_at, updated_at, ready_at)
               VALUES (?, ?, ?, ?, ?, ?, 'instant', ?, 1, ?, 'ds-ssd', 'VM Network', ?, ?, 'ready', ?, ?, ?)""",
            [(i, POOL, name, name, ip, mac, source_name(host), host, *morefs[name], now + i * 1e-6, now, now)
             for i, name, host, mac, ip in rows])
        # the counts every ledger write keeps (these rows bypassed the ledger)
        conn.execute("INSERT INTO pool_counts (pool, state, n) VALUES (?, 'ready', ?) "
                     "ON CONFLICT (pool, state) DO UPDATE SET n = n + excluded.n", (POOL, len(rows)))
    conn.close()
    return time.monotonic() - started


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(args.sizes)
    hosts = HOSTS
    results = []
    with twin_in_workdir("inventory", time_scale=0.001, hosts=hosts, freeze=True) as (d, twin):
        state = d / "state.sqlite"
        have = 0
        for n in sizes:
            build_s = grow(twin, state, have, n, hosts)
            have = n
            # the pool converges from one of the sources (the others are plain VMs to it)
            pool = pool_entry(POOL, source_name(hosts[0]), n, 0)
            spec = write_spec(d, twin, [pool], name=f"inv-{n}.yaml")
            m = measure_child(twin, [sys.executable, CLIENTS, "inventory", str(spec), POOL, str(args.repeat)])
            child = m.child
            res = child.last_json()
            if child.returncode != 0 or res["ready"] != n or res["created"] or res["destroyed"] or res["failed"]:
                raise SystemExit(f"the no-op converge at {n} was not a no-op: {res}\n{child.stderr[-3000:]}")
            informed = measure_informed(twin, spec, n, args)
            results.append({"clones": n, "vms": res["vms"], "inventory_s": round(res["inventory_s"], 3),
                            "converge_s": round(res["converge_s"], 3),
                            "converge_requests": res["converge_requests"],
                            "controller_cpu_s": round(child.cpu_s, 3),
                            "controller_maxrss_mib": round(child.maxrss_kib / 1024, 1),
                            "twin_cpu_s": round(m.twin_cpu_s, 3),
                            "soap_requests": m.requests, "soap_methods": m.methods, "build_s": round(build_s, 2),
                            **informed})
    top = results[-1]
    return {"sizes": [r["clones"] for r in results], "repeat": args.repeat, "changes": args.changes, "cores": cores(),
            "load": os.getloadavg()[0], "results": results,
            "first_read_s": {str(r["clones"]): r["first_read_s"] for r in results},
            "steady_s": {str(r["clones"]): r["steady_s"] for r in results},
            "steady_requests": {str(r["clones"]): r["steady_requests"] for r in results},
            "change_p99_s": {str(r["clones"]): r["change_p99_s"] for r in results},
            "inventory_s": {str(r["clones"]): r["inventory_s"] for r in results},
            "converge_s": {str(r["clones"]): r["converge_s"] for r in results},
            "rss_mib_at_max": top["controller_maxrss_mib"], "max_clones": top["clones"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else 0.0


def measure_informed(twin: Any, spec: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The informer's figures at this size (a fresh controller process); the powered-off clones are
    powered on again afterwards, so the next size starts from N ready clones."""
    admin = twin.url.rsplit("/sdk", 1)[0] + "/forkscale-sim/admin"
    m = measure_child(twin, [sys.executable, CLIENTS, "informed", str(spec), POOL, str(args.repeat),
                             str(args.changes), admin])
    res = m.child.last_json()
    if m.child.returncode != 0 or res["ready"] != n or res["created"] or res["destroyed"] or res["failed"]:
        raise SystemExit(f"the steady-state converge at {n} was not a no-op: {res}\n{m.child.stderr[-3000:]}")
    power_on(twin, POOL)
    lat = res["change_to_model_s"]
    return {"first_read_s": round(res["first_read_s"], 3), "steady_s": round(res["steady_s"], 4),
            "steady_all_s": [round(x, 4) for x in res["steady_all_s"]], "steady_requests": res["steady_requests"],
            "change_p50_s": round(percentile(lat, 0.5), 4), "change_p99_s": round(percentile(lat, 0.99), 4),
            "changes": len(lat), "informed_maxrss_mib": round(m.child.maxrss_kib / 1024, 1),
            "informed_cpu_s": round(m.child.cpu_s, 3), "informed_requests": m.requests,
            "informed_methods": m.methods}


def power_on(twin: Any, pool: str) -> None:
    def run(t: Any) -> int:
        from pyVmomi import vim

        from forkscale.sim.ops.power import power_on_now

        n = 0
        for vm in list(t.world.of_kind(vim.VirtualMachine)):
            if vm.extra.get("forkscale.pool") == pool and vm.power_state != "poweredOn":
                power_on_now(vm, boot=False)
                vm.extra["guestinfo.forkscale.status"] = "ready"
                vm.changed()
                n += 1
        return n

    twin.call(run)


def human(r: dict[str, Any]) -> str:
    head = (f"{'clones':>8} {'VMs':>7} {'inventory()':>12} {'no-op converge':>15} {'requests':>9} {'ctl CPU':>8} "
            f"{'twin CPU':>9} {'ctl RSS':>9}")
    lines = [f"inventory: Driver.inventory() and a no-op Engine.converge (best of {r['repeat']}), {r['cores']} cores; "
             "CPU columns are whole runs (start-up, every repeat of both)",
             "-" * len(head), head]
    for x in r["results"]:
        lines.append(f"{x['clones']:>8} {x['vms']:>7} {x['inventory_s']:>11.3f}s {x['converge_s']:>14.3f}s "
                     f"{x['converge_requests']:>9} {x['controller_cpu_s']:>7.2f}s {x['twin_cpu_s']:>8.2f}s "
                     f"{x['controller_maxrss_mib']:>5.0f} MiB")
    head = (f"{'clones':>8} {'first read':>11} {'steady round':>13} {'requests':>9} {'change p50':>11} "
            f"{'change p99':>11} {'ctl CPU':>8} {'ctl RSS':>9}")
    lines += ["", f"with the informer (forkscale serve's): first full read, steady-state converge (median of "
                  f"{r['repeat']}), change-to-model latency over {r['changes']} changes", "-" * len(head), head]
    for x in r["results"]:
        lines.append(f"{x['clones']:>8} {x['first_read_s']:>10.3f}s {x['steady_s']:>12.4f}s "
                     f"{x['steady_requests']:>9} {x['change_p50_s']:>10.4f}s {x['change_p99_s']:>10.4f}s "
                     f"{x['informed_cpu_s']:>7.2f}s {x['informed_maxrss_mib']:>5.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,5000,10000", help="fleet sizes, comma-separated (default 1000,5000,10000)")
    p.add_argument("--n", type=int, help="a single size (same as --sizes N)")
    p.add_argument("--repeat", type=int, default=3, help="measurements per size, best kept (default 3)")
    p.add_argument("--changes", type=int, default=50,
                   help="clones powered off behind the informer's back, to time change-to-model (default 50)")
    p.add_argument("--quick", action="store_true", help="one measurement per size (for tests)")
    p.add_argument("--time-scale", type=float, default=0.001, help=argparse.SUPPRESS)  # accepted for symmetry
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args(argv)
    args.sizes = [args.n] if args.n else [int(x) for x in str(args.sizes).split(",") if x.strip()]
    if args.quick:
        args.repeat = 1
    if any(n < 1 for n in args.sizes):
        p.error("sizes must be positive")
    return run_and_emit(run, human, args)


if __name__ == "__main__":
    sys.exit(main())
