"""Planning, as pure functions: how many clones to make where, and which to remove first.

No I/O: a plan is computed from the pool spec, the ledger's live rows and an inventory snapshot,
so it can be tested as a table and printed by `--dry-run` exactly as it will run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from forkscale.fleet.balance import CLONE_SPACE_GUESS, Datastore, datastore_shares
from forkscale.fleet.sources import Source
from forkscale.ledger import CloneRecord
from forkscale.spec import Pool
from forkscale.vsphere.model import Inventory

LIVE = ("planned", "cloning", "customizing", "ready", "claimed", "draining")


@dataclass
class Plan:
    pool: str
    desired: int
    create: list[tuple[str, str]] = field(default_factory=list)  # (host name, datastore name)
    destroy: list[str] = field(default_factory=list)  # clone names
    rungs: list[str] = field(default_factory=list)
    skipped_rungs: dict[str, str] = field(default_factory=dict)  # rung -> reason (pre-flight)

    def describe(self) -> list[str]:
        lines = [f"pool {self.pool}: desired {self.desired}, create {len(self.create)}, destroy {len(self.destroy)}"]
        by_host = Counter(h for h, _ in self.create)
        for host, n in sorted(by_host.items()):
            lines.append(f"  create {n} on {host} (rung {self.rungs[0] if self.rungs else '-'})")
        for rung, why in self.skipped_rungs.items():
            lines.append(f"  rung {rung} skipped: {why}")
        for name in self.destroy:
            lines.append(f"  destroy {name}")
        return lines


@dataclass
class Spread:
    """Least-loaded host for each next clone, counting the clones already on each host."""

    load: Counter[str]

    @classmethod
    def over(cls, hosts: Sequence[str], live: Sequence[CloneRecord]) -> Spread:
        load = Counter({h: 0 for h in hosts})
        for rec in live:
            if rec.host in load:
                load[rec.host] += 1
        return cls(load)

    def take(self) -> str:
        host = min(self.load, key=lambda h: (self.load[h], h))
        self.load[host] += 1
        return host

    def others(self, host: str) -> bool:
        """Whether a host other than `host` is left to try."""
        return any(h != host for h in self.load)

    def drop(self, host: str) -> bool:
        """Leave `host` out (it is down or full), never the last one; whether another host is left."""
        if host in self.load and len(self.load) > 1:
            del self.load[host]
        return self.others(host)


def make_plan(pool: Pool, inv: Inventory, sources: Sequence[Source], live: Sequence[CloneRecord],
              desired: int, *, rungs: Sequence[str] | None = None) -> Plan:
    """Create on the least-loaded hosts and the datastores with most free space; or pick victims.

    Instant clones go to the hosts that have a source; when the first rung that will be tried is
    linked or full, clones spread over every host the placement allows (`fallback_hosts`).
    """
    plan = Plan(pool=pool.name, desired=desired, rungs=list(rungs if rungs is not None else pool.fallback))
    have = len(live)
    if have < desired:
        first = next((r for r in plan.rungs if not r.startswith("!")), "instant")
        hosts = placement_hosts(pool, inv, sources) if first == "instant" else fallback_hosts(pool, inv, sources[0])
        spread = Spread.over(hosts, live)
        dss = placement_datastores(pool, inv, sources)
        on = Counter(r.datastore for r in live)
        share = datastore_shares(datastore_view(inv, dss, on), desired,
                                 max_used_pct=pool.rebalance.max_used_pct).counts
        for _ in range(desired - have):
            host = spread.take()
            ds = max(dss, key=lambda d: (share[d] - on[d], inv.datastores[d][1], d))
            on[ds] += 1
            plan.create.append((host, ds))
    elif have > desired:
        plan.destroy = [r.name for r in victims(live, have - desired, drain=pool.drain is not None)]
    return plan


def datastore_view(inv: Inventory, names: Sequence[str], on: Counter[str],
                   clone_bytes: int = CLONE_SPACE_GUESS) -> list[Datastore]:
    """The datastores `names` as `datastore_shares` sees them, `on[name]` of the pool's clones on each."""
    return [Datastore(d, inv.datastore_capacity.get(d, 0), inv.datastores[d][1], on[d] * clone_bytes) for d in names]


def fallback_hosts(pool: Pool, inv: Inventory, golden: Source) -> list[str]:
    """Hosts a linked or full clone may land on: placement.hosts, else every host of the golden VM's
    cluster; those that can take a VM only (connected, not in or entering maintenance; all of them
    if none can). Unlike an instant clone, such a clone need not run where its source runs."""
    if pool.placement.hosts:
        names = list(pool.placement.hosts)
    else:
        cluster = inv.host_parent.get(golden.host)
        names = [n for n, moref in inv.hosts.items() if cluster is None or inv.host_parent.get(moref) == cluster]
    up = [h for h in names if inv.placeable(h)]
    return sorted(up or names)


def placement_hosts(pool: Pool, inv: Inventory, sources: Sequence[Source]) -> list[str]:
    """Hosts a clone may land on: those with a source (within placement.hosts), connected ones first."""
    names = [inv.host_names.get(s.host, "") for s in sources]
    if pool.placement.hosts:
        allowed = set(pool.placement.hosts)
        picked = [n for n in names if n in allowed] or list(pool.placement.hosts)
    else:
        picked = names
    picked = [h for h in picked if inv.placeable(h)] or picked
    return sorted(set(picked))


def placement_datastores(pool: Pool, inv: Inventory, sources: Sequence[Source]) -> list[str]:
    """placement.datastores, else the first source's datastore."""
    if pool.placement.datastores:
        return list(pool.placement.datastores)
    src = inv.vms[sources[0].moref]
    names = {moref: name for name, (moref, _) in inv.datastores.items()}
    return [names[d] for d in src.datastores[:1] if d in names] or list(inv.datastores)[:1]


def victims(live: Sequence[Any], n: int, *, drain: bool = False) -> list[Any]:
    """Idle ones first (unfinished, then ready), then oldest source generation, then newest-created.

    Claimed clones are never picked, except in pools with a drain hook (workers): there a
    claimed clone is busy, comes last, and is drained before it is destroyed.
    """
    order = {"planned": 0, "cloning": 1, "customizing": 2, "ready": 3, "draining": 4, "claimed": 5}
    candidates = [r for r in live if drain or r.state != "claimed"]
    candidates.sort(key=lambda r: (order.get(r.state, 9), r.source_generation, -r.created_at))
    return candidates[:n]
