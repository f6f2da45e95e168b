"""What a move plan is computed from: the pool's clones where vCenter has them, the hosts each kind
may use, the datastores with a replica, and the sizes that matter (one batched read for them)."""

from __future__ import annotations

from dataclasses import dataclass

from forkscale.fleet.balance import CLONE_SPACE_GUESS
from forkscale.fleet.engine import Engine
from forkscale.fleet.plan import LIVE, fallback_hosts, placement_hosts
from forkscale.fleet.reconcile import VmIndex
from forkscale.fleet.replicas import image_of
from forkscale.fleet.sources import Source
from forkscale.ledger import USABLE_REPLICA_STATES
from forkscale.spec import Pool
from forkscale.vsphere.model import Inventory
from forkscale.workloads.moves.plan import Hosts, Placed

COMMITTED = "summary.storage.committed"


@dataclass
class Gathered:
    clones: list[Placed]
    hosts: Hosts
    replicas: set[str]  # datastores with a usable replica of the pool's current image
    replica_bytes: int  # what a new replica would take
    golden: Source
    source_hosts: set[str]  # hosts whose source (or golden VM) instant clones fork from now


async def gather(engine: Engine, pool: Pool, inv: Inventory) -> Gathered:
    index = [p.name for p in engine.spec.pools].index(pool.name)
    golden = engine.check_pool(pool, inv, index)
    live = engine.ledger.clones(pool.name, states=list(LIVE))
    found = VmIndex(inv)
    vms = {r.id: found.find(r) for r in live}
    sizes_of = [golden.moref] + [vm.moref for r in live if r.kind == "full" and (vm := vms[r.id]) is not None]
    sizes = {m: int(p.get(COMMITTED) or 0) for m, p in (await engine.driver.vm_props(sizes_of, [COMMITTED])).items()}
    clones = []
    for rec in live:
        vm = vms[rec.id]
        ds = (inv.datastore_name(vm.datastores[0]) if vm is not None and vm.datastores else None) or rec.datastore
        host = (inv.host_names.get(vm.host or "") if vm is not None else None) or rec.host
        size = sizes.get(vm.moref, CLONE_SPACE_GUESS) if vm is not None and rec.kind == "full" else CLONE_SPACE_GUESS
        clones.append(Placed(rec, ds, host, size))
    mgr = engine.sources_of(pool)
    sources = mgr.current(inv, inv.vms[golden.moref]) if mgr.per_host(inv) else [golden]
    hosts = Hosts(instant=placement_hosts(pool, inv, sources or [golden]), other=fallback_hosts(pool, inv, golden))
    image = image_of(golden)
    replicas = {r.datastore for r in engine.ledger.replicas(pool.name, USABLE_REPLICA_STATES) if r.image == image}
    return Gathered(clones, hosts, replicas, sizes.get(golden.moref, CLONE_SPACE_GUESS), golden,
                    {inv.host_names.get(s.host, "") for s in sources or [golden]})
