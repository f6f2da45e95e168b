"""The code under test, run as child processes of a benchmark (the twin lives in the parent).

    python bench/clients.py controller SPEC [POOL ...]   forkscale's engine converges the pools, together
    python bench/clients.py naive URL CA SOURCE K         the sample script: InstantClone_Task + WaitForTask
    python bench/clients.py pool URL CA SOURCE K WORKERS  the same in a thread pool, one session per thread
    python bench/clients.py inventory SPEC POOL REPEAT    Driver.inventory() and a no-op Engine.converge
    python bench/clients.py informed SPEC POOL REPEAT CHANGES ADMIN_URL
                                                          the informer: first read, steady converge, change-to-model
    python bench/clients.py claims URL POOL RATE COUNT WAIT_S   POST .../claim open-loop at RATE per second

Each prints one JSON line. The vCenter password comes from $FORKSCALE_BENCH_PASSWORD.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PASSWORD_ENV = "FORKSCALE_BENCH_PASSWORD"
USER = "administrator@vsphere.local"


# forkscale ------------------------------------------------------------------------------------
async def _controller(spec_path: str, pools: list[str]) -> dict[str, Any]:
    from forkscale.commands.session import open_engine
    from forkscale.spec import load_spec

    spec = load_spec(spec_path)
    names = pools or [p.name for p in spec.pools]
    t0 = time.monotonic()
    async with open_engine(spec) as engine:
        t1 = time.monotonic()
        started = time.time()
        # The pools converge together, as one controller would spread one pool over per-host sources.
        results = await asyncio.gather(*(engine.converge(n) for n in names))
        t2 = time.monotonic()
        soap = engine.driver.soap.requests
        watcher_updates = engine.driver.watcher.updates
    return {"connect_s": t1 - t0, "converge_s": t2 - t1, "converge_started": started, "soap_requests": soap, "watcher_updates": watcher_updates,
            "ready": sum(r.ready for r in results), "failed": sum(r.failed for r in results),
            "created": sum(r.created for r in results), "errors": [e for r in results for e in r.errors][:5],
            "pools": [r.as_dict() for r in results]}


def profiled(fn: Any) -> Any:
    """With $FORKSCALE_BENCH_PROFILE set, cProfile the forkscale side into that file."""

    def run(argv: list[str]) -> dict[str, Any]:
        path = os.environ.get("FORKSCALE_BENCH_PROFILE")
        if not path:
            return dict(fn(argv))
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            return dict(fn(argv))
        finally:
            prof.disable()
            prof.dump_stats(path)

    return run


@profiled
def controller(argv: list[str]) -> dict[str, Any]:
    return asyncio.run(_controller(argv[0], argv[1:]))


@profiled
def inventory(argv: list[str]) -> dict[str, Any]:
    return asyncio.run(_inventory(argv[0], argv[1], int(argv[2])))


async def _inventory(spec_path: str, pool: str, repeat: int) -> dict[str, Any]:
    from forkscale.commands.session import open_engine
    from forkscale.spec import load_spec

    spec = load_spec(spec_path)
    async with open_engine(spec) as engine:
        inv_s = []
        vms = 0
        for _ in range(repeat):
            t = time.monotonic()
            inv = await engine.driver.inventory()
            inv_s.append(time.monotonic() - t)
            vms = len(inv.vms)
        conv_s = []
        result = None
        for _ in range(repeat):
            before = engine.driver.soap.requests
            t = time.monotonic()
            result = await engine.converge(pool)
            conv_s.append(time.monotonic() - t)
            conv_requests = engine.driver.soap.requests - before
    assert result is not None
    return {"vms": vms, "inventory_s": min(inv_s), "inventory_all_s": inv_s, "converge_s": min(conv_s),
            "converge_all_s": conv_s, "converge_requests": conv_requests, "ready": result.ready,
            "created": result.created, "destroyed": result.destroyed, "failed": result.failed}


@profiled
def informed(argv: list[str]) -> dict[str, Any]:
    return asyncio.run(_informed(argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]))


async def _informed(spec_path: str, pool: str, repeat: int, changes: int, admin_url: str) -> dict[str, Any]:
    """With the informer: its first full read, no-op converges with it warm (time, SOAP requests),
    and how long a VM powered off behind the controller's back takes to show in its model."""
    from forkscale.commands.session import open_engine
    from forkscale.spec import load_spec
    from forkscale.vsphere.informer import NEVER

    spec = load_spec(spec_path)
    async with open_engine(spec, informer=True) as engine:
        informer = engine.driver.informer
        assert informer is not None
        await informer.barrier(NEVER)
        first = await engine.converge(pool)  # the first round after start: nothing to do either
        conv_s, conv_req = [], []
        result = first
        for _ in range(repeat):
            before = engine.driver.soap.requests
            t = time.perf_counter()
            result = await engine.converge(pool)
            conv_s.append(time.perf_counter() - t)
            conv_req.append(engine.driver.soap.requests - before)
        lat = await _change_latency(engine, informer, pool, changes, admin_url)
    return {"vms": len(informer.model.vms) if informer.model else 0, "first_read_s": informer.first_sync_s,
            "steady_s": sorted(conv_s)[len(conv_s) // 2], "steady_all_s": conv_s,
            "steady_requests": max(conv_req), "steady_requests_all": conv_req, "change_to_model_s": lat,
            "ready": result.ready, "created": result.created + first.created,
            "destroyed": result.destroyed + first.destroyed, "failed": result.failed + first.failed}


async def _change_latency(engine: Any, informer: Any, pool: str, changes: int, admin_url: str) -> list[float]:
    """Power off `changes` clones through the twin's admin API (not the controller's session); for
    each, seconds from sending the change to the informer's model showing it."""
    import base64

    import aiohttp

    model = informer.model
    picks = [v for v in model.vms.values() if v.pool == pool and v.power == "poweredOn"][:changes]
    token = base64.b64encode(f"{USER}:{os.environ[PASSWORD_ENV]}".encode()).decode()
    out = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http:
        for vm in picks:
            t = time.perf_counter()
            async with http.post(admin_url, json={"action": "power_off", "vm": vm.name}, ssl=False) as resp:
                assert resp.status == 200, await resp.text()
            while informer.model.vms[vm.moref].power != "poweredOff":
                await asyncio.sleep(0.001)
            out.append(time.perf_counter() - t)
    return out


# the script users copy from samples ------------------------------------------------------------
def _connect(url: str, ca: str) -> Any:
    from pyVim.connect import SmartConnect

    parts = urlsplit(url)
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
    return SmartConnect(host=parts.hostname, port=parts.port, user=USER, pwd=os.environ[PASSWORD_ENV],
                        sslContext=ctx)


def _find_vm(si: Any, name: str) -> Any:
    from pyVmomi import vim

    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.DestroyView()


def _clone_one(si: Any, source: Any, name: str, index: int) -> Any:
    """pyvmomi-community-samples' instant_clone.py: spec, InstantClone_Task, WaitForTask."""
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    relospec = vim.vm.RelocateSpec()
    relospec.folder = source.parent
    relospec.datastore = source.datastore[0]
    spec = vim.vm.InstantCloneSpec()
    spec.name = name
    spec.location = relospec
    spec.config = [vim.option.OptionValue(key="guestinfo.forkscale.id", value=str(index)),
                   vim.option.OptionValue(key="guestinfo.forkscale.hostname", value=name),
                   vim.option.OptionValue(key="guestinfo.forkscale.ip", value=f"10.200.{index // 250}.{index % 250 + 2}")]
    task = source.InstantClone_Task(spec=spec)
    WaitForTask(task)
    return task.info.result


def _wait_ready(vm: Any, timeout: float = 600.0) -> float:
    """Poll the guest's status like a user's script polls guest.ipAddress; seconds waited."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        extra = {o.key: o.value for o in vm.config.extraConfig}
        if extra.get("guestinfo.forkscale.status") == "ready":
            break
        time.sleep(0.05)
    return time.monotonic() - t


def naive(argv: list[str]) -> dict[str, Any]:
    url, ca, source_name, k, prefix = argv[0], argv[1], argv[2], int(argv[3]), argv[4]
    si = _connect(url, ca)
    t0 = time.monotonic()
    source = _find_vm(si, source_name)
    last = None
    for i in range(1, k + 1):
        last = _clone_one(si, source, f"{prefix}-{i:05d}", 900000 + i)
    seconds = time.monotonic() - t0
    tail = _wait_ready(last) if last is not None else 0.0
    return {"k": k, "seconds": seconds, "per_clone_s": seconds / k, "tail_s": tail}


def pool(argv: list[str]) -> dict[str, Any]:
    url, ca, source_name, k, workers, prefix = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5]
    local = threading.local()
    sessions: list[Any] = []
    lock = threading.Lock()

    def session() -> tuple[Any, Any]:
        if not hasattr(local, "si"):
            local.si = _connect(url, ca)
            local.source = _find_vm(local.si, source_name)
            with lock:
                sessions.append(local.si)
        return local.si, local.source

    with ThreadPoolExecutor(workers) as ex:  # log every worker in first (not timed, as a script would)
        barrier = threading.Barrier(workers)

        def warm() -> None:
            session()
            barrier.wait()

        list(ex.map(lambda _: warm(), range(workers)))
        t0 = time.monotonic()

        def one(i: int) -> Any:
            si, source = session()
            return _clone_one(si, source, f"{prefix}-{i:05d}", 800000 + i)

        results = list(ex.map(one, range(1, k + 1)))
        seconds = time.monotonic() - t0
    tail = _wait_ready(results[-1]) if results else 0.0
    return {"k": k, "workers": workers, "seconds": seconds, "per_clone_s": seconds / k, "tail_s": tail}


# the claim load generator -------------------------------------------------------------------------
async def _claims(url: str, pool: str, rate: float, count: int, wait_s: float) -> dict[str, Any]:
    """Open loop: claim i is due at t0 + i/rate and timed from then to its answer."""
    import aiohttp

    headers = {"Authorization": f"Bearer {os.environ['FORKSCALE_BENCH_TOKEN']}"}
    latencies: list[float] = []
    series: list[tuple[float, float, int]] = []
    outcome = {"ok": 0, "unavailable": 0, "errors": 0}
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=256)) as http:

        async def one(i: int, due: float) -> None:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with http.post(f"{url}/v1/pools/{pool}/claim", json={"user": f"bench-{i}", "wait_s": wait_s},
                                     timeout=aiohttp.ClientTimeout(total=wait_s + 60)) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            latencies.append((loop.time() - due) * 1000)
            series.append((round(due - t0, 3), round((loop.time() - due) * 1000, 1), status))
            outcome["ok" if status == 200 else "unavailable" if status == 503 else "errors"] += 1

        t0 = loop.time() + 0.2
        await asyncio.gather(*(one(i, t0 + i / rate) for i in range(count)))
        took = loop.time() - t0
    if os.environ.get("FORKSCALE_BENCH_SERIES"):
        Path(os.environ["FORKSCALE_BENCH_SERIES"]).write_text(json.dumps(sorted(series)))
    return {"latencies_ms": latencies, "achieved_rate": count / took if took > 0 else 0.0, **outcome}


def claims(argv: list[str]) -> dict[str, Any]:
    return asyncio.run(_claims(argv[0], argv[1], float(argv[2]), int(argv[3]), float(argv[4])))


def main() -> int:
    mode, argv = sys.argv[1], sys.argv[2:]
    fn = {"controller": controller, "naive": naive, "pool": pool, "inventory": inventory, "informed": informed,
          "claims": claims}[mode]
    print(json.dumps(fn(argv)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
