"""Soak: `forkscale serve` through weeks of VDI logins, at a high time scale. Does it stay the same size?

    python bench/soak.py [--days 30] [--day-s 8] [--users 24] [--retention-days 7] [--json]

A real `forkscale serve` (child process) keeps a headroom VDI pool (`on_release: refresh`) against
the twin. Every simulated day, `--users` users log in (POST .../claim, spread over the morning),
work, and log off (POST .../release, spread over the evening): each logoff destroys the desktop
and clones a fresh one, the headroom policy grows the pool in the morning and shrinks it at
night, and every round, claim and refresh writes the ledger. A day lasts `--day-s` seconds of
wall time; the ledger's clock runs `86400 / day_s` times faster than the wall clock (the serve
child is started through this script with that clock injected into its `Ledger`), so retention
(`ledger.retention_days`, pruned hourly by that clock) sees the days go by.

At the end of every day, once the pool has settled, the benchmark samples the serve process:
RSS (`/proc/PID/status`), open file descriptors (`/proc/PID/fd`), the ledger's size on disk
(the SQLite file with its WAL) and rows (clones, events), and the day's claim latencies. It
reports day 1 against the last day. What it promises: RSS and open files flat (within 10 %),
and the ledger bounded by the retention window (no bigger on the last day than at the end of
the window), with everything older in the archive.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from common import (  # noqa: E402
    HOSTS,
    cores,
    pool_entry,
    run_and_emit,
    source_name,
    stop,
    table,
    twin_cpu,
    twin_env,
    twin_in_workdir,
    write_spec,
)

POOL = "vdi"
DAY = 86_400.0


# -- the serve child, with the ledger's clock sped up ---------------------------------------------

def serve_child(scale: float, argv: list[str]) -> int:
    """`forkscale <argv>` (serve) with every Ledger on a clock `scale` times faster than the wall.

    The clock starts at the benchmark's epoch ($FORKSCALE_SOAK_EPOCH: its wall time and its
    CLOCK_MONOTONIC reading, which every process shares), so simulated day d of the benchmark is
    day d of the ledger, whatever the time spent starting up or settling."""
    from forkscale.commands import session
    from forkscale.ledger import Ledger

    wall0, mono0 = (float(x) for x in os.environ["FORKSCALE_SOAK_EPOCH"].split(","))

    def clock() -> float:
        return wall0 + (time.monotonic() - mono0) * scale

    class FastLedger(Ledger):
        def __init__(self, path: str | Path, **kwargs: Any) -> None:
            super().__init__(path, clock=clock, **kwargs)

    session.Ledger = FastLedger  # type: ignore[misc]
    trace = os.environ.get("FORKSCALE_SOAK_TRACEMALLOC")
    if trace:  # for finding out what grows: the top allocation sites against the first snapshot
        _trace_growth(Path(trace), float(os.environ.get("FORKSCALE_SOAK_TRACE_EVERY_S", "60")))
    from forkscale.cli import main

    return main(argv)


def _trace_growth(out: Path, every_s: float) -> None:
    import threading
    import tracemalloc

    tracemalloc.start(int(os.environ.get("FORKSCALE_SOAK_TRACE_FRAMES", "1")))

    def loop() -> None:
        time.sleep(every_s)
        first = tracemalloc.take_snapshot()
        while True:
            time.sleep(every_s)
            top = tracemalloc.take_snapshot().compare_to(first, "traceback")[:25]
            with out.open("a") as f:
                f.write(f"--- {time.strftime('%H:%M:%S')} traced {tracemalloc.get_traced_memory()[0] >> 10} KiB\n")
                for stat in top:
                    f.write(f"{stat.size_diff >> 10:+} KiB {stat.count_diff:+} blocks\n    ")
                    f.write("\n    ".join(stat.traceback.format()) + "\n")

    threading.Thread(target=loop, daemon=True, name="soak-trace").start()


def start_serve(d: Path, spec: Path, env: dict[str, str], scale: float) -> tuple[subprocess.Popen[str], str, str]:
    token = secrets.token_hex(24)
    tok = d / "api-token"
    tok.write_text(token + "\n")
    os.chmod(tok, 0o600)
    with (d / "serve.log").open("w") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-child", str(scale), "-v",
                                 "serve", "-f", str(spec), "--listen", "127.0.0.1:0", "--token-file", str(tok),
                                 "--metrics-interval", "5"],
                                env=env, cwd=str(d), text=True, stdout=subprocess.PIPE, stderr=err)
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


# -- talking to it ----------------------------------------------------------------------------------

def call(url: str, token: str, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_settled(url: str, token: str, headroom: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the pool holds its spares and nothing is being built or refreshed."""
    deadline = time.monotonic() + timeout
    doc: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"forkscale serve exited ({proc.returncode})")
        _, doc = call(url, token, "GET", f"/v1/pools/{POOL}")
        if doc["spares"] >= headroom and doc["building"] == 0 and doc["draining"] == 0 and not doc["converging"]:
            return
        time.sleep(0.05)
    raise SystemExit(f"the pool did not settle in {timeout:.0f}s: {str(doc)[:2000]}")


def one_day(url: str, token: str, users: int, day_s: float, day: int, start: float) -> tuple[list[float], int]:
    """Logins spread over the first 35 % of the day, logoffs over 50-75 % (the rest is the night: the
    refreshes finish and the pool shrinks): claim latencies (ms), failures.

    `start` is the day's beginning (monotonic); an event whose time has passed runs at once."""
    events = [(0.35 * day_s * i / users, "claim", i) for i in range(users)]
    events += [(day_s * (0.5 + 0.25 * i / users), "release", i) for i in range(users)]
    desktops: dict[int, str] = {}
    latencies: list[float] = []
    failures = 0
    for at, what, i in sorted(events):
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if what == "claim":
            t0 = time.perf_counter()
            code, doc = call(url, token, "POST", f"/v1/pools/{POOL}/claim", {"user": f"d{day}u{i}", "wait_s": 30})
            latencies.append((time.perf_counter() - t0) * 1000)
            if code == 200:
                desktops[i] = doc["vm"]
            else:
                failures += 1
        elif i in desktops:
            code, _ = call(url, token, "POST", f"/v1/pools/{POOL}/release", {"vm": desktops.pop(i)})
            failures += code != 202
    left = start + day_s - time.monotonic()
    if left > 0:
        time.sleep(left)
    return latencies, failures


# -- what is measured ---------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def ledger_size(state: Path) -> dict[str, int]:
    """The ledger file's bytes, its WAL's (bounded by SQLite's auto-checkpoint, ~4 MiB) and its rows."""
    wal = state.with_name(state.name + "-wal")
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=30)
    try:
        clones = int(conn.execute("SELECT COUNT(*) FROM clones").fetchone()[0])
        events = int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()
    return {"bytes": state.stat().st_size, "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "clones": clones, "events": events}


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(pid: int, state: Path, latencies: list[float], day: int, cpu: tuple[float, float]) -> dict[str, Any]:
    return {"day": day, "rss_kib": rss_kib(pid), "open_files": open_files(pid), **{f"ledger_{k}": v for k, v in
            ledger_size(state).items()}, "claims": len(latencies), "claim_p50_ms": round(pct(latencies, 50), 2),
            "claim_p99_ms": round(pct(latencies, 99), 2), "serve_cpu_s": round(cpu[0], 2),
            "twin_cpu_s": round(cpu[1], 2)}


def vdi_pool(args: argparse.Namespace) -> dict[str, Any]:
    pool = pool_entry(POOL, source_name(HOSTS[0]), 0, 0)
    pool.pop("count")
    pool["on_release"] = "refresh"
    pool["policy"] = {"strategy": "headroom", "headroom": args.headroom, "min": 0,
                      "max": args.users + 2 * args.headroom, "cooldown_up_s": 0,
                      "cooldown_down_s": round(args.day_s / 20, 3), "evaluate_every_s": round(args.day_s / 40, 3)}
    return pool


def run(args: argparse.Namespace) -> dict[str, Any]:
    scale = DAY / args.day_s
    with twin_in_workdir("soak", time_scale=args.time_scale, hosts=(HOSTS[0],), freeze=True) as (d, twin):
        spec = write_spec(d, twin, [vdi_pool(args)])
        doc = yaml.safe_load(spec.read_text())
        doc["ledger"] = {"retention_days": args.retention_days}
        spec.write_text(yaml.safe_dump(doc, sort_keys=False))
        state, archive = d / "state.sqlite", d / "state.sqlite.archive.jsonl"
        epoch = time.monotonic()  # the start of day 0 (the warm-up days count down to it)
        env = dict(twin_env(twin), FORKSCALE_SOAK_EPOCH=f"{time.time()},{epoch}")
        proc, url, token = start_serve(d, spec, env, scale)
        days: list[dict[str, Any]] = []
        failures = 0
        try:
            wait_settled(url, token, args.headroom, proc)
            for day in range(1 - args.warmup_days, args.days + 1):
                cpu0 = (cpu_s(proc.pid), twin_cpu(twin))
                start = epoch + (day + args.warmup_days - 1) * args.day_s
                latencies, failed = one_day(url, token, args.users, args.day_s, day, start)
                failures += failed if day >= 1 else 0
                wait_settled(url, token, args.headroom, proc)
                cpu = (cpu_s(proc.pid) - cpu0[0], twin_cpu(twin) - cpu0[1])
                days.append(sample(proc.pid, state, latencies, day, cpu))
                if args.progress:
                    print(json.dumps(days[-1]), file=sys.stderr, flush=True)
            twin_requests = twin.admin("stats")["requests"]
        finally:
            serve_cpu, serve_rss = stop(proc)
            if os.environ.get("FORKSCALE_BENCH_VERBOSE"):
                sys.stderr.write((d / "serve.log").read_text()[-20000:])
        archived = sum(1 for _ in archive.open()) if archive.exists() else 0
    warmup, counted = days[:args.warmup_days], days[args.warmup_days:]
    return summarize(args, warmup, counted, failures, archived, serve_cpu, serve_rss, twin_requests)


def summarize(args: argparse.Namespace, warmup: list[dict[str, Any]], days: list[dict[str, Any]], failures: int,
              archived: int, serve_cpu: float, serve_rss: int, twin_requests: int) -> dict[str, Any]:
    first, last = days[0], days[-1]
    window = days[min(len(days), int(args.retention_days) + 1) - 1]  # the end of the first retention window

    def growth(key: str) -> float:
        return round(last[key] / first[key] - 1, 4) if first[key] else 0.0

    return {
        "days": args.days, "warmup_days": args.warmup_days, "warmup": warmup, "day_s": args.day_s,
        "users": args.users, "headroom": args.headroom,
        "retention_days": args.retention_days, "time_scale": args.time_scale, "clock_scale": round(DAY / args.day_s),
        "cores": cores(), "claims": sum(d["claims"] for d in days), "failures": failures,
        "first": first, "last": last, "window_end": window,
        "rss_growth": growth("rss_kib"), "open_files_growth": growth("open_files"),
        "ledger_rows_last_vs_window": round((last["ledger_clones"] + last["ledger_events"])
                                            / max(1, window["ledger_clones"] + window["ledger_events"]), 3),
        "ledger_bytes_last_vs_window": round(last["ledger_bytes"] / max(1, window["ledger_bytes"]), 3),
        "archived_lines": archived, "serve_cpu_s": round(serve_cpu, 1), "serve_maxrss_mib": round(serve_rss / 1024, 1),
        "twin_requests": twin_requests,
        "series": {k: [d[k] for d in days] for k in ("rss_kib", "open_files", "ledger_bytes", "ledger_wal_bytes",
                                                     "ledger_clones", "ledger_events", "claim_p99_ms",
                                                     "serve_cpu_s", "twin_cpu_s")},
    }


def human(r: dict[str, Any]) -> str:
    f, last, w = r["first"], r["last"], r["window_end"]

    def row(d: dict[str, Any]) -> str:
        return (f"RSS {d['rss_kib'] / 1024:.1f} MiB, {d['open_files']} open files, ledger {d['ledger_bytes'] / 1024:.0f} "
                f"KiB + WAL {d['ledger_wal_bytes'] / 1024:.0f} KiB ({d['ledger_clones']} clones, "
                f"{d['ledger_events']} events), claim p50 {d['claim_p50_ms']:.1f} ms p99 {d['claim_p99_ms']:.1f} ms, "
                f"CPU serve {d['serve_cpu_s']:.1f} s / twin {d['twin_cpu_s']:.1f} s")

    rows = [
        ("run", f"{r['warmup_days']} warm-up + {r['days']} days of {r['users']} VDI logins and logoffs (refresh), headroom {r['headroom']}, "
                f"a day = {r['day_s']} s (ledger clock x{r['clock_scale']}), retention {r['retention_days']} days, "
                f"twin time scale {r['time_scale']}, {r['cores']} cores"),
        ("claims", f"{r['claims']} answered, {r['failures']} failed"),
        ("day 1", row(f)),
        (f"day {w['day']} (window)", row(w)),
        (f"day {last['day']}", row(last)),
        ("growth day 1 -> last", f"RSS {r['rss_growth']:+.1%}, open files {r['open_files_growth']:+.1%}"),
        ("ledger last / window", f"rows x{r['ledger_rows_last_vs_window']}, bytes x{r['ledger_bytes_last_vs_window']}; "
                                 f"{r['archived_lines']} lines archived"),
        ("serve process", f"{r['serve_cpu_s']:.1f} s CPU, peak RSS {r['serve_maxrss_mib']:.0f} MiB; "
                          f"{r['twin_requests']} SOAP requests in all"),
    ]
    return table(rows, "soak: forkscale serve through weeks of VDI logins")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-child"]:
        return serve_child(float(argv[1]), argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=30, help="simulated days (default 30)")
    p.add_argument("--day-s", type=float, default=10.0, help="wall seconds per simulated day (default 10)")
    p.add_argument("--users", type=int, default=24, help="logins (and logoffs) per day (default 24)")
    p.add_argument("--headroom", type=int, default=8, help="warm spares above the claimed desktops (default 8)")
    p.add_argument("--retention-days", type=float, default=7.0,
                   help="the spec's ledger.retention_days (default 7: the window fits the run several times)")
    p.add_argument("--time-scale", type=float, default=0.01, help="twin latency multiplier (default 0.01)")
    p.add_argument("--warmup-days", type=int, default=1,
                   help="days run first and not counted (the pool fills, connections open; default 1)")
    p.add_argument("--progress", action="store_true", help="print each day's sample on stderr as it is taken")
    p.add_argument("--quick", action="store_true", help="small run (for tests): 3 days of 4 users, 1-day window")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args(argv)
    if args.quick:
        args.days, args.day_s, args.users, args.headroom, args.retention_days = 3, 2.0, 4, 2, 1.0
        args.warmup_days = 1
    return run_and_emit(run, human, args)


if __name__ == "__main__":
    sys.exit(main())
