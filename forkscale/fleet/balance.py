"""How many of a pool's clones each datastore (and host) should hold, as pure functions.

Datastores: in proportion to the free space each would have without the pool's clones — so after
the moves the clones split as the free space left does — assigned one clone at a time to the
datastore with the largest free space per clone it would then hold (the D'Hondt rule, which
keeps every share within one clone of exact proportion), and never past `max_used_pct` of a
datastore's capacity (counting the replica a datastore without one needs first). Hosts: by clone
count weighted by memory, over the hosts that may take clones.

Converge places new clones by the same rule (`make_plan`), so rebalance has nothing to do on a
pool that was only ever grown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

GiB = 1024**3
#: What one clone is taken to use on its datastore when planning (a linked or instant clone's delta grows
#: with use; a full clone's real size is read from vCenter).
CLONE_SPACE_GUESS = 2 * GiB


@dataclass(frozen=True)
class Datastore:
    """One datastore as a plan sees it: bytes, and what of the pool is there now."""

    name: str
    capacity: int
    free: int  # now, as vCenter reports it
    pool_bytes: int = 0  # what the pool's movable clones there use now (freed when they leave)
    needs_replica: int = 0  # bytes a replica would take, when linked clones need one here and there is none


@dataclass
class Shares:
    """Clones per datastore, and the datastores that could not take their proportional share."""

    counts: Counter[str] = field(default_factory=Counter)
    overflow: int = 0  # clones no datastore had room for under max_used_pct (placed on the roomiest anyway)


def datastore_shares(dss: Sequence[Datastore], total: int, *, clone_bytes: Mapping[str, int] | int = CLONE_SPACE_GUESS,
                     max_used_pct: float = 80.0) -> Shares:
    """How many of `total` clones each datastore should hold (see the module's docstring).

    `clone_bytes`: what a clone would use there (one number, or per datastore).
    """
    out = Shares(Counter({d.name: 0 for d in dss}))
    if not dss or total <= 0:
        return out
    size = {d.name: clone_bytes if isinstance(clone_bytes, int) else clone_bytes.get(d.name, CLONE_SPACE_GUESS)
            for d in dss}
    base = {d.name: d.free + d.pool_bytes for d in dss}  # free space without the pool's clones
    room = {d.name: d.capacity * max_used_pct / 100.0 - (d.capacity - base[d.name]) for d in dss}
    replica = {d.name: d.needs_replica for d in dss}
    for _ in range(total):
        def fits(name: str) -> bool:
            need = (out.counts[name] + 1) * size[name] + replica[name]
            return need <= room[name]

        candidates = [d.name for d in dss if fits(d.name)]
        if not candidates:
            out.overflow += 1
            candidates = [d.name for d in dss]
        pick = max(candidates, key=lambda n: (max(base[n], 0) / (out.counts[n] + 1), n))
        out.counts[pick] += 1
    return out


def host_shares(memory: Mapping[str, int], total: int) -> Counter[str]:
    """How many of `total` clones each host should hold: in proportion to its memory (equal when unknown)."""
    out: Counter[str] = Counter({h: 0 for h in memory})
    if not memory or total <= 0:
        return out
    weight = {h: max(m, 1) if any(memory.values()) else 1 for h, m in memory.items()}
    for _ in range(total):
        pick = max(weight, key=lambda h: (weight[h] / (out[h] + 1), h))
        out[pick] += 1
    return out


def imbalance(have: Mapping[str, int], want: Mapping[str, int]) -> float:
    """How far a pool is from its shares: clones that would move, as a fraction of the pool."""
    total = sum(have.values())
    if total == 0:
        return 0.0
    moves = sum(max(0, n - want.get(k, 0)) for k, n in have.items())
    return moves / total
