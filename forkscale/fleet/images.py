"""Which image a pool's new clones come from, and that image's golden VM and snapshot in vCenter.

New clones -- a scale-up, a refresh, a replacement -- come from the pool's *active* image, except
while an operation is rolling the pool onto another image (`phase == "roll"`, the image in its
`image_generation` parameter, operation running): then from that one, so a clone made meanwhile
(a refresh on logoff, a scale-up) is already on the new image and never needs replacing again.
A paused or cancelled push goes back to the active image.

The first time a pool is converged its image history starts: generation 1 is the spec's `source:`
at `snapshot:` (or the golden VM's current snapshot then), pinned by moref, so a snapshot taken
later on the golden changes nothing until it is pushed.
"""

from __future__ import annotations

from dataclasses import dataclass

from forkscale.core.errors import SpecError
from forkscale.ledger import ImageRecord, Ledger
from forkscale.spec import Pool
from forkscale.vsphere.model import Inventory, VmInfo
from forkscale.vsphere.ports import InventoryReader

#: operation phase during which new clones come from the operation's image
ROLL_PHASE = "roll"


@dataclass(frozen=True)
class ImageRef:
    """An image as the engine clones from it: its generation, golden VM and snapshot moref."""

    generation: int
    golden: str  # the golden VM's name
    snapshot: str | None  # snapshot moref (None: the golden has no snapshot; full clones of its disk)

    @classmethod
    def of(cls, rec: ImageRecord) -> ImageRef:
        return cls(rec.generation, rec.golden, rec.snapshot_moref)


def rolling_generation(ledger: Ledger, pool: str) -> int | None:
    """The image a running operation is moving the pool onto, once it has primed it."""
    op = ledger.operations.open(pool)
    if op is None or op.state != "running" or op.phase != ROLL_PHASE:
        return None
    gen = op.params.get("image_generation")
    return int(gen) if isinstance(gen, int) else None


def image_for_new(ledger: Ledger, pool: str) -> ImageRecord | None:
    """The image new clones of `pool` come from (None before its history starts)."""
    gen = rolling_generation(ledger, pool)
    if gen is not None:
        found = ledger.images.get(pool, gen)
        if found is not None:
            return found
    return ledger.images.active(pool)


async def first_image(ledger: Ledger, driver: InventoryReader, pool: Pool, inv: Inventory,
                      index: int) -> ImageRecord:
    """The pool's active image, recording generation 1 from the spec if its history has not started."""
    found = ledger.images.active(pool.name)
    if found is not None:
        return found
    golden = golden_vm(inv, pool.source, f"pools[{index}].source")
    moref = await snapshot_moref(driver, golden, pool.snapshot, f"pools[{index}].snapshot")
    name = pool.snapshot
    if name is None and moref is not None:  # the golden's current snapshot: recorded by its name too
        name = (await driver.snapshot_names(golden.moref)).get(moref)
    return ledger.images.ensure_first(pool.name, golden.name, name, moref)


def golden_vm(inv: Inventory, name: str, path: str) -> VmInfo:
    vm = inv.vm_by_name(name.rsplit("/", 1)[-1])
    if vm is None:
        raise SpecError(path, f"no VM named {name!r} in vCenter")
    return vm


async def snapshot_moref(driver: InventoryReader, golden: VmInfo, name: str | None, path: str) -> str | None:
    """The moref of `golden`'s snapshot `name` (exactly one must carry it); its current snapshot when
    `name` is None (None when it has none)."""
    if name is None:
        return golden.snapshot
    found = await driver.snapshots_named(golden.moref, name)
    if not found:
        raise SpecError(path, f"{golden.name} has no snapshot named {name!r}")
    if len(found) > 1:
        raise SpecError(path, f"{golden.name} has {len(found)} snapshots named {name!r}; rename one")
    return found[0]
