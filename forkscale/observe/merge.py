"""Several vCenters, one `/metrics`: each vCenter's exporter publishes its fleet sample here, and
the merged sample is what `Telemetry.set_fleet` shows.

Pools, clones and per-clone series never collide (pool and clone names are unique across the
spec and the ledger), but two vCenters may both have a host `esx-01` or a golden VM `src-linux`:
with more than one vCenter, host labels and the `vm` label of chain and delta series read
`<vcenter>/<name>`. `forkscale_up` is 1 only while every vCenter's inventory reads succeed
(`forkscale_vcenter_up{vcenter}`, set by the controller, says which one does not answer). A vCenter whose reads fail keeps its last sample in the merge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import TYPE_CHECKING

from forkscale.observe.fleet import ChainDepth, DeltaDisk, FleetSample, HostMemory
from forkscale.observe.telemetry import Telemetry

if TYPE_CHECKING:
    from forkscale.observe.exporter import Exporter


class FleetMerger:
    def __init__(self, telemetry: Telemetry, vcenters: list[str]) -> None:
        self.telemetry = telemetry
        self.vcenters = list(vcenters)
        self._samples: dict[str, FleetSample] = {}
        self._up: dict[str, bool] = {}
        self._lock = threading.Lock()

    def publish(self, vcenter: str, sample: FleetSample) -> None:
        """A new sample from one vCenter's exporter (any thread)."""
        with self._lock:
            self._samples[vcenter] = sample
            merged = merge(self._samples, qualify=len(self.vcenters) > 1)
            self.telemetry.set_fleet(merged)
            self.telemetry.prerender()

    def set_up(self, vcenter: str, up: bool) -> None:
        with self._lock:
            self._up[vcenter] = up
            self.telemetry.set_up(all(self._up.get(name, False) for name in self.vcenters))


def merge(samples: dict[str, FleetSample], *, qualify: bool) -> FleetSample:
    out = FleetSample()
    taken = [s.taken_at for s in samples.values() if s.taken_at is not None]
    out.taken_at = min(taken) if taken else None  # the oldest read: the age never looks better than it is
    for vcenter, s in sorted(samples.items()):
        def q(name: str, vc: str = vcenter) -> str:
            return f"{vc}/{name}" if qualify else name

        out.vms.extend(s.vms)
        out.hosts.extend(HostMemory(q(h.host), h.shared_bytes, h.sharedcommon_bytes) for h in s.hosts)
        out.chains.extend(ChainDepth(q(c.vm), c.disk, c.role, c.depth) for c in s.chains)
        out.deltas.extend(DeltaDisk(q(d.vm), d.role, d.bytes) for d in s.deltas)
        out.sources.extend(s.sources)
        out.pools.extend(s.pools)
        out.clones.extend(s.clones)
        out.pool_pshare_saved_bytes.update(s.pool_pshare_saved_bytes)
        out.images.extend(s.images)
    return dataclasses.replace(out)


class Exporters:
    """One exporter per vCenter, seen by the controller as one (`set_desired` goes to the pool's)."""

    def __init__(self, exporters: dict[str, Exporter], pools: dict[str, str]) -> None:
        self.exporters = exporters  # vCenter name -> its exporter
        self.pools = pools  # pool -> vCenter name

    def set_desired(self, pool: str, desired: int) -> None:
        exporter = self.exporters.get(self.pools.get(pool, ""))
        if exporter is not None:
            exporter.set_desired(pool, desired)

    async def run(self) -> None:
        await asyncio.gather(*(e.run() for e in self.exporters.values()))
