"""forkscale.observe.exporter against the twin: batched reads, pool counts, P-Share, delta chains, frozen sources."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyVmomi import vim

from forkscale.ledger import Ledger
from forkscale.observe.exporter import Exporter, pool_pshare_saved
from forkscale.observe.telemetry import ChainDepth, CloneCount, PoolCounts, SourceState, Telemetry
from forkscale.spec import load_spec
from forkscale.vsphere.driver import Driver
from forkscale.vsphere.retry import READ_ATTEMPTS, Retry
from forkscale.vsphere.transport import Soap
from tests.spine_helpers import cli, write_spec

MiB = 1024**2
POOL = "quickstart"


@contextlib.asynccontextmanager
async def exporter_for(spec_path: Path, *, watcher: bool = False, **kwargs: Any) -> AsyncIterator[Exporter]:
    """An Exporter on its own session. Without `watcher`, the driver's task watcher (a background
    WaitForUpdatesEx loop) is not started, so the twin's request counts are the exporter's alone."""
    spec = load_spec(spec_path)
    vc = spec.vcenter
    soap = Soap(vc.url, user=vc.user, password=vc.password, ca_file=str(vc.ca_file) if vc.ca_file else None,
                retry=Retry(base_s=0.01))  # transient faults are retried (5 attempts), quickly here
    driver = Driver(soap)
    if watcher:
        await driver.open()
    else:
        await soap.open()
    ledger = Ledger(spec.state)
    try:
        yield Exporter(driver, spec, ledger, Telemetry(), **kwargs)
    finally:
        ledger.close()
        if watcher:
            await driver.close()
        else:
            await soap.close()


def vms_by_name(si: Any) -> dict[str, Any]:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        return {vm.name: vm for vm in view.view}
    finally:
        view.DestroyView()


def steady_shared(si: Any, names: list[str], timeout: float = 20.0) -> dict[str, int]:
    """quickStats.sharedMemory (MB) of `names`, once two reads 0.2 s apart agree (divergence capped)."""
    vms = vms_by_name(si)
    deadline = time.monotonic() + timeout
    last: dict[str, int] | None = None
    while True:
        now = {n: int(vms[n].summary.quickStats.sharedMemory) for n in names}
        if now == last:
            return now
        if time.monotonic() > deadline:
            raise TimeoutError(f"sharedMemory still changing: {last} -> {now}")
        last = now
        time.sleep(0.2)


def chain_depths(si: Any, names: list[str]) -> dict[tuple[str, str], int]:
    """(vm, disk key) -> links in layoutEx.disk[].chain, read with pyVmomi."""
    vms = vms_by_name(si)
    return {(n, str(d.key)): len(d.chain) for n in names for d in vms[n].layoutEx.disk}


def scrape(telemetry: Telemetry) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(telemetry.render().decode()):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_refresh_reports_pools_pshare_chains_and_the_frozen_source(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=5)
    assert cli("apply", "-f", str(spec)) == 0
    clones = sorted(n for n in vms_by_name(si) if n.startswith("quickstart-"))
    assert len(clones) == 5
    shared_mb = steady_shared(si, [*clones, "src-linux"])
    depths = chain_depths(si, [*clones, "src-linux"])

    async def go() -> tuple[Any, Any, Any]:
        async with exporter_for(spec) as exp:
            first = await exp.refresh()
            exp.ledger.claim(POOL, "alice")
            exp.set_desired(POOL, 7)
            second = await exp.refresh()
            return first, second, scrape(exp.telemetry)

    first, second, metrics = asyncio.run(go())

    assert first.pools == [PoolCounts(POOL, desired=5, ready=5, spares=5)]
    assert second.pools == [PoolCounts(POOL, desired=7, ready=5, spares=4)]
    assert first.clones == [CloneCount(POOL, "instant", "ready", 5)]
    assert sorted(second.clones, key=lambda c: c.state) == [CloneCount(POOL, "instant", "claimed", 1),
                                                            CloneCount(POOL, "instant", "ready", 4)]

    # P-Share: every clone shares pages with its source, exactly what quickStats says
    vm_mem = {v.vm: v for v in first.vms}
    assert sorted(vm_mem) == clones  # clones only; src-win and the source get no per-VM memory series
    for name in clones:
        assert vm_mem[name].pool == POOL
        assert vm_mem[name].shared_bytes == shared_mb[name] * MiB > 0
    # one fork group (src-linux + 5 instant clones): saved = all shared - the one copy backing them
    group = [shared_mb[n] for n in clones] + [shared_mb["src-linux"]]
    assert first.pool_pshare_saved_bytes == {POOL: (sum(group) - max(group)) * MiB}
    assert first.pool_pshare_saved_bytes[POOL] >= 4 * shared_mb[clones[0]] * MiB
    hosts = {h.host: h for h in first.hosts}
    assert sorted(hosts) == ["esx-01", "esx-02", "esx-03", "esx-04"]
    assert hosts["esx-01"].saved_bytes >= first.pool_pshare_saved_bytes[POOL] > 0
    assert all(hosts[h].saved_bytes == 0 for h in ("esx-02", "esx-03", "esx-04"))  # no VMs there

    # delta chains, as layoutEx shows them to pyVmomi
    got = {(c.vm, c.disk): c for c in first.chains}
    assert {k: c.depth for k, c in got.items()} == depths
    assert got[("src-linux", "2000")] == ChainDepth("src-linux", "2000", "source", 3)  # base, snapshot, freeze
    assert {c.role for c in first.chains if c.vm != "src-linux"} == {"clone"}
    deltas = {d.vm: d for d in first.deltas}
    assert sorted(deltas) == sorted([*clones, "src-linux"])
    assert all(deltas[n].bytes > 0 and deltas[n].role == "clone" for n in clones)

    assert first.sources == [SourceState(POOL, "src-linux", "esx-01", frozen=True)]
    assert metrics['forkscale_source_frozen{host="esx-01",pool="quickstart",source="src-linux"}'] == 1
    assert metrics['forkscale_pool_spares{pool="quickstart"}'] == 4
    assert metrics["forkscale_up{}"] == 1


def test_refresh_costs_the_same_soap_requests_for_5_and_40_clones(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=5)

    async def measure() -> list[dict[str, int]]:
        costs = []
        async with exporter_for(spec) as exp:
            for _ in range(2):  # the first refresh also reads the counter catalog
                before = twin.admin("stats")
                sample = await exp.refresh()
                after = twin.admin("stats")
                costs.append({m: n - before["methods"].get(m, 0) for m, n in after["methods"].items()
                              if n != before["methods"].get(m, 0)} | {"total": after["requests"] - before["requests"]})
            costs.append({"clones": len(sample.vms)})
        return costs

    assert cli("apply", "-f", str(spec)) == 0
    first5, again5, n5 = asyncio.run(measure())
    assert cli("scale", POOL, "40", "-f", str(spec)) == 0
    first40, again40, n40 = asyncio.run(measure())
    assert (n5, n40) == ({"clones": 5}, {"clones": 40})
    steady = {"CreateContainerView": 1, "RetrievePropertiesEx": 1, "DestroyView": 1, "QueryPerf": 1, "total": 4}
    assert again5 == again40 == steady
    assert first5 == first40 == steady | {"RetrievePropertiesEx": 2, "total": 5}


def test_pages_cost_one_continue_each_and_lose_nothing(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=12)
    assert cli("apply", "-f", str(spec)) == 0

    async def go() -> tuple[int, int]:
        async with exporter_for(spec, page_size=5) as exp:
            before = twin.admin("stats")["methods"].get("ContinueRetrievePropertiesEx", 0)
            sample = await exp.refresh()
            return len(sample.vms), twin.admin("stats")["methods"]["ContinueRetrievePropertiesEx"] - before

    n, continues = asyncio.run(go())
    # 12 clones + 2 sources + 4 hosts = 18 objects in pages of 5: one RetrievePropertiesEx, 3 continues
    assert (n, continues) == (12, 3)


def test_a_failed_read_keeps_the_last_sample_and_reports_down(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=3)
    assert cli("apply", "-f", str(spec)) == 0

    async def go() -> tuple[dict[str, float], dict[str, float], dict[str, float], tuple[bool, str]]:
        async with exporter_for(spec) as exp:
            await exp.refresh()
            good = scrape(exp.telemetry)
            # one transient fault is retried; one that persists past the retries fails the refresh
            twin.admin("fail_next", method="RetrievePropertiesEx", fault="SystemError", count=READ_ATTEMPTS)
            with pytest.raises(Exception, match="SystemError|general system error"):
                await exp.refresh()
            failed = scrape(exp.telemetry)
            health = exp.health()
            twin.admin("fail_next", method="QueryPerf", fault="SystemError", count=READ_ATTEMPTS)
            await exp.refresh()  # statistics down: everything but the host counters
            return good, failed, scrape(exp.telemetry), health

    good, failed, no_perf, health = asyncio.run(go())
    assert good["forkscale_up{}"] == 1 and failed["forkscale_up{}"] == 0
    fleet = {k: v for k, v in good.items() if "inventory_age" not in k and not k.startswith("forkscale_up")}
    assert {k: failed[k] for k in fleet} == fleet  # the old sample stays whole
    assert health[0] is True  # one failure within 3 intervals is not yet unhealthy
    assert no_perf["forkscale_up{}"] == 1
    assert not any(k.startswith("forkscale_host_") for k in no_perf)
    assert no_perf['forkscale_pool_ready{pool="quickstart"}'] == 3


def test_vsphere_tasks_reach_the_task_histograms(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=2)
    assert cli("apply", "-f", str(spec)) == 0
    moref = vms_by_name(si)["quickstart-001"]._moId

    async def go() -> dict[str, float]:
        async with exporter_for(spec, watcher=True) as exp:
            twin.admin("fail_next", method="PowerOffVM_Task", fault="TaskInProgress")
            with pytest.raises(Exception, match="TaskInProgress|power off"):
                await exp.driver.power_off(moref)
            await exp.driver.power_off(moref)
            return scrape(exp.telemetry)

    m = asyncio.run(go())
    assert m['forkscale_vsphere_task_seconds_count{method="PowerOffVM_Task"}'] == 2
    assert m['forkscale_vsphere_task_faults_total{fault="TaskInProgress",method="PowerOffVM_Task"}'] == 1


def test_pool_pshare_saved_splits_a_fork_group_between_pools():
    # source shares 1000 MB; pool a has 3 clones, pool b 1 clone, all sharing 1000 MB: 4 copies saved
    saved = pool_pshare_saved({"vm-1": (1000, {"a": [1000, 1000, 1000], "b": [1000]})})
    assert saved == {"a": 3000 * MiB, "b": 1000 * MiB}
    # a clone that diverged more saves less; the source (most shared) is the copy that stays
    assert pool_pshare_saved({"vm-1": (1000, {"a": [600, 1000]})}) == {"a": 1600 * MiB}
    # source gone from vCenter: the most-shared clone keeps the one copy
    assert pool_pshare_saved({"name:gone": (None, {"a": [800, 1000]})}) == {"a": 800 * MiB}
    # powered-off clones share nothing
    assert pool_pshare_saved({"vm-1": (0, {"a": [0, 0]})}) == {"a": 0.0}


OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def parsed(body: bytes, content_type: str) -> dict[str, float]:
    if content_type.startswith("application/openmetrics-text"):
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

        families = parse_om(body.decode())
    else:
        families = text_string_to_metric_families(body.decode())
    out = {}
    for fam in families:
        for s in fam.samples:
            if "inventory_age" in s.name or s.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_cached_exposition_equals_the_registry_and_follows_each_refresh(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=3)
    assert cli("apply", "-f", str(spec)) == 0
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om

    async def go() -> list[tuple[dict[str, float], dict[str, float]]]:
        pairs = []
        async with exporter_for(spec) as exp:
            t = exp.telemetry
            for step in range(2):
                await exp.refresh()
                t.observe_task("InstantClone_Task", 0.5 + step)  # event metrics are never cached
                for accept, full in (("", generate_latest), (OPENMETRICS, generate_om)):
                    body, ctype = t.exposition(accept)
                    body_again, _ = t.exposition(accept)  # from the cache this time
                    series = sorted(line.split(b" ")[0] for line in body_again.splitlines() if line[:1] != b"#")
                    assert series == sorted(line.split(b" ")[0] for line in full(t.registry).splitlines()
                                            if line[:1] != b"#")  # each series once, none missing
                    pairs.append((parsed(body, ctype), parsed(full(t.registry), ctype)))
                    pairs.append((parsed(body_again, ctype), parsed(full(t.registry), ctype)))
                exp.ledger.claim(POOL, "bob")
        return pairs

    pairs = asyncio.run(go())
    for cached, full in pairs:
        assert cached == full
    assert pairs[0][0]['forkscale_pool_spares{pool="quickstart"}'] == 3
    assert pairs[-1][0]['forkscale_pool_spares{pool="quickstart"}'] == 2  # the claim shows after a refresh
    assert pairs[-1][0]['forkscale_vsphere_task_seconds_count{method="InstantClone_Task"}'] == 2


def test_per_host_sources_are_the_frozen_sources_and_fork_groups(twin, si, tmp_path):
    from tests.test_prepare import guestops_spec

    spec = guestops_spec(tmp_path, twin, count=8)
    assert cli("prepare", "-f", str(spec)) == 0
    assert cli("apply", "-f", str(spec)) == 0
    vms = vms_by_name(si)
    extra = {n: {o.key: o.value for o in vm.config.extraConfig} for n, vm in vms.items()}
    replicas = sorted(n for n, e in extra.items() if e.get("forkscale.source") and "forkscale.id" not in e)
    clones = sorted(n for n, e in extra.items() if "forkscale.id" in e)
    assert (len(replicas), len(clones)) == (4, 8)
    host_of = {n: vms[n].runtime.host.name for n in replicas + clones}
    shared_mb = steady_shared(si, replicas + clones)
    lost = next(r for r in replicas if host_of[r] == "esx-02")

    async def go() -> tuple[Any, Any]:
        async with exporter_for(spec) as exp:
            first = await exp.refresh()
            twin.admin("lose_frozen", vm=lost)
            return first, await exp.refresh()

    first, second = asyncio.run(go())
    # the replicas are what instant clones fork from; the golden src-linux is not (it is never frozen)
    assert sorted(first.sources, key=lambda s: s.host) == [
        SourceState(POOL, r, host_of[r], frozen=True) for r in sorted(replicas, key=host_of.get)]
    assert {s.source: s.frozen for s in second.sources}[lost] is False
    roles = {c.vm: c.role for c in first.chains}
    assert {n for n, r in roles.items() if r == "source"} == {*replicas, "src-linux"}
    assert sorted(n for n, r in roles.items() if r == "clone") == clones
    # four fork groups, one per host: replica + its clones
    expected = 0
    for host in ("esx-01", "esx-02", "esx-03", "esx-04"):
        group = [shared_mb[n] for n in replicas + clones if host_of[n] == host]
        assert len(group) == 3
        expected += sum(group) - max(group)
    assert first.pool_pshare_saved_bytes == {POOL: expected * MiB}
    assert expected > 0
