"""The vSphere -> Prometheus exporter: one batched inventory read per interval fills the fleet gauges.

Each `Exporter.refresh()` costs a fixed number of SOAP requests, whatever the fleet size (the read
itself is `FleetReader.read_fleet`, implemented in `forkscale.vsphere.fleetread`):

* one `CreateContainerView` over the root folder for VMs *and* hosts, one `RetrievePropertiesEx`
  (plus one `ContinueRetrievePropertiesEx` per further page of `page_size` objects) and one
  `DestroyView`. Per VM: `name`, `runtime.host`, `runtime.powerState`,
  `runtime.instantCloneFrozen`, `summary.quickStats.sharedMemory` / `privateMemory`, `layoutEx`
  and `config.extraConfig["forkscale.pool"]` / `["forkscale.source"]`; per host: `name`,
  `runtime.connectionState`;
* one `QueryPerf` for all connected hosts (latest realtime sample of `mem.shared.average` and
  `mem.sharedcommon.average`, KB -> bytes);
* once per exporter: the performance counter catalog (`perfManager.perfCounter`), to resolve
  counter ids by name - they differ between vCenter and ESXi.

Never one call per VM. The result becomes a `FleetSample` handed to `Telemetry.set_fleet` (and
pre-formatted with `Telemetry.prerender`), so a scrape (`telemetry.metrics_handler`) only sends
what the last refresh left and stays fast while the next refresh runs in the background
(`Exporter.run`). The CPU-heavy parts of a refresh - parsing the big SOAP pages (the transport
does that on a worker thread), walking every layoutEx, building and formatting the series - run
off the event loop. Measured with `bench/scrape.py` at 5,000 clones: see its docstring.

Roles. A VM is a `source` when it is a pool's golden VM (the spec's `source:`), a per-host
source replica (a row of the ledger's `sources`, or tagged `forkscale.source`); otherwise a
`clone` when it carries the `forkscale.pool` tag in extraConfig (or the ledger knows its moref).
Only VMs with a role get chain and delta series; only clones get the per-VM memory series
(labelled with their pool).

Frozen sources (`forkscale_source_frozen`): the VMs a pool's instant clones fork from - its
`ready` per-host replicas when it has any (`forkscale prepare`; tagged replicas when the ledger
lost its rows), else the golden VM. Pools with `freeze: running` (live clones of a running
source) or without the `instant` rung get none: nothing there is meant to be frozen, and a 0
would page someone (`ForkscaleSourceNotFrozen`).

Chains (from `layoutEx`, joined file keys to `layoutEx.file[]`): `forkscale_delta_chain_depth`
is the number of links in `layoutEx.disk[].chain` (base disk included: a VM with one snapshot has
depth 2), with `disk` = the virtual disk's device key (e.g. `2000`). `forkscale_delta_disk_bytes`
sums `uniqueSize` over every delta link (all chain links but the base) of all the VM's disks:
bytes only this VM uses, so a parent link shared with clones counts for nobody.

P-Share saved per pool (an estimate; vSphere reports sharing per VM and per host, not per fork
group). The instant clones of one source and the source itself form one sharing domain (a
VMFork group: their shared pages are copies of the source's pages at the fork). Per group:
`saved = sum(sharedMemory of members) - max(sharedMemory of members)`: every shared page is backed
by at most one machine page per group, and the member sharing the most still needs all of its
shared pages backed. That is the group's part of the host's `mem.shared - mem.sharedcommon`.
Members are the source (when found) and the clones the ledger records as `instant` from that
source; linked and full clones share no pages with their source. When several pools clone one
source, the group's saving is split between them in proportion to their clones' shared memory.
Powered-off VMs report 0 and so count for nothing.

Pool counts come from the ledger: `ready` = ready + claimed, `spares` = ready (unclaimed);
`desired` is the last value given to `set_desired` (the controller's policy), else the spec's
`count` (0 for a policy-driven pool nobody has set yet).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable

from forkscale.ledger import HOLDING_STATES, CloneRecord, Ledger
from forkscale.observe.images import image_states
from forkscale.observe.merge import FleetMerger
from forkscale.observe.telemetry import (
    CLONE_KINDS,
    ChainDepth,
    CloneCount,
    DeltaDisk,
    FleetSample,
    HostMemory,
    PoolCounts,
    SourceState,
    Telemetry,
    VmMemory,
)
from forkscale.spec import Spec
from forkscale.vsphere.model import FleetRead, VmRow
from forkscale.vsphere.ports import FleetReader

__all__ = ["Exporter", "pool_pshare_saved"]

log = logging.getLogger("forkscale.exporter")
MiB = 1024**2
REPLICA_STATES = ("ready",)
"""Ledger states of per-host sources whose frozen state matters (retiring ones serve no new clone)."""


# ------------------------------------------------------------------------------------------------
# From rows, ledger and spec to a FleetSample.
# ------------------------------------------------------------------------------------------------


def pool_pshare_saved(groups: dict[str, tuple[int | None, dict[str, list[int]]]]) -> dict[str, float]:
    """Saved bytes per pool from fork groups (see the module docstring).

    `groups`: source key -> (the source's sharedMemory in MB or None when not found,
    {pool: [sharedMemory MB of each of its instant clones of that source]}).
    """
    saved: dict[str, float] = defaultdict(float)
    for source_mb, by_pool in groups.values():
        clone_total = sum(sum(v) for v in by_pool.values())
        members = [mb for v in by_pool.values() for mb in v] + ([source_mb] if source_mb is not None else [])
        if not members:
            continue
        group_saved = float(sum(members) - max(members)) * MiB
        for pool, values in by_pool.items():
            part = sum(values)
            saved[pool] += group_saved * part / clone_total if clone_total else 0.0
    return dict(saved)


class Exporter:
    """Refresh the fleet gauges of `telemetry` from vCenter (via `driver`), the ledger and the spec.

    `await refresh()` once, or run `run()` as a background task (every `interval_s`). Reusable by
    any surface: it knows nothing of the CLI or the HTTP server that serves `/metrics`.
    """

    def __init__(self, driver: FleetReader, spec: Spec, ledger: Ledger, telemetry: Telemetry,
                 interval_s: float = 20.0, *, page_size: int = 1000,
                 clock: Callable[[], float] = time.time, vcenter: str | None = None,
                 merger: FleetMerger | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.driver = driver
        self.spec = spec
        self.ledger = ledger
        self.telemetry = telemetry
        self.interval_s = float(interval_s)
        self.page_size = page_size
        self._clock = clock
        self._desired: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self.last_sample: FleetSample | None = None
        self.last_success: float | None = None
        """Wall-clock time of the last refresh that reached vCenter and applied its sample."""
        self.last_error: str | None = None
        self.refresh_seconds: float | None = None
        # Several vCenters: one exporter each, for the spec's pools on it (`vcenter`), their
        # samples merged into one fleet (`merger`).
        self.vcenter = vcenter
        self.merger = merger
        if vcenter is not None:
            self.spec = dataclasses.replace(spec, pools=tuple(p for p in spec.pools
                                                              if spec.vcenter_name(p) == vcenter))
        self._mine = {p.name for p in self.spec.pools} if vcenter is not None else None
        # vSphere task durations and faults go straight to the histograms as tasks end.
        hook = telemetry.observe_task
        if hook not in driver.task_hooks:
            driver.task_hooks.append(hook)

    # --- inputs from the controller ---------------------------------------------------------------

    def set_desired(self, pool: str, desired: int) -> None:
        """The controller's latest target for `pool` (shown as `forkscale_pool_desired`)."""
        if desired < 0:
            raise ValueError(f"desired for {pool!r} must be >= 0")
        self._desired[pool] = int(desired)

    def desired(self, pool: str) -> int:
        if pool in self._desired:
            return self._desired[pool]
        for p in self.spec.pools:
            if p.name == pool:
                return int(p.count or 0)
        return 0

    # --- refresh ---------------------------------------------------------------------------------

    async def refresh(self) -> FleetSample:
        """Read vCenter once (batched), build the fleet sample, apply it; returns the sample."""
        async with self._lock:
            started = time.monotonic()
            try:
                read = await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._set_up(False)
                raise
            # building and formatting 5,000 clones' series takes a few hundred ms of CPU: off the loop
            sample = await asyncio.to_thread(self._apply, read)
            self._set_up(True)
            self.last_sample = sample
            self.last_success = self._clock()
            self.last_error = None
            self.refresh_seconds = time.monotonic() - started
            return sample

    def _apply(self, read: FleetRead) -> FleetSample:
        sample = self.build(read)
        if self.merger is not None and self.vcenter is not None:
            self.merger.publish(self.vcenter, sample)
            return sample
        self.telemetry.set_fleet(sample)
        self.telemetry.prerender()  # the next scrape finds the fleet formatted already
        return sample

    def _set_up(self, up: bool) -> None:
        if self.merger is not None and self.vcenter is not None:
            self.merger.set_up(self.vcenter, up)
        else:
            self.telemetry.set_up(up)

    async def _read(self) -> FleetRead:
        return await self.driver.read_fleet(page_size=self.page_size)

    async def run(self, *, wait_first: bool = False) -> None:
        """Refresh every `interval_s` until cancelled; a failed refresh keeps the previous sample
        (`forkscale_inventory_age_seconds` grows, `forkscale_up` drops to 0) and is retried.
        `wait_first` sleeps one interval before the first refresh (when the caller just did one)."""
        if wait_first:
            await asyncio.sleep(self.interval_s)
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("inventory refresh failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def health(self) -> tuple[bool, str]:
        """(healthy, reason): healthy while the last good refresh is younger than 3 intervals."""
        if self.last_success is None:
            return False, self.last_error or "no inventory read yet"
        age = self._clock() - self.last_success
        if age > 3 * self.interval_s:
            return False, f"last good inventory read {age:.0f}s ago ({self.last_error or 'no error recorded'})"
        return True, f"inventory {age:.1f}s old"

    # --- the sample ---------------------------------------------------------------------------------

    def build(self, read: FleetRead) -> FleetSample:
        """Combine one `FleetRead` with the ledger and the spec (pure apart from ledger reads)."""
        records = self.ledger.clones(states=[s for s in HOLDING_STATES])
        if self._mine is not None:
            records = [r for r in records if r.pool in self._mine]
        golden, replicas, source_names = self._sources(read)
        sample = FleetSample(taken_at=read.taken_at)
        saved = pool_pshare_saved(self._vms(read, records, source_names, sample))
        for host in read.hosts:
            mem = read.host_memory.get(host.moref)
            if mem is not None:
                sample.hosts.append(HostMemory(host.name, mem[0], mem[1]))
        self._pools(read, records, golden, replicas, saved, sample)
        sample.images = image_states(self.ledger, [p.pool for p in sample.pools], records)
        return sample

    def _sources(self, read: FleetRead) -> tuple[dict[str, str], dict[str, list[str]], set[str]]:
        """(pool -> golden VM name, pool -> frozen-source replica names, every source VM name).

        Sources: the spec's golden VMs, the per-host replicas the ledger knows, and VMs tagged
        `forkscale.source` (replicas a controller made, even if its ledger was lost).
        """
        golden = {p.name: p.source.rsplit("/", 1)[-1] for p in self.spec.pools}
        source_rows = [r for r in self.ledger.sources() if self._mine is None or r.pool in self._mine]
        replicas: dict[str, list[str]] = defaultdict(list)
        for row in source_rows:
            if row.state in REPLICA_STATES and row.vm_name not in replicas[row.pool]:
                replicas[row.pool].append(row.vm_name)
        pools_with_rows = {row.pool for row in source_rows}
        for vm in read.vms:  # adopted: tagged replicas of pools whose ledger has no source rows at all
            if vm.source_tag and vm.pool_tag and vm.pool_tag not in pools_with_rows:
                replicas[vm.pool_tag].append(vm.name)
        names = set(golden.values()) | {row.vm_name for row in source_rows} | {vm.name for vm in read.vms if vm.source_tag}
        return golden, replicas, names

    @staticmethod
    def _vms(read: FleetRead, records: list[CloneRecord], source_names: set[str],
             sample: FleetSample) -> dict[str, tuple[int | None, dict[str, list[int]]]]:
        """Chain, delta and memory series of every source and clone; returns the fork groups:
        source moref (or name) -> (source shared MB, {pool: [clone shared MB]})."""
        by_name: dict[str, VmRow] = {}
        for vm in read.vms:
            by_name.setdefault(vm.name, vm)
        by_moref = {r.vm_moref: r for r in records if r.vm_moref}
        groups: dict[str, tuple[int | None, dict[str, list[int]]]] = {}
        for vm in read.vms:
            rec = by_moref.get(vm.moref)
            if vm.name in source_names:
                role = "source"
            elif vm.pool_tag is not None or rec is not None:
                role = "clone"
            else:
                continue
            for key, depth in sorted(vm.chains.items()):
                sample.chains.append(ChainDepth(vm.name, str(key), role, depth))
            sample.deltas.append(DeltaDisk(vm.name, role, float(vm.delta_bytes)))
            if role != "clone":
                continue
            pool = vm.pool_tag or (rec.pool if rec is not None else "")
            sample.vms.append(VmMemory(pool, vm.name, float(vm.shared_mb) * MiB, float(vm.private_mb) * MiB))
            if rec is not None and rec.kind == "instant" and rec.pool == pool:
                src = by_name.get(rec.source)
                group = src.moref if src is not None else f"name:{rec.source}"
                if group not in groups:
                    groups[group] = (src.shared_mb if src is not None else None, {})
                groups[group][1].setdefault(pool, []).append(vm.shared_mb)
        return groups

    def _pools(self, read: FleetRead, records: list[CloneRecord], golden: dict[str, str],
               replicas: dict[str, list[str]], saved: dict[str, float], sample: FleetSample) -> None:
        """Clone counts by kind and state, pool counts, P-Share saved and frozen-source series."""
        by_name: dict[str, VmRow] = {}
        for vm in read.vms:
            by_name.setdefault(vm.name, vm)
        host_names = {h.moref: h.name for h in read.hosts}
        pools = [p.name for p in self.spec.pools] + sorted(set(self._desired) - {p.name for p in self.spec.pools})
        tally: Counter[tuple[str, str, str]] = Counter()
        per_state: dict[str, Counter[str]] = defaultdict(Counter)
        for r in records:
            if r.kind in CLONE_KINDS:
                tally[(r.pool, r.kind, r.state)] += 1
            per_state[r.pool][r.state] += 1
        sample.clones = [CloneCount(p, k, s, n) for (p, k, s), n in sorted(tally.items())]
        specs = {p.name: p for p in self.spec.pools}
        for pool in pools:
            counts = per_state.get(pool, Counter())
            sample.pools.append(PoolCounts(pool, desired=self.desired(pool), ready=counts["ready"] + counts["claimed"],
                                           spares=counts["ready"]))
            sample.pool_pshare_saved_bytes[pool] = saved.get(pool, 0.0)
            spec_pool = specs.get(pool)
            if spec_pool is not None and (spec_pool.freeze == "running" or "instant" not in spec_pool.fallback):
                continue  # live clones of a running source, or no instant clones: nothing should be frozen
            # instant clones fork from the per-host replicas when the pool has any, else from the golden VM
            for name in replicas.get(pool) or ([golden[pool]] if pool in golden else []):
                src = by_name.get(name)
                if src is None or src.host is None:
                    continue
                sample.sources.append(SourceState(pool, name, host_names.get(src.host, src.host), src.frozen))
        for pool in sorted(set(saved) - set(pools)):
            sample.pool_pshare_saved_bytes[pool] = saved[pool]
