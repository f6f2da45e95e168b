"""Shared pieces of the benchmarks: the twin, worlds and specs, child processes, output.

Every benchmark runs the twin in its own process (on a thread) and the code under test in a
child process, so the child's CPU time and peak RSS are its own (`os.wait4`), and the twin and
the client never share a GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from forkscale.sim import SimHandle, start_in_thread  # noqa: E402

HOSTS = ("esx-01", "esx-02", "esx-03", "esx-04")
MAX_HOSTS = 64
#: Host memory in worlds larger than the default: every clone is admitted against its host's memory.
BIG_HOST_MEMORY_GIB = 8192


def host_names(n: int) -> tuple[str, ...]:
    """esx-01 ... esx-NN: the default world's four hosts, then more named alike."""
    return tuple(f"esx-{i:02d}" for i in range(1, n + 1))
PASSWORD_ENV = "FORKSCALE_BENCH_PASSWORD"
CLIENTS = str(REPO / "bench" / "clients.py")


def source_name(host: str) -> str:
    return f"src-linux-{host}"


def world_yaml(directory: Path, hosts: Sequence[str] = HOSTS, *, latency: dict[str, float] | None = None,
               limits: dict[str, int] | None = None, sources: bool = True, big_hosts: bool = False) -> Path:
    """The default world with one Linux source per host (an instant clone runs on its source's host).

    More hosts than the default four: the world gets exactly `hosts` (with room for thousands of
    clones each). Without `sources`, the default VMs (src-linux, the golden of `forkscale
    prepare`, on esx-01) stay as they are. `big_hosts`: the hosts have room for thousands of clones
    even when they are the default four.
    """
    world: dict[str, Any] = {}
    if sources:
        world["vms"] = [{"name": source_name(h), "host": h, "datastore": "ds-ssd", "memory_mb": 4096, "cpus": 2,
                         "disk_gib": 40, "guest_id": "ubuntu64Guest", "guest_full_name": "Ubuntu Linux (64-bit)",
                         "network": "VM Network", "snapshots": ["base"], "power": "on"} for h in hosts]
    if tuple(hosts) != HOSTS or big_hosts:
        world["hosts"] = [{"name": h, "memory_gib": BIG_HOST_MEMORY_GIB, "cpu_cores": 64} for h in hosts]
    if latency:
        world["latency"] = dict(latency)
    if limits:
        world["limits"] = dict(limits)
    path = directory / "world.yaml"
    path.write_text(yaml.safe_dump(world))
    return path


def start_twin(directory: Path, *, time_scale: float, world: Path | None = None, seed: int = 0) -> SimHandle:
    return start_in_thread(world=str(world) if world else None, time_scale=time_scale, seed=seed,
                           state_dir=str(directory / "sim"))


def freeze_sources(twin: SimHandle, hosts: Sequence[str] = HOSTS) -> None:
    for h in hosts:
        twin.admin("freeze", vm=source_name(h))


@contextlib.contextmanager
def twin_in_workdir(prefix: str, *, time_scale: float, hosts: Sequence[str] | None = None, seed: int = 0,
                    freeze: bool = False, big_hosts: bool = False) -> Iterator[tuple[Path, SimHandle]]:
    """A fresh work directory and a twin in it, stopped after the block.

    With `hosts`, the twin runs the default world with one Linux source per host (see `world_yaml`),
    and with `freeze` too those sources are frozen before the block; without, its built-in world.
    """
    with workdir(prefix) as tmp:
        d = Path(tmp)
        world = world_yaml(d, hosts, big_hosts=big_hosts) if hosts is not None else None
        twin = start_twin(d, time_scale=time_scale, world=world, seed=seed)
        try:
            if freeze and hosts is not None:
                freeze_sources(twin, hosts)
            yield d, twin
        finally:
            twin.stop()


def pool_entry(name: str, source: str, count: int, index: int, *, per_host: int = 16) -> dict[str, Any]:
    """A pool whose budgets are high enough never to be the bottleneck (per_host = the twin's slots)."""
    return {
        "name": name, "source": source, "freeze": "none", "count": count,
        "name_pattern": f"{name}-{{index:05d}}",
        "network": {"port_group": "VM Network", "cidr": f"10.{64 + index}.0.0/16", "gateway": f"10.{64 + index}.0.1",
                    "dns": ["10.0.0.2"]},
        "placement": {"datastores": ["ds-ssd"], "folder": "forkscale"},
        "fallback": ["instant"],
        "budgets": {"vcenter": 640, "per_host": per_host, "per_datastore": 640, "rate_per_s": 10000},
        "guest_ready": {"timeout_s": 600, "required": True},
    }


def write_spec(directory: Path, twin: SimHandle, pools: list[dict[str, Any]], *, name: str = "pool.yaml") -> Path:
    pw = directory / "vc-password"
    pw.write_text(twin.password)
    os.chmod(pw, 0o600)
    spec = {"vcenter": {"url": twin.url, "user": twin.user, "password_file": str(pw), "ca_file": twin.ca_file},
            "state": str(directory / "state.sqlite"), "pools": pools}
    path = directory / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def twin_env(twin: SimHandle) -> dict[str, str]:
    """Environment for a child that talks to the twin (the password never goes on a command line)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env[PASSWORD_ENV] = twin.password
    return env


@dataclass
class Child:
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str

    def last_json(self) -> dict[str, Any]:
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return dict(json.loads(line))
        raise RuntimeError(f"child printed no JSON (rc {self.returncode}):\n{self.stdout[-2000:]}\n"
                           f"{self.stderr[-4000:]}")


def run_child(argv: list[str], env: dict[str, str], *, timeout: float = 1800.0) -> Child:
    """Run a child to completion; its own CPU time (user+sys) and peak RSS come from wait4."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True, cwd=str(REPO))
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Child(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, maxrss_kib=usage.ru_maxrss,
                     returncode=proc.returncode, stdout=out.read(), stderr=err.read())


@contextlib.contextmanager
def profile_twin(twin: SimHandle) -> Iterator[None]:
    """With $FORKSCALE_BENCH_TWIN_PROFILE set, cProfile the twin's thread for the block (to that file)."""
    path = os.environ.get("FORKSCALE_BENCH_TWIN_PROFILE")
    if not path:
        yield
        return
    import cProfile

    prof = cProfile.Profile()
    twin.call(lambda t: prof.enable())
    try:
        yield
    finally:
        twin.call(lambda t: prof.disable())
        prof.dump_stats(path)


def twin_cpu(twin: SimHandle) -> float:
    """CPU seconds of the twin's thread so far."""
    return float(twin.call(lambda t: time.thread_time()))


def twin_stats(twin: SimHandle) -> dict[str, Any]:
    return dict(twin.admin("stats"))


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, dict[str, int]]:
    methods = {k: v - before["methods"].get(k, 0) for k, v in after["methods"].items()}
    return after["requests"] - before["requests"], {k: v for k, v in sorted(methods.items()) if v}


@dataclass
class Measured:
    """A child run against the twin, and the twin's view of it."""

    child: Child
    spawned: float  # time.time() just before the child was started
    twin_cpu_s: float
    requests: int
    methods: dict[str, int]


def measure_child(twin: SimHandle, argv: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run a child to completion, counting the twin's SOAP requests and CPU seconds meanwhile.

    The child's environment defaults to `twin_env(twin)`. The twin is cProfiled for the run with
    $FORKSCALE_BENCH_TWIN_PROFILE set (see `profile_twin`).
    """
    if env is None:
        env = twin_env(twin)
    before = twin_stats(twin)
    cpu0 = twin_cpu(twin)
    spawned = time.time()
    with profile_twin(twin):
        child = run_child(argv, env)
    twin_cpu_s = twin_cpu(twin) - cpu0
    requests, methods = stats_delta(before, twin_stats(twin))
    return Measured(child=child, spawned=spawned, twin_cpu_s=twin_cpu_s, requests=requests, methods=methods)


def stop(proc: subprocess.Popen[str]) -> tuple[float, int]:
    """SIGTERM the server; its CPU seconds and peak RSS (KiB), from wait4."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.05)


def table(rows: list[tuple[str, str]], title: str) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * max(len(title), width + 20)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def emit(human: str, data: dict[str, Any], as_json: bool) -> None:
    """The human table on stdout; with --json, a final single JSON line after it."""
    print(human, flush=True)
    if as_json:
        print(json.dumps(data, sort_keys=True), flush=True)


def run_and_emit(run: Callable[[argparse.Namespace], dict[str, Any]], human: Callable[[dict[str, Any]], str],
                 args: argparse.Namespace) -> int:
    """A benchmark's main: run it, print its table (and with --json its JSON line); exit status 0."""
    result = run(args)
    emit(human(result), result, args.json)
    return 0


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def workdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"forkscale-bench-{prefix}-")
