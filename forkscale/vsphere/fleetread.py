"""The exporter's raw read: VMs and hosts in one paged view read, host memory in one QueryPerf.

Never one call per VM: one `CreateContainerView` over the root folder for VMs *and* hosts, one
`RetrievePropertiesEx` (plus one `ContinueRetrievePropertiesEx` per further page) and one
`DestroyView`; one `QueryPerf` for all connected hosts; once per exporter, the counter catalog
(ids differ between vCenter and ESXi, so they are resolved by name).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from pyVmomi import vim, vmodl

from forkscale.vsphere.keyed import keyed, request_paths, resolve
from forkscale.vsphere.model import TAG_POOL, TAG_SOURCE, FleetRead, HostRow, VmRow
from forkscale.vsphere.reads import props, retrieve_view
from forkscale.vsphere.transport import Soap

PC = vmodl.query.PropertyCollector
PM = vim.PerformanceManager
KiB = 1024
REALTIME_INTERVAL = 20
"""Seconds between realtime performance samples (the hosts' refresh rate)."""
TAG_PATH = keyed(TAG_POOL)
SOURCE_TAG_PATH = keyed(TAG_SOURCE)
VM_PATHS = ("name", "runtime.host", "runtime.powerState", "runtime.instantCloneFrozen",
            "summary.quickStats.sharedMemory", "summary.quickStats.privateMemory", "layoutEx", TAG_PATH,
            SOURCE_TAG_PATH)
HOST_PATHS = ("name", "runtime.connectionState")
HOST_COUNTERS = ("mem.shared.average", "mem.sharedcommon.average")


def _chains(layout: Any) -> tuple[dict[int, int], int]:
    """(disk key -> chain length, unique bytes of all delta links) from a FileLayoutEx."""
    if layout is None:
        return {}, 0
    unique = {int(f.key): int(f.uniqueSize or 0) for f in layout.file or []}
    chains: dict[int, int] = {}
    delta = 0
    for disk in layout.disk or []:
        links = list(disk.chain or [])
        chains[int(disk.key)] = len(links)
        for link in links[1:]:  # the first link is the base disk, not a delta
            delta += sum(unique.get(int(k), 0) for k in link.fileKey or [])
    return chains, delta


def _vm_row(oc: Any, p: dict[str, Any]) -> VmRow:
    tag, source_tag = p.get(TAG_PATH), p.get(SOURCE_TAG_PATH)
    chains, delta = _chains(p.get("layoutEx"))
    host = p.get("runtime.host")
    return VmRow(
        moref=str(oc.obj._moId), name=str(p.get("name", "")), host=str(host._moId) if host is not None else None,
        power=str(p.get("runtime.powerState", "poweredOff")), frozen=bool(p.get("runtime.instantCloneFrozen")),
        shared_mb=int(p.get("summary.quickStats.sharedMemory") or 0),
        private_mb=int(p.get("summary.quickStats.privateMemory") or 0),
        pool_tag=str(tag.value) if tag is not None and tag.value is not None else None,
        source_tag=str(source_tag.value) if source_tag is not None and source_tag.value else None,
        chains=chains, delta_bytes=delta)


def _rows(objects: list[tuple[Any, dict[str, Any]]], taken_at: float) -> FleetRead:
    read = FleetRead(taken_at=taken_at)
    for oc, p in objects:
        if isinstance(oc.obj, vim.VirtualMachine):
            read.vms.append(_vm_row(oc, p))
        elif isinstance(oc.obj, vim.HostSystem):
            read.hosts.append(HostRow(moref=str(oc.obj._moId), name=str(p.get("name", oc.obj._moId)),
                                      connected=p.get("runtime.connectionState") == "connected"))
    return read


async def perf_counter_ids(soap: Soap, names: Iterable[str]) -> dict[str, int]:
    """Counter ids by `group.name.rollup`, read from `perfManager.perfCounter` (one request)."""
    c = soap.content
    if c.perfManager is None:
        return {}
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=c.perfManager)],
                         propSet=[PC.PropertySpec(type=vim.PerformanceManager, pathSet=["perfCounter"])])
    res = await soap.invoke(c.propertyCollector, "RetrievePropertiesEx", [spec], PC.RetrieveOptions())
    counters = props(res.objects[0]).get("perfCounter", []) if res and res.objects else []
    wanted = set(names)
    out: dict[str, int] = {}
    for info in counters or []:
        full = f"{info.groupInfo.key}.{info.nameInfo.key}.{info.rollupType}"
        if full in wanted:
            out[full] = int(info.key)
    return out


async def host_memory(soap: Soap, hosts: list[HostRow], ids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """(mem.shared, mem.sharedcommon) bytes per host moref: ONE QueryPerf for every host."""
    shared_id, common_id = ids.get(HOST_COUNTERS[0]), ids.get(HOST_COUNTERS[1])
    targets = [h for h in hosts if h.connected]
    if shared_id is None or common_id is None or not targets:
        return {}
    metric_ids = [PM.MetricId(counterId=shared_id, instance=""), PM.MetricId(counterId=common_id, instance="")]
    specs = [PM.QuerySpec(entity=vim.HostSystem(h.moref), metricId=metric_ids, intervalId=REALTIME_INTERVAL,
                          maxSample=1) for h in targets]
    result = await soap.invoke(soap.content.perfManager, "QueryPerf", specs, observe=False)  # not inventory news
    out: dict[str, tuple[float, float]] = {}
    for em in result or []:
        values: dict[int, float] = {}
        for series in getattr(em, "value", None) or []:
            samples = list(getattr(series, "value", None) or [])
            if samples and samples[-1] >= 0:  # -1: no data for that sample
                values[int(series.id.counterId)] = float(samples[-1]) * KiB
        if shared_id in values and common_id in values:
            out[str(em.entity._moId)] = (values[shared_id], values[common_id])
    return out


async def read_fleet(soap: Soap, *, page_size: int = 1000,
                     counter_ids: dict[str, int] | None = None) -> FleetRead:
    """The raw inventory behind one refresh.

    `counter_ids` (from `perf_counter_ids`) saves the catalog read; `{}` skips `QueryPerf` too.
    """
    taken_at = time.time()
    raw = await retrieve_view(soap, {vim.VirtualMachine: request_paths(soap, VM_PATHS), vim.HostSystem: HOST_PATHS},
                              page_size)
    objects = await resolve(soap, raw, list(VM_PATHS))  # a server refusing keyed paths still yields the tags
    read = await asyncio.to_thread(_rows, objects, taken_at)  # thousands of layoutEx walks: off the loop
    ids = counter_ids if counter_ids is not None else await perf_counter_ids(soap, HOST_COUNTERS)
    read.host_memory = await host_memory(soap, read.hosts, ids)
    return read
