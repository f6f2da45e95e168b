"""Where a pool's clones should go and how each one gets there, as pure functions (`--dry-run` prints
exactly what runs).

**Rebalance.** Datastores: the pool's clones are spread over `placement.datastores` in proportion
to the free space each would have without them (`forkscale.fleet.balance.datastore_shares`, none
past `rebalance.max_used_pct`); a datastore no longer in `placement.datastores` is vacated.
Hosts: by clone count, weighted by host memory, over the hosts the pool may use. The clones that
leave a datastore (or host) above its share are picked cheapest first: unclaimed ones, then full
clones (moved whole, their data kept), then claimed ones; each goes to the datastore (host) with
the largest shortfall.

**How a clone moves** depends on its kind (the plan says which for each):

* unclaimed instant or linked: `recreate` -- made again with the same identity on the target (a
  linked clone from the replica there; the cheapest move, as Horizon does);
* full: `relocate` -- `RelocateVM_Task` moves its disks (and host) as they are;
* claimed linked: `recreate` once its user releases it (`waits for release`), or with `--force`
  `consolidate` -- relocated with its disks consolidated, keeping its user and data; it becomes a
  full clone in the ledger;
* claimed instant: `recreate` once released, or with `--force` re-created at once and handed back
  to its user;
* a linked clone that only changes host: `migrate` (vMotion; its disks stay).

**Evacuate.** Every clone of the pool on the host leaves it: instant clones are re-created on other
hosts (from those hosts' sources), claimed ones as the pool's `rollout:` says (wait for release,
or `force`: notified, then re-created `force_after_s` later and handed back); linked and full
clones `migrate`; then the host's source is removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forkscale.fleet.balance import CLONE_SPACE_GUESS, Datastore, datastore_shares, host_shares
from forkscale.ledger import CloneRecord, PlannedStep
from forkscale.spec import Pool
from forkscale.vsphere.model import Inventory

#: Clones a move may start on (others are being made, drained or removed: they stay where they are).
MOVABLE = ("ready", "claimed")
RECREATE, RELOCATE, CONSOLIDATE, MIGRATE, RETIRE_SOURCE = "recreate", "relocate", "consolidate", "migrate", "retire-source"


@dataclass(frozen=True)
class Placed:
    """A clone of the pool and where it is now (vCenter's view when its VM was found)."""

    rec: CloneRecord
    datastore: str
    host: str
    bytes: int = CLONE_SPACE_GUESS  # what it uses on its datastore (freed there when it leaves)

    @property
    def claimed(self) -> bool:
        return self.rec.state == "claimed"


@dataclass(frozen=True)
class Hosts:
    """The hosts each kind of clone may run on (instant clones: where the pool has a source)."""

    instant: Sequence[str]
    other: Sequence[str]

    def allowed(self, kind: str) -> Sequence[str]:
        return self.instant if kind == "instant" else self.other


def plan_rebalance(pool: Pool, inv: Inventory, clones: Sequence[Placed], hosts: Hosts, *, force: bool = False,
                   replicas: Collection[str] = (), replica_bytes: int = 0) -> list[PlannedStep]:
    """The moves that bring the pool to its datastore and host shares (see the module docstring).

    `replicas`: datastores with a usable replica of the pool's image; `replica_bytes`: what one
    more replica takes (for the datastores linked clones would go to without one)."""
    dss = list(pool.placement.datastores) or sorted({c.datastore for c in clones})
    targets = _ds_targets(pool, inv, clones, dss, replicas, replica_bytes)
    to_ds = _leave(clones, Counter(c.datastore for c in clones), targets, dss)
    host_have = Counter(c.host for c in clones)
    memory = {h: inv.host_memory.get(inv.hosts.get(h, ""), 0) for h in {*hosts.instant, *hosts.other}}
    host_want = host_shares(memory, len(clones))
    to_host: dict[int, str] = {}
    for c in sorted((c for c in clones if c.rec.id in to_ds), key=_order):
        to_host[c.rec.id] = _pick_host(c, hosts, host_have, host_want)
    for c in _host_surplus(clones, to_ds, hosts, host_have, host_want):
        to_host[c.rec.id] = _pick_host(c, hosts, host_have, host_want, leave=True)
    steps = []
    for c in sorted(clones, key=lambda c: c.rec.name):
        ds, host = to_ds.get(c.rec.id, c.datastore), to_host.get(c.rec.id, c.host)
        if ds != c.datastore or host != c.host:
            steps.append(_step(c, ds, host, force=force, why="rebalance"))
    return steps


def _ds_targets(pool: Pool, inv: Inventory, clones: Sequence[Placed], dss: Sequence[str], replicas: Collection[str],
                replica_bytes: int) -> Counter[str]:
    linked = any(c.rec.kind == "linked" for c in clones)
    used = Counter[str]()
    for c in clones:
        used[c.datastore] += c.bytes
    movable = [c.bytes for c in clones if c.rec.state in MOVABLE] or [CLONE_SPACE_GUESS]
    view = [Datastore(d, inv.datastore_capacity.get(d, 0), inv.datastores[d][1] if d in inv.datastores else 0,
                      pool_bytes=used[d], needs_replica=replica_bytes if linked and d not in replicas else 0)
            for d in dss]
    return datastore_shares(view, len(clones), clone_bytes=sum(movable) // len(movable),
                            max_used_pct=pool.rebalance.max_used_pct).counts


def _order(c: Placed) -> tuple[int, str]:
    """Cheapest to move first: unclaimed, then full clones (moved with their data), then claimed ones."""
    if not c.claimed:
        return (0, c.rec.name)
    return (1 if c.rec.kind == "full" else 2, c.rec.name)


def _leave(clones: Sequence[Placed], have: Counter[str], targets: Counter[str], dss: Sequence[str]) -> dict[int, str]:
    """clone id -> the datastore it goes to, for the clones that leave a datastore above its share."""
    out: dict[int, str] = {}
    short = Counter({d: targets[d] - have[d] for d in dss})
    for ds in sorted(have):
        extra = have[ds] - (targets[ds] if ds in dss else 0)
        movers = sorted((c for c in clones if c.datastore == ds and c.rec.state in MOVABLE), key=_order)[:max(extra, 0)]
        for c in movers:
            dest = max(dss, key=lambda d: (short[d], d)) if dss else ds
            if dest == ds:
                continue
            short[dest] -= 1
            out[c.rec.id] = dest
    return out


def _pick_host(c: Placed, hosts: Hosts, have: Counter[str], want: Mapping[str, int], *, leave: bool = False) -> str:
    """The clone's host if it may stay there (and is not over its share), else the one furthest below its share."""
    allowed = list(hosts.allowed(c.rec.kind))
    if not leave and c.host in allowed and have[c.host] <= want.get(c.host, 0):
        return c.host
    if not allowed:
        return c.host
    dest = max(allowed, key=lambda h: (want.get(h, 0) - have[h] + (1 if h == c.host else 0), h))
    have[c.host] -= 1
    have[dest] += 1
    return dest


def _host_surplus(clones: Sequence[Placed], moving: Mapping[int, str], hosts: Hosts, have: Counter[str],
                  want: Mapping[str, int]) -> list[Placed]:
    """Clones (not already moving) that leave a host above its share, or one they may not run on."""
    out = []
    for host in sorted(have):
        on = sorted((c for c in clones if c.host == host and c.rec.id not in moving and c.rec.state in MOVABLE),
                    key=lambda c: (c.rec.kind == "instant", _order(c)))  # a vMotion disturbs no one: first
        extra = have[host] - want.get(host, 0)
        for c in on:
            if c.host not in hosts.allowed(c.rec.kind) or extra > 0:
                out.append(c)
                extra -= 1
    return out


def _step(c: Placed, ds: str, host: str, *, force: bool, why: str, policy: str | None = None) -> PlannedStep:
    """One clone's move, its kind decided by the clone's kind and claim (see the module docstring)."""
    rec = c.rec
    detail: dict[str, Any] = {"clone": rec.id, "kind": rec.kind, "from_datastore": c.datastore, "to_datastore": ds,
                              "from_host": c.host, "to_host": host, "bytes": c.bytes, "why": why}
    if rec.kind == "full":
        action = RELOCATE
    elif ds == c.datastore and rec.kind == "linked":
        action = MIGRATE
    elif c.claimed and rec.kind == "linked" and force:
        action = CONSOLIDATE
        detail.update(claimed_by=rec.claimed_by, when="moved with its data, becomes a full clone")
    else:
        action = RECREATE
    if action == RECREATE and c.claimed:
        detail["claimed_by"] = rec.claimed_by
        if force:
            detail["when"] = "re-created now and handed back to its user"
        elif policy is not None:
            detail["when"] = policy
        else:
            detail["when"] = "waits for release"
    return PlannedStep(batch=1, action=action, target=rec.name, detail=detail)


def plan_evacuate(pool: Pool, clones: Sequence[Placed], host: str, hosts: Hosts, *,
                  source: str | None = None) -> list[PlannedStep]:
    """Every clone of the pool on `host` leaves it (see the module docstring), then its source goes."""
    others = Hosts([h for h in hosts.instant if h != host], [h for h in hosts.other if h != host])
    have = Counter(c.host for c in clones if c.host != host)
    memory = dict.fromkeys({*others.instant, *others.other}, 1)
    want = host_shares(memory, len(clones))
    r = pool.rollout
    policy = "waits for release" if r.claimed == "on-release" else f"forced {r.force_after_s:g}s after notify"
    steps = []
    for c in sorted((c for c in clones if c.host == host), key=_order):
        allowed = list(others.allowed(c.rec.kind))
        dest = max(allowed, key=lambda h: (want.get(h, 0) - have[h], h)) if allowed else ""
        have[dest] += 1
        step = _step(c, c.datastore, dest, force=False, why=f"evacuate {host}", policy=policy)
        if not dest:
            step = PlannedStep(step.batch, step.action, step.target,
                               {**step.detail, "error": f"no other host may run a {c.rec.kind} clone of the pool"})
        steps.append(step)
    if source is not None:
        steps.append(PlannedStep(batch=2, action=RETIRE_SOURCE, target=source, detail={"host": host}))
    return steps
