"""PerformanceManager for the twin: vCenter's counter catalog, sampled from the world's models.

`catalog` lists the counters (vCenter's ids, names, units and levels) and the entities each is
sampled for; `model` computes their values from the P-Share memory model, the CPU model, the
disk model, power-on times and the event journal; `query` serves them (realtime 20 s samples
for VMs and hosts, the historical intervals of a default vCenter, rolled up, for every entity).
History is rebuilt from the current inventory: a VM contributes from its birth (fork or
creation) on, a destroyed VM leaves no trace, a disk file counts from its creation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyVmomi import vim

from ..mo import Manager
from . import query
from .catalog import COUNTERS

if TYPE_CHECKING:
    from ..world import World

__all__ = ["manager", "query"]


def manager(world: World) -> Manager:
    """The PerfMgr object, with its catalog properties."""
    pm = vim.PerformanceManager
    # pyVmomi's stubs leave out an enum type's `values` (set at run time): [attr-defined] below
    rollups: list[str] = pm.CounterInfo.RollupType.values  # type: ignore[attr-defined]
    stats: list[str] = pm.CounterInfo.StatsType.values  # type: ignore[attr-defined]
    return world.add(Manager(
        world, "PerfMgr", pm,
        perfCounter=[c.info() for c in COUNTERS],
        historicalInterval=[vim.HistoricalInterval(key=k, samplingPeriod=p, name=n, length=length, level=1,
                                                   enabled=True) for k, p, n, length in query.HISTORICAL],
        description=vim.PerformanceDescription(
            counterType=[vim.ElementDescription(key=r, label=r.capitalize(), summary=r.capitalize()) for r in rollups],
            statsType=[vim.ElementDescription(key=s, label=s.capitalize(), summary=s.capitalize()) for s in stats])))
