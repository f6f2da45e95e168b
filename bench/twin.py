"""How fast the vSphere twin serves stock pyVmomi clients.

The twin runs in a child process (its own interpreter, so the clients' pyVmomi work does not
compete with it for the GIL). Two workloads, each with 1 and with 32 client connections
(threads, each with its own `SmartConnect` session over verified TLS):

* inventory: `RetrievePropertiesEx` of a few properties of every VM through a ContainerView,
  on a pre-built world of 1,000 VMs (one request returns all of them);
* clones: `InstantClone_Task` followed by a wait for the task (one private property collector
  per connection, one filter per task, `WaitForUpdatesEx`), at time scale 0, from frozen sources
  (one per host, so delta chains stay short however many clones are made).

Prints a table; `--json` adds one JSON line at the end. `--quick` runs tiny sizes (what the test
suite runs so this file cannot rot). `--profile FILE` writes cProfile stats of the twin's event
loop thread over the measured runs (`python -m pstats FILE`).

    python bench/twin.py            # the full run
    python bench/twin.py --quick --json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

try:
    import forkscale  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from forkscale.sim import start_in_thread

PC = vmodl.query.PropertyCollector
HOSTS = 4
INVENTORY_PATHS = ["name", "runtime.powerState", "runtime.host", "summary.quickStats.sharedMemory"]


def world_file(directory: Path, vms: int) -> Path:
    """The default world with `vms` running VMs spread over the hosts, and one source per host."""
    hosts = [{"name": f"esx-{i:02d}", "memory_gib": 1024, "cpu_cores": 64} for i in range(1, HOSTS + 1)]
    vm_list = []
    for i in range(vms):
        vm_list.append({"name": f"vm-{i:04d}", "host": hosts[i % HOSTS]["name"], "datastore": "ds-ssd",
                        "memory_mb": 2048, "cpus": 1, "disk_gib": 20, "guest_id": "ubuntu64Guest",
                        "guest_full_name": "Ubuntu Linux (64-bit)", "network": "VM Network", "power": "on"})
    for h in hosts:
        vm_list.append({"name": f"src-{h['name']}", "host": h["name"], "datastore": "ds-ssd", "memory_mb": 4096,
                        "cpus": 2, "disk_gib": 40, "guest_id": "ubuntu64Guest",
                        "guest_full_name": "Ubuntu Linux (64-bit)", "network": "VM Network", "power": "on"})
    path = directory / "bench-world.yaml"
    path.write_text(yaml.safe_dump({"hosts": hosts, "vms": vm_list,
                                    "datastores": [{"name": "ds-ssd", "capacity_gib": 1_000_000}]}))
    return path


def _freeze(twin: Any) -> int:
    """Freeze every `src-*` VM, as the guest's `instantclone.freeze` would."""
    count = 0
    for vm in twin.world.of_kind(vim.VirtualMachine):
        if vm.name.startswith("src-"):
            vm.frozen = True
            vm.changed()
            count += 1
    return count


def _serve(conn: Any, world: str, state_dir: str) -> None:
    """The child process: a twin, driven over `conn` (freeze, stats, profile, stop)."""
    handle = start_in_thread(world=world, time_scale=0.0, state_dir=state_dir)
    conn.send(handle.as_json())
    profiler = cProfile.Profile()
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "stop":
                break
            if cmd == "freeze":
                conn.send(handle.call(_freeze))
            elif cmd == "stats":
                conn.send(handle.admin("stats"))
            elif cmd == "profile":
                handle.call(lambda _twin: profiler.enable())
                conn.send(True)
            elif cmd == "dump":
                handle.call(lambda _twin: profiler.disable())
                profiler.dump_stats(arg)
                conn.send(True)
    finally:
        handle.stop()


@dataclass
class Remote:
    """A twin in a child process."""

    url: str
    user: str
    password: str
    ca_file: str
    conn: Any
    process: Any

    @classmethod
    def start(cls, world: Path, state_dir: Path) -> Remote:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(child, str(world), str(state_dir)), daemon=True)
        process.start()
        if not parent.poll(120):
            process.kill()
            raise RuntimeError("the twin did not start within 120 s")
        info = parent.recv()
        return cls(info["url"], info["user"], info["password"], info["ca_file"], parent, process)

    def ask(self, cmd: str, arg: Any = None) -> Any:
        self.conn.send((cmd, arg))
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send(("stop", None))
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


def connect(twin: Remote) -> Any:
    parts = urlsplit(twin.url)
    ctx = ssl.create_default_context(cafile=twin.ca_file)
    return SmartConnect(host=parts.hostname, port=parts.port, user=twin.user, pwd=twin.password, sslContext=ctx)


def run_threads(connections: int, work: Callable[[int, Any], int], handle: Remote) -> tuple[int, float]:
    """Run `work(index, si)` on `connections` threads, each logged in first; (operations, seconds)."""
    sessions = [connect(handle) for _ in range(connections)]
    start = threading.Barrier(connections + 1)
    counts = [0] * connections
    errors: list[BaseException] = []

    def body(i: int) -> None:
        start.wait()
        try:
            counts[i] = work(i, sessions[i])
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    for si in sessions:
        Disconnect(si)
    if errors:
        raise errors[0]
    return sum(counts), elapsed


def inventory_work(requests_per_connection: int, expect: int) -> Callable[[int, Any], int]:
    def work(i: int, si: Any) -> int:
        content = si.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
                PC.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=INVENTORY_PATHS)])
        pc = content.propertyCollector
        for _ in range(requests_per_connection):
            result = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions())
            got = len(result.objects)
            while result.token:
                result = pc.ContinueRetrievePropertiesEx(result.token)
                got += len(result.objects)
            if got != expect:
                raise AssertionError(f"retrieved {got} VMs, expected {expect}")
        view.DestroyView()
        return requests_per_connection

    return work


def wait_task(pc: Any, task: Any, version: str) -> tuple[str, str]:
    """Wait for one task on a private collector; (final state, collector version)."""
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=task)],
                         propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error"])])
    pf = pc.CreateFilter(spec, partialUpdates=False)
    state = "queued"
    try:
        while state not in ("success", "error"):
            update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=30))
            if update is None:
                raise TimeoutError(f"{task} did not finish in 30 s")
            version = update.version
            for fs in update.filterSet:
                for ou in fs.objectSet:
                    for change in ou.changeSet:
                        if change.name == "info.state":
                            state = change.val
                        elif change.name == "info.error" and change.val is not None:
                            raise change.val
    finally:
        pf.DestroyPropertyFilter()
    return state, version


def clone_work(cycles_per_connection: int) -> Callable[[int, Any], int]:
    def work(i: int, si: Any) -> int:
        content = si.content
        vm_folder = content.searchIndex.FindByInventoryPath("dc1/vm")
        src = content.searchIndex.FindChild(vm_folder, f"src-esx-{i % HOSTS + 1:02d}")
        pc = content.propertyCollector.CreatePropertyCollector()
        version = ""
        stamp = f"{time.monotonic_ns():x}"
        for n in range(cycles_per_connection):
            spec = vim.vm.InstantCloneSpec(name=f"bench-{stamp}-{i}-{n}", location=vim.vm.RelocateSpec())
            state, version = wait_task(pc, src.InstantClone_Task(spec), version)
            if state != "success":
                raise AssertionError(f"clone ended {state}")
        pc.DestroyPropertyCollector()
        return cycles_per_connection

    return work


def measure(handle: Remote, name: str, connections: int, work: Callable[[int, Any], int]) -> dict[str, Any]:
    before = handle.ask("stats")["requests"]
    ops, seconds = run_threads(connections, work, handle)
    requests = handle.ask("stats")["requests"] - before
    return {"workload": name, "connections": connections, "operations": ops, "seconds": round(seconds, 3),
            "ops_per_s": round(ops / seconds, 1), "soap_requests": requests,
            "soap_requests_per_s": round(requests / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    parser.add_argument("--json", action="store_true", help="print a final JSON line")
    parser.add_argument("--vms", type=int, help="VMs in the inventory world (default 1000, quick 20)")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile stats of the twin's loop thread")
    args = parser.parse_args(argv)
    vms = args.vms or (20 if args.quick else 1000)
    retrieves = 2 if args.quick else 20  # per connection, single connection
    retrieves_wide = 1 if args.quick else 2  # per connection, 32 connections
    cycles = 3 if args.quick else 300
    cycles_wide = 1 if args.quick else 20
    wide = 4 if args.quick else 32

    with tempfile.TemporaryDirectory(prefix="forkscale-bench-") as tmp:
        directory = Path(tmp)
        built = time.perf_counter()
        handle = Remote.start(world_file(directory, vms), directory / "sim")
        build_s = time.perf_counter() - built
        try:
            if handle.ask("freeze") != HOSTS:
                raise RuntimeError("could not freeze the sources")
            if args.profile:
                handle.ask("profile")
            expect = vms + HOSTS
            results = [
                measure(handle, f"RetrievePropertiesEx x{expect} VMs", 1, inventory_work(retrieves, expect)),
                measure(handle, f"RetrievePropertiesEx x{expect} VMs", wide, inventory_work(retrieves_wide, expect)),
                measure(handle, "InstantClone_Task + wait", 1, clone_work(cycles)),
                measure(handle, "InstantClone_Task + wait", wide, clone_work(cycles_wide)),
            ]
            if args.profile:
                handle.ask("dump", str(Path(args.profile).resolve()))
        finally:
            handle.stop()

    print(f"twin started with {vms + HOSTS} VMs in {build_s:.2f} s (its own process); time scale 0")
    header = f"{'workload':<36} {'conns':>5} {'ops':>6} {'seconds':>8} {'ops/s':>8} {'SOAP req/s':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['workload']:<36} {r['connections']:>5} {r['operations']:>6} {r['seconds']:>8.2f} "
              f"{r['ops_per_s']:>8.1f} {r['soap_requests_per_s']:>10.1f}")
    if args.json:
        print(json.dumps({"vms": vms + HOSTS, "build_seconds": round(build_s, 3), "quick": args.quick,
                          "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
